import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { type WsGuardOptions } from '../../index.js'
import { registrationError, startApp, type StartedApp } from '../helpers/app.js'
import { openClient, whenClosed, type Closed } from '../helpers/clients.js'
import { settlesWithin, waitFor } from '../helpers/wait.js'

/*
 * app.close(): `draining` turns true at once, and open connections get 1001 `server shutting
 * down; retry-after=<ms>`, spread over `drainSpread` so that their clients do not all come
 * back in the same instant.
 */

const shape = /^server shutting down; retry-after=(\d+)$/

interface DrainApp extends StartedApp {
  /** `Date.now()` of each close the guard started on a server socket. */
  closeCalls: number[]
}

/** The guard with `options` and `/ws`, whose sockets record when the guard closes them. */
async function drainApp (t: Test, options: WsGuardOptions): Promise<DrainApp> {
  const closeCalls: number[] = []
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, options)
    app.wsRoute('/ws', (socket: WebSocket) => {
      const close = socket.close.bind(socket)
      socket.close = (...args: Parameters<WebSocket['close']>) => {
        // Once: ws calls close() again to answer the client's close frame.
        if (socket.readyState === socket.OPEN) closeCalls.push(Date.now())
        close(...args)
      }
    })
  })
  return { ...started, closeCalls }
}

/** Opens `count` clients, a hundred at a time, and the closes they will see. */
async function openMany (t: Test, url: string, count: number): Promise<{ clients: WebSocket[], closes: Array<Promise<Closed>> }> {
  const clients: WebSocket[] = []
  while (clients.length < count) {
    clients.push(...await Promise.all(Array.from({ length: Math.min(100, count - clients.length) }, () => openClient(t, url))))
  }
  return { clients, closes: clients.map(whenClosed) }
}

/** The retry hints of `closes`, asserting each is a 1001 with the shutdown reason. */
function hintsOf (t: Test, closes: Closed[]): number[] {
  const hints: number[] = []
  const wrong = closes.filter(({ code, reason }) => code !== 1001 || !shape.test(reason))
  t.same(wrong.slice(0, 3), [], `every one of ${closes.length} closes is 1001 server shutting down; retry-after=<ms>`)
  for (const { reason } of closes) hints.push(Number(shape.exec(reason)?.[1]))
  return hints
}

function spanOf (times: number[]): number {
  return Math.max(...times) - Math.min(...times)
}

test('draining is false before app.close() and true from its start, before any connection closes', async (t) => {
  const { app, url, port } = await startApp(t, async (app) => {
    await app.register(wsGuard, { drainSpread: 1000, shutdownGrace: 5000 })
    app.wsRoute('/ws', () => {})
    // A readiness probe: a load balancer stops sending new clients as soon as close starts.
    app.get('/ready', async (_request, reply) => await reply.code(app.wsGuard.draining ? 503 : 200).send({ draining: app.wsGuard.draining }))
  }, { return503OnClosing: false })
  const ready = async (): Promise<[number, unknown]> => {
    const response = await fetch(`http://127.0.0.1:${port}/ready`)
    return [response.status, await response.json()]
  }
  t.equal(app.wsGuard.draining, false, 'false while the app runs')
  t.same(await ready(), [200, { draining: false }], 'the probe says ready')
  const { clients, closes } = await openMany(t, url('/ws'), 20)
  const seenAtClose: boolean[] = []
  for (const client of clients) client.once('close', () => seenAtClose.push(app.wsGuard.draining))

  const closing = app.close()
  await waitFor(() => app.wsGuard.draining, 'draining to turn true', 1000)
  const stillOpen = clients.filter((client) => client.readyState === client.OPEN).length
  t.ok(stillOpen > 0, `true while connections are still open (${stillOpen} of 20)`)
  t.same(await ready(), [503, { draining: true }], 'the probe says not ready during the drain')
  t.ok(clients.some((client) => client.readyState === client.OPEN), 'and the drain was still going on')
  await closing
  await Promise.all(closes)
  t.same(seenAtClose, Array.from({ length: 20 }, () => true), 'true when each client saw its close')
  t.equal(app.wsGuard.draining, true, 'and after')
})

