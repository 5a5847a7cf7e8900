import { test } from 'tap'
import wsGuard from '../../index.js'
import { startApp } from '../helpers/app.js'
import { openClient, tryConnect, whenClosed, type Closed } from '../helpers/clients.js'
import { recordChannels } from '../helpers/logs.js'
import { waitFor } from '../helpers/wait.js'

/*
 * maxConnectionAge: each connection closes with 1001 `connection max age; retry-after=<ms>`
 * after the age, ±10% so that connections opened together do not leave together.
 */

const shape = /^connection max age; retry-after=(\d+)$/
const age = 2000
// Pings every second: the wheel ticks every 10 ms. The slack covers the handshake and a busy machine.
const heartbeat = { pingInterval: 1000, readDeadline: 60_000 }
const slack = 10 + 500

async function agedApp (t: Parameters<typeof startApp>[0]) {
  return await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat })
    app.wsRoute('/aged', { config: { wsGuard: { maxConnectionAge: age } } }, () => {})
    app.wsRoute('/forever', () => {})
  })
}

/** Opens `count` clients at once; resolves with when each started and how it closed. */
async function openTogether (t: Parameters<typeof startApp>[0], url: string, count: number): Promise<Array<{ started: number, closed: Promise<Closed> }>> {
  const started = Date.now()
  const clients = await Promise.all(Array.from({ length: count }, async () => await openClient(t, url)))
  return clients.map((client) => ({ started, closed: whenClosed(client) }))
}

test('a connection closes with 1001 connection max age and a retry hint, between 0.9 and 1.1 times the age', async (t) => {
  const record = recordChannels(t)
  const { app, url } = await agedApp(t)
  const forever = await openClient(t, url('/forever'))
  const [aged] = await openTogether(t, url('/aged'), 1)
  const { code, reason, at } = await aged!.closed
  const lived = at - aged!.started
  t.equal(code, 1001, 'going away')
  const hint = shape.exec(reason)
  t.ok(hint !== null, `the reason names the age and a retry hint (${reason})`)
  t.ok(Number(hint?.[1]) >= 0 && Number(hint?.[1]) < 1000, `a hint under a second (${String(hint?.[1])} ms)`)
  t.ok(lived >= age * 0.9, `not before 0.9 × ${age} ms (lived ${lived} ms)`)
  t.ok(lived <= age * 1.1 + slack, `nor long after 1.1 × ${age} ms (lived ${lived} ms)`)
  await waitFor(() => app.wsGuard.stats().open === 1, 'the close to be counted')
  t.equal(app.wsGuard.stats().closed.maxAge, 1, 'counted as maxAge')
  t.match(record.closed, [{ route: '/aged', reason: 'maxAge', code: 1001 }], 'and reported so')
  t.equal(forever.readyState, forever.OPEN, 'a route without maxConnectionAge keeps its connection')
})

test('jitter: connections opened together close at different times, with different hints', async (t) => {
  const { app, url } = await agedApp(t)
  const count = 20
  const clients = await openTogether(t, url('/aged'), count)
  const closes = await Promise.all(clients.map(({ closed }) => closed))
  const started = clients[0]!.started
  const lived = closes.map(({ at }) => at - started)
  const spread = Math.max(...lived) - Math.min(...lived)
  const hints = closes.map(({ reason }) => Number(shape.exec(reason)?.[1]))
  t.comment(`lived ${Math.min(...lived)} to ${Math.max(...lived)} ms; ${new Set(hints).size} distinct hints`)
  t.ok(closes.every(({ code, reason }) => code === 1001 && shape.test(reason)), 'every one a 1001 with the reason and a hint')
  t.ok(lived.every((ms) => ms >= age * 0.9 && ms <= age * 1.1 + slack), `every one between 0.9 and 1.1 × ${age} ms`)
  // 20 draws over 400 ms all within 100 ms of each other: about 20 × (1/4)^19.
  t.ok(spread >= 100, `their closes spread over ${spread} ms`)
  t.ok(new Set(lived.map((ms) => Math.floor(ms / 20))).size >= 5, 'at many different moments')
  t.ok(new Set(hints).size >= 10, `and with different hints (${new Set(hints).size} of ${count})`)
  await waitFor(() => app.wsGuard.stats().open === 0, 'the closes to be counted')
  t.equal(app.wsGuard.stats().closed.maxAge, count, 'each counted as maxAge')
})

test('maxConnectionAge on the plugin applies to every route; a route may set its own', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat, maxConnectionAge: 1000 })
    app.wsRoute('/plugin', () => {})
    app.wsRoute('/longer', { config: { wsGuard: { maxConnectionAge: 60_000 } } }, () => {})
  })
  const longer = await openClient(t, url('/longer'))
  const [plugin] = await openTogether(t, url('/plugin'), 1)
  const { code, reason, at } = await plugin!.closed
  t.equal(code, 1001, 'the plugin\'s age closes the route that does not set one')
  t.match(reason, shape, 'with the age\'s reason')
  t.ok(at - plugin!.started >= 900, 'after 0.9 s at the earliest')
  t.equal(longer.readyState, longer.OPEN, 'the route\'s own, longer age holds')
  await waitFor(() => app.wsGuard.stats().open === 1, 'the close to be counted')
  t.equal(app.wsGuard.stats().closed.maxAge, 1, 'counted as maxAge')
})

test('app.close() ends a connection that has a maxConnectionAge with the shutdown 1001', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat, drainSpread: 0 })
    app.wsRoute('/aged', { config: { wsGuard: { maxConnectionAge: 60_000 } } }, () => {})
  })
  const client = await openClient(t, url('/aged'))
  const closed = whenClosed(client)
  await app.close()
  const { code, reason } = await closed
  t.equal(code, 1001, 'going away')
  t.match(reason, /^server shutting down; retry-after=\d+$/, 'the shutdown\'s reason, not the age\'s')
  t.same([app.wsGuard.stats().closed.shutdown, app.wsGuard.stats().closed.maxAge], [1, 0], 'counted as shutdown')
  t.match(await tryConnect(url('/aged')), { kind: 'error' }, 'and the server is gone')
})
