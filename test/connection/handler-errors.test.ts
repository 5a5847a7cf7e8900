import { test } from 'tap'
import websocket from '@fastify/websocket'
import type WebSocket from 'ws'
import wsGuard from '../../index.js'
import { countingEcho, startApp, type StartedApp } from '../helpers/app.js'
import { nextMessage, openClient, tryConnect, whenClosed } from '../helpers/clients.js'
import { waitFor } from '../helpers/wait.js'

/** An app with a failing route and an echo route, to show the process goes on. */
async function failingApp (t: Parameters<typeof startApp>[0], failing: (socket: WebSocket) => void | Promise<unknown>): Promise<StartedApp> {
  return await startApp(t, async (app) => {
    await app.register(wsGuard, { websocket: { maxPayload: 1024 } })
    app.wsRoute('/failing', failing)
    app.wsRoute('/echo', countingEcho().handler)
  })
}

/**
 * The connection ended, counted as `reason`, logged once through @fastify/websocket's error
 * handler at `level` (a handler's failure: error; a client's protocol error: info, no stack),
 * and the app still serves.
 */
async function assertSurvived (t: Parameters<typeof startApp>[0], started: StartedApp, message: RegExp, reason: 'error' | 'protocolError' = 'error', level = 50): Promise<void> {
  await waitFor(() => started.app.wsGuard.stats().open === 0, 'the connection to be counted closed')
  const stats = started.app.wsGuard.stats()
  t.equal(stats.closed[reason], 1, `recorded as ${reason}`)
  t.equal(stats.closed.normal, 0, 'not as a normal close')
  t.ok(started.logs.lines.some((line) => line.level === level && message.test(JSON.stringify(line))), `the error handler logged it at level ${level}`)
  if (level !== 50) {
    t.notOk(started.logs.lines.some((line) => line.level === 50), 'nothing at error level: a client cannot fill the log')
    t.notOk(started.logs.text.includes('"stack"'), 'and no stack')
  }
  const echo = await openClient(t, started.url('/echo'))
  echo.send('still here')
  t.equal(await nextMessage(echo), 'still here', 'the process still serves connections')
}

/** Connects to `/failing` and waits for the end; returns the close code the client saw. */
async function endOf (url: string): Promise<number> {
  const outcome = await tryConnect(url)
  if (outcome.kind === 'open') return (await whenClosed(outcome.socket)).code
  return outcome.kind === 'closed' ? outcome.code : -1
}

test('a handler that throws ends its connection, not the process', async (t) => {
  const started = await failingApp(t, () => { throw new Error('handler failed on purpose') })
  t.equal(await endOf(started.url('/failing')), 1006, 'the connection is terminated')
  await assertSurvived(t, started, /handler failed on purpose/)
})

test('an async handler that rejects ends its connection, not the process', async (t) => {
  const started = await failingApp(t, async () => { throw new Error('async handler failed on purpose') })
  t.equal(await endOf(started.url('/failing')), 1006, 'the connection is terminated')
  await assertSurvived(t, started, /async handler failed on purpose/)
})

test('a socket error (a message over maxPayload) ends its connection, not the process', async (t) => {
  const started = await failingApp(t, () => {})
  const client = await openClient(t, started.url('/failing'))
  const closed = whenClosed(client)
  client.send(Buffer.alloc(2048))
  t.not((await closed).code, 1000, 'the connection ends abnormally')
  await assertSurvived(t, started, /websocket client broke the protocol.*|WS_ERR_UNSUPPORTED_MESSAGE_LENGTH/, 'protocolError', 30)
})

test('a socket error (invalid UTF-8 in a text message) ends its connection, not the process', async (t) => {
  const started = await failingApp(t, () => {})
  const client = await openClient(t, started.url('/failing'))
  const closed = whenClosed(client)
  client.send(Buffer.from([0xff, 0xfe, 0xfd]), { binary: false })
  t.not((await closed).code, 1000, 'the connection ends abnormally')
  await assertSurvived(t, started, /WS_ERR_INVALID_UTF8/, 'protocolError', 30)
})

test('a socket error on a ws server the app registered itself is recorded too', async (t) => {
  // Its sockets are plain ws sockets: the guard follows them with listeners, not its socket class.
  const started = await startApp(t, async (app) => {
    await app.register(websocket, { options: { maxPayload: 1024 } })
    await app.register(wsGuard)
    app.wsRoute('/failing', () => {})
  })
  const client = await openClient(t, started.url('/failing'))
  const closed = whenClosed(client)
  client.send(Buffer.alloc(2048))
  t.not((await closed).code, 1000, 'the connection ends abnormally')
  await waitFor(() => started.app.wsGuard.stats().open === 0, 'the connection to be counted closed')
  t.equal(started.app.wsGuard.stats().closed.error, 1, 'recorded as an error')
})