test('1,000 connections, drainSpread 1500: the closes span the window, each with its own retry hint', async (t) => {
  const drainSpread = 1500
  const app = await drainApp(t, { drainSpread })
  const { closes } = await openMany(t, app.url('/ws'), 1000)
  const started = Date.now()
  await app.app.close()
  const took = Date.now() - started
  const seen = await Promise.all(closes)
  const hints = hintsOf(t, seen)
  const distinct = new Set(hints).size
  const clientSpan = spanOf(seen.map(({ at }) => at))
  const serverSpan = spanOf(app.closeCalls)
  t.comment(`app.close(): ${took} ms; 1001s seen over ${clientSpan} ms (sent over ${serverSpan} ms); ${distinct} distinct hints in [${Math.min(...hints)}, ${Math.max(...hints)}]`)
  t.equal(app.closeCalls.length, 1000, 'the guard closed every connection')
  t.ok(clientSpan >= drainSpread / 2, `the clients saw the 1001s over ${clientSpan} ms: at least half of ${drainSpread}`)
  // The wheel's tick (250 ms with the default heartbeat) and a busy machine: generous.
  t.ok(serverSpan <= drainSpread + 250 + 500, `sent within the window and a tick (${serverSpan} ms)`)
  t.ok(hints.every((hint) => hint >= 0 && hint < drainSpread), `every hint in [0, ${drainSpread})`)
  t.ok(distinct >= 400, `${distinct} distinct hints among 1,000`)
  t.ok(Math.max(...hints) >= 1000, 'hints go past a second: the window is as wide as the drain')
  t.ok(took >= clientSpan - 50, `app.close() waited for the drain (${took} ms)`)
  t.equal(app.app.wsGuard.stats().closed.shutdown, 1000, 'each counted as shutdown')
})

test('drainSpread 0 closes every connection at once', async (t) => {
  const app = await drainApp(t, { drainSpread: 0 })
  const { closes } = await openMany(t, app.url('/ws'), 200)
  t.ok(await settlesWithin(app.app.close(), 2000), 'app.close() resolves without a spread')
  const hints = hintsOf(t, await Promise.all(closes))
  const serverSpan = spanOf(app.closeCalls)
  t.comment(`200 closes sent over ${serverSpan} ms`)
  t.equal(app.closeCalls.length, 200, 'the guard closed every connection')
  t.ok(serverSpan < 100, `sent in one go, not on the wheel's ticks (${serverSpan} ms)`)
  t.ok(hints.every((hint) => hint >= 0 && hint < 1000), 'the hints still spread the return over a second')
  t.ok(new Set(hints).size > 50, 'and differ')
})

test('the default spread with a few connections: app.close() is quick, the hints are there', async (t) => {
  const app = await drainApp(t, {})
  const { closes } = await openMany(t, app.url('/ws'), 3)
  const started = Date.now()
  await app.app.close()
  const took = Date.now() - started
  t.ok(took < 1000, `app.close() with 3 connections took ${took} ms`)
  const hints = hintsOf(t, await Promise.all(closes))
  t.ok(hints.every((hint) => hint >= 0 && hint < 1000), `hints in [0, 1000): ${hints.join(', ')}`)
})

test('the default spread is 1 ms per connection, at most half of shutdownGrace', async (t) => {
  // Past a second, the hints span the drain's window (max(1000, spread)): how wide it was shows
  // in them, whatever the machine's load does to the timing. 1,200 connections would spread
  // over 1,200 ms; shutdownGrace 2100 caps it at 1,050.
  const [shutdownGrace, count, spread] = [2100, 1200, 1050]
  const app = await drainApp(t, { shutdownGrace })
  const { closes } = await openMany(t, app.url('/ws'), count)
  await app.app.close()
  const hints = hintsOf(t, await Promise.all(closes))
  const serverSpan = spanOf(app.closeCalls)
  t.comment(`${count} closes sent over ${serverSpan} ms, hints up to ${Math.max(...hints)}`)
  // All of 1,200 draws under 1,050 with a window of 1,200: (1050/1200)^1200, about e^-160.
  t.ok(hints.every((hint) => hint >= 0 && hint < spread), `every hint under ${spread} ms: capped, not ${count}`)
  // All under 1,000 with a window of 1,050: (1000/1050)^1200, about e^-58.
  t.ok(Math.max(...hints) >= 1000, 'some past a second: the window grew with the connections, past the one-second floor')
  t.ok(serverSpan >= spread / 2, `the closes went out over ${serverSpan} ms`)
  t.equal(app.app.wsGuard.stats().closed.shutdown, count, 'each counted as shutdown')
})

test('drainSpread may not exceed shutdownGrace', async (t) => {
  const err = await registrationError(t, { drainSpread: 3000, shutdownGrace: 2000 })
  t.equal(err?.code, 'FST_WS_GUARD_INVALID_OPTION', 'an InvalidOptionError')
  t.equal(err?.message, 'fastify-ws-guard: drainSpread (3000) must not exceed shutdownGrace (2000): the last 1001 would go out after the grace is over; lower drainSpread or raise shutdownGrace', 'that says what to do')
  t.equal(await registrationError(t, { drainSpread: 2000, shutdownGrace: 2000 }), undefined, 'equal registers')
})
