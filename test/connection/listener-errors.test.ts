import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard from '../../index.js'
import { countingEcho, startApp, type StartedApp } from '../helpers/app.js'
import { nextMessage, openClient, whenClosed, type Closed } from '../helpers/clients.js'
import { assertNoLeak, guardLines } from '../helpers/logs.js'
import { waitFor } from '../helpers/wait.js'

/** In every failing listener's message: it must never reach the log. */
const marker = 'MARKER-listener-7f3c'

class AppError extends Error {
  override name = 'AppError'
  readonly code = 'E_APP_LISTENER'
}

const fail = (): never => { throw new AppError(`listener failed with ${marker}`) }

/** An app with a `/failing` route set up by `failing`, and an echo route to show the process goes on. */
async function failingApp (t: Test, failing: (socket: WebSocket) => void): Promise<StartedApp> {
  return await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/failing', failing)
    app.wsRoute('/echo', countingEcho().handler)
    app.wsRoute('/unguarded', { config: { wsGuard: false } }, failing)
  })
}

async function assertStillServes (t: Test, started: StartedApp): Promise<void> {
  const echo = await openClient(t, started.url('/echo'))
  echo.send('still here')
  t.equal(await nextMessage(echo), 'still here', 'the process still serves connections')
  echo.close()
}

/** The failure was counted as `error`, logged once at error level with the error's name and code only. */
async function assertListenerFailure (t: Test, started: StartedApp, identity: Record<string, unknown>): Promise<void> {
  await waitFor(() => started.app.wsGuard.stats().open === 0, 'the connection to be counted closed')
  const { closed } = started.app.wsGuard.stats()
  t.equal(closed.error, 1, 'counted as error')
  t.equal(closed.normal + closed.abnormal, 0, 'not as a normal or abnormal close')
  const lines = started.logs.lines.filter((line) => line.msg === 'websocket listener failed')
  t.equal(lines.length, 1, "one 'websocket listener failed' line")
  t.equal(lines[0]?.level, 50, 'at error level')
  t.same((lines[0]?.wsGuard as { err?: unknown } | undefined)?.err, identity, "the error's name and code")
  t.equal(started.logs.lines.filter((line) => Number(line.level) >= 50).length, 1, 'no other error line')
  assertNoLeak(t, started.logs.text, [marker], 'the log')
}

/** Connects to `/failing`, lets `provoke` make a listener fail, and returns the close the client saw. */
async function provoke (t: Test, started: StartedApp, provoke: (socket: WebSocket) => void): Promise<Closed> {
  const client = await openClient(t, started.url('/failing'))
  const closed = whenClosed(client)
  provoke(client)
  return await closed
}

const frameKinds: Array<{ event: string, send: (socket: WebSocket) => void }> = [
  { event: 'message', send: (socket) => socket.send('hello') },
  { event: 'ping', send: (socket) => socket.ping() },
  { event: 'pong', send: (socket) => socket.pong() }
]

for (const { event, send } of frameKinds) {
  test(`an async '${event}' listener that rejects closes its connection with 1011, not the process`, async (t) => {
    const started = await failingApp(t, (socket) => { socket.on(event, async () => fail()) })
    const { code, reason } = await provoke(t, started, send)
    t.equal(code, 1011, 'the client gets 1011')
    t.equal(reason, 'internal error', "and 'internal error'")
    await assertListenerFailure(t, started, { name: 'AppError', code: 'E_APP_LISTENER' })
    await assertStillServes(t, started)
  })

  test(`a '${event}' listener that throws closes its connection with 1011, not the process`, async (t) => {
    const started = await failingApp(t, (socket) => { socket.on(event, fail) })
    const { code, reason } = await provoke(t, started, send)
    t.equal(code, 1011, 'the client gets 1011')
    t.equal(reason, 'internal error', "and 'internal error'")
    await assertListenerFailure(t, started, { name: 'AppError', code: 'E_APP_LISTENER' })
    await assertStillServes(t, started)
  })
}

test("a 'close' listener that throws: the process survives and the close is counted as error", async (t) => {
  const started = await failingApp(t, (socket) => { socket.on('close', fail) })
  const client = await openClient(t, started.url('/failing'))
  const closed = whenClosed(client)
  client.close(1000)
  t.equal((await closed).code, 1000, 'the close handshake completes')
  await assertListenerFailure(t, started, { name: 'AppError', code: 'E_APP_LISTENER' })
  await assertStillServes(t, started)
})

test("the README's refresh pattern without try/catch: JSON.parse of a plain-text frame ends the connection, not the process", async (t) => {
  const started = await failingApp(t, (socket) => {
    socket.on('message', async (data) => {
      const message = JSON.parse(String(data)) as { type?: string }
      if (message.type === 'ping') socket.send('pong')
    })
  })
  const { code, reason } = await provoke(t, started, (socket) => socket.send(`not json ${marker}`))
  t.equal(code, 1011, 'the client gets 1011')
  t.equal(reason, 'internal error', "and 'internal error'")
  await assertListenerFailure(t, started, { name: 'SyntaxError' })
  await assertStillServes(t, started)
})

test('on a route outside the guard, a rejecting listener goes to the error handler of @fastify/websocket', async (t) => {
  const started = await failingApp(t, (socket) => { socket.on('message', async () => fail()) })
  const client = await openClient(t, started.url('/unguarded'))
  const closed = whenClosed(client)
  client.send('hello')
  t.equal((await closed).code, 1006, 'the connection is terminated')
  await waitFor(() => started.logs.lines.some((line) => line.msg === 'websocket handler failed'), 'the error handler to log')
  const errors = started.logs.lines.filter((line) => Number(line.level) >= 50)
  t.equal(errors.length, 1, 'one error-level line')
  t.equal(errors[0]?.msg, 'websocket handler failed', "'websocket handler failed'")
  t.equal(guardLines(started.logs).filter((line) => line.msg === 'websocket listener failed').length, 0, 'not handled as a guarded listener')
  t.same(started.app.wsGuard.stats().closed.error, 0, 'not counted by the guard: the route is not guarded')
  await assertStillServes(t, started)
})
