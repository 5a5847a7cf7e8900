import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import wsGuard from '../../index.js'
import { countingEcho, guardedApp, openConnections, startApp } from '../helpers/app.js'
import { openClient, tryConnect } from '../helpers/clients.js'
import { guardLines } from '../helpers/logs.js'
import { handshake, rawConnect, rawExchange } from '../helpers/raw.js'
import { assertRefusal } from '../helpers/refusals.js'
import { deferred } from '../helpers/wait.js'

/** Polls until the server holds no connection, at most `ms`; returns the last count. */
async function drained (app: FastifyInstance, ms = 500): Promise<number> {
  const end = Date.now() + ms
  let count = await openConnections(app)
  while (count > 0 && Date.now() < end) {
    await sleep(10)
    count = await openConnections(app)
  }
  return count
}

test('an origin function that never settles: 503 FST_WS_GUARD_HANDSHAKE_TIMEOUT with Retry-After after handshakeTimeout', async (t) => {
  const app = await guardedApp(t, { handshakeTimeout: 150, origins: () => new Promise<boolean>(() => {}) })
  const started = Date.now()
  const response = await rawExchange(app.port, handshake('/ws', { Origin: 'https://a.example.com' }))
  const elapsed = Date.now() - started
  const { body } = assertRefusal(t, response, 503, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT')
  t.equal(body.error, 'Service Unavailable')
  t.match(response.headers['retry-after'], /^[1-9]\d*$/, 'Retry-After: a number of seconds')
  t.ok(elapsed >= 140, `answered after the timeout (${elapsed} ms)`)
  t.ok(elapsed < 1000, `answered soon after the timeout (${elapsed} ms)`)
  t.equal(app.echo.calls, 0)
  t.equal(await drained(app.app), 0, 'nothing left open')
  const lines = guardLines(app.logs)
  t.equal(lines.length, 1)
  t.same(lines[0]?.wsGuard, { code: 'FST_WS_GUARD_HANDSHAKE_TIMEOUT', statusCode: 503, route: '/ws' })
})

test('an origin function that answers after the timeout changes nothing', async (t) => {
  const late = deferred<boolean>()
  const app = await guardedApp(t, { handshakeTimeout: 100, origins: () => late.promise })
  const client = tryConnect(app.url('/ws'), [], { origin: 'https://a.example.com' })
  assertRefusal(t, await client, 503, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT')
  late.resolve(true)
  await sleep(30)
  t.equal(app.echo.calls, 0, 'the late "allowed" did not upgrade anything')
  t.equal(guardLines(app.logs).length, 1, 'one rejection, logged once')
  t.equal(await drained(app.app), 0)
})

test('an origin function that rejects after the timeout changes nothing', async (t) => {
  let fail: (err: Error) => void = () => {}
  const app = await guardedApp(t, { handshakeTimeout: 100, origins: () => new Promise<boolean>((_resolve, reject) => { fail = reject }) })
  assertRefusal(t, await tryConnect(app.url('/ws'), [], { origin: 'https://a.example.com' }), 503, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT')
  fail(new Error('late'))
  await sleep(30)
  t.equal(guardLines(app.logs).length, 1, 'no error line for a handshake already answered')
})

test('an async origin function that answers in time: accepted, and the timer is cleared', async (t) => {
  const app = await guardedApp(t, {
    handshakeTimeout: 150,
    origins: async () => { await sleep(30); return true }
  })
  const socket = await openClient(t, app.url('/ws'), [], { origin: 'https://a.example.com' })
  await sleep(200)
  t.equal(socket.readyState, socket.OPEN, 'still open after the timeout would have fired')
  t.equal(app.echo.calls, 1)
  t.equal(guardLines(app.logs).length, 0, 'no late timeout logged')
})

test('a refusal by an async origin function before the timeout: 403, no timeout afterwards', async (t) => {
  const app = await guardedApp(t, { handshakeTimeout: 100, origins: async () => false })
  assertRefusal(t, await tryConnect(app.url('/ws'), [], { origin: 'https://a.example.com' }), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  await sleep(150)
  t.same(guardLines(app.logs).map((line) => line.wsGuard.code), ['FST_WS_GUARD_ORIGIN_NOT_ALLOWED'])
})

test('synchronous checks are not bounded by the timer: handshakeTimeout 1 with a sync allowlist', async (t) => {
  const app = await guardedApp(t, { handshakeTimeout: 1, origins: ['https://a.example.com'] })
  await openClient(t, app.url('/ws'), [], { origin: 'https://a.example.com' })
  t.equal(app.echo.calls, 1)
})

test('handshakeTimeout per route', async (t) => {
  const echo = countingEcho()
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { handshakeTimeout: 5000, origins: async () => { await sleep(100); return true } })
    app.wsRoute('/fast', { config: { wsGuard: { handshakeTimeout: 20 } } }, echo.handler)
    app.wsRoute('/slow', echo.handler)
  })
  assertRefusal(t, await tryConnect(url('/fast'), [], { origin: 'https://a.example.com' }), 503, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT')
  await openClient(t, url('/slow'), [], { origin: 'https://a.example.com' })
  t.equal(echo.calls, 1)
})

for (const [how, verdict] of [['closes', true], ['closes', false], ['resets', true], ['resets', false]] as const) {
  test(`a client that ${how} its connection while the async origin function is pending (it then answers ${verdict}): no crash, no leak, no handler`, async (t) => {
    const called = deferred<void>()
    const answer = deferred<boolean>()
    const app = await guardedApp(t, {
      handshakeTimeout: 1000,
      origins: () => { called.resolve(); return answer.promise }
    })
    const socket = await rawConnect(t, app.port, handshake('/ws', { Origin: 'https://a.example.com' }))
    await called.promise
    if (how === 'closes') socket.destroy()
    else socket.resetAndDestroy()
    // The guard should notice at once, not hold the socket until the check or handshakeTimeout ends.
    t.equal(await drained(app.app, 200), 0, 'the server lets go of the socket while the check is pending')
    answer.resolve(verdict)
    await sleep(20)
    t.equal(app.echo.calls, 0, 'the handler never ran')
    t.equal(await drained(app.app, 200), 0, 'the socket is released once the check settled')
    t.equal(guardLines(app.logs).length, 0, 'a client that left is not answered, nor logged as a rejection')
    // The server still works.
    await openClient(t, app.url('/ws'))
    t.equal(app.echo.calls, 1)
  })
}

test('a client that disconnects while an origin function never settles: the timeout fires harmlessly', async (t) => {
  const called = deferred<void>()
  const app = await guardedApp(t, {
    handshakeTimeout: 100,
    origins: () => { called.resolve(); return new Promise<boolean>(() => {}) }
  })
  const socket = await rawConnect(t, app.port, handshake('/ws', { Origin: 'https://a.example.com' }))
  await called.promise
  socket.destroy()
  await sleep(150)
  t.equal(app.echo.calls, 0)
  t.equal(await drained(app.app), 0)
  assertRefusal(t, await rawExchange(app.port, handshake('/ws', { Origin: 'https://a.example.com' })), 503, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT')
})
