import { createServer, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import WebSocket from 'ws'
import { connect } from '../../client.js'
import { deferred, waitFor } from '../helpers/wait.js'
import { secret } from '../helpers/tokens.js'
import { numberedTokens, recordingApp, track, type RecordingApp } from './recorder.js'

/*
 * The handle connect() returns: sending, messages, state, close(), token() failures, options,
 * and which WebSocket class it uses. The close-code rules are in close-codes.test.ts.
 */

/** A guard with JWT auth whose `/echo` route echoes text and says hello to the user on open. */
async function echoApp (t: Test): Promise<RecordingApp> {
  return await recordingApp(t, { auth: { secret }, rejectWith: 'close' }, (app) => {
    app.wsRoute('/echo', { config: { wsGuard: { protocols: ['chat.v1'] } } }, (socket, request) => {
      socket.send(`hello ${String(request.wsUser?.n)} over ${socket.protocol}`)
      socket.on('message', (data) => socket.send(String(data)))
    })
  })
}

test('opens with the token and protocols, sends, receives, and reports its state', async (t) => {
  const app = await echoApp(t)
  const tokens = numberedTokens()
  const client = track(t, app.url('/echo'), { token: tokens.token, protocols: ['chat.v1'] })
  t.equal(client.handle.state, 'connecting', "'connecting' at once")
  t.equal(client.handle.send('too early'), false, 'send() before the socket opened: false, dropped')
  await waitFor(() => client.events.some((event) => event.type === 'message'), 'the hello')
  t.equal(client.handle.state, 'open')
  t.ok(client.handle.socket instanceof WebSocket, 'socket is the ws instance')
  t.equal(client.handle.socket?.protocol, 'chat.v1', 'the server selected the app protocol')
  t.equal(app.handshakes[0]?.token, tokens.minted[0], 'the handshake carried the token as bearer.<token>')
  t.equal(client.handle.send('ping'), true, 'send() on the open socket: true')
  await waitFor(() => client.events.filter((event) => event.type === 'message').length === 2, 'the echo')
  t.same(client.events.map((event) => event.type === 'message' ? event.data : event.type), ['open', 'hello 1 over chat.v1', 'ping'])
})

test('a URL object, and no callbacks at all, work too', async (t) => {
  const app = await echoApp(t)
  const handle = connect(new URL(app.url('/echo')), { WebSocket, token: numberedTokens().token })
  t.teardown(() => handle.close())
  await waitFor(() => handle.state === 'open', 'the connection')
  handle.close()
  await waitFor(() => handle.socket === undefined, 'the close')
  t.equal(handle.state, 'closed')
})

test('close() closes the socket with its code and reason and stops reconnecting', async (t) => {
  let serverSaw: { code: number, reason: string } | undefined
  const app = await recordingApp(t, {}, (app) => {
    app.wsRoute('/ws', (socket) => {
      socket.on('close', (code, reason) => { serverSaw = { code, reason: String(reason) } })
    })
  })
  const client = track(t, app.url('/ws'), { minDelay: 10 })
  await waitFor(() => client.handle.state === 'open', 'the connection')
  client.handle.close(4000, 'leaving')
  t.equal(client.handle.state, 'closed', "'closed' at once")
  await waitFor(() => client.closes().length === 1 && serverSaw !== undefined, 'the close')
  t.same(serverSaw, { code: 4000, reason: 'leaving' }, 'the server saw the code and reason')
  t.same(client.closes(), [{ code: 4000, reason: 'leaving', willRetry: false }])
  t.equal(client.handle.send('after'), false, 'send() after close(): false')
  await sleep(200)
  t.equal(app.handshakes.length, 1, 'no reconnect')
})

test('close() without arguments closes with 1000', async (t) => {
  const app = await recordingApp(t, {}, (app) => app.wsRoute('/ws', () => {}))
  const client = track(t, app.url('/ws'))
  await waitFor(() => client.handle.state === 'open', 'the connection')
  client.handle.close()
  await waitFor(() => client.closes().length === 1, 'the close')
  t.same(client.closes(), [{ code: 1000, reason: '', willRetry: false }])
})

test('close() while waiting to reconnect cancels the reconnect', async (t) => {
  const app = await recordingApp(t, {}, (app) => app.wsRoute('/ws', (socket) => socket.close(1013, 'busy; retry-after=300')))
  const client = track(t, app.url('/ws'), { minDelay: 10 })
  await waitFor(() => client.closes().length === 1, 'the first close')
  t.equal(client.handle.state, 'waiting', "'waiting' before the reconnect")
  t.equal(client.handle.socket, undefined, 'no socket while waiting')
  client.handle.close()
  t.equal(client.handle.state, 'closed')
  await sleep(600)
  t.equal(app.handshakes.length, 1, 'the reconnect never came')
  t.equal(client.closes().length, 1, 'nothing more to report')
})

test('close() while token() runs: no socket is opened', async (t) => {
  const app = await echoApp(t)
  const pending = deferred<string>()
  const client = track(t, app.url('/echo'), { token: () => pending.promise })
  client.handle.close()
  pending.resolve(await numberedTokens().token())
  await sleep(200)
  t.equal(app.handshakes.length, 0, 'no handshake')
  t.same(client.events, [], 'nothing to report')
})

test('close() while the socket is connecting: reported as a 1006, not retried', async (t) => {
  // A TCP server that never answers the upgrade: the socket stays CONNECTING.
  const sockets = new Set<Socket>()
  const server = createServer((socket) => sockets.add(socket))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  const address = server.address()
  const client = track(t, `ws://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}/`, { minDelay: 10 })
  await waitFor(() => sockets.size === 1, 'the TCP connection')
  t.equal(client.handle.state, 'connecting')
  client.handle.close()
  await waitFor(() => client.closes().length === 1, 'the close')
  t.same(client.closes(), [{ code: 1006, reason: '', willRetry: false }])
})

test('token() that rejects or throws: reported, backed off, then the next token() is used', async (t) => {
  const app = await echoApp(t)
  const good = numberedTokens()
  const failures: Array<() => Promise<string>> = [
    async () => { throw new Error('token service offline') },
    () => { throw new Error('thrown synchronously') },
    async () => 'not a JWT'
  ]
  const client = track(t, app.url('/echo'), { token: () => (failures.shift() ?? good.token)(), minDelay: 20, maxDelay: 50 })
  await waitFor(() => client.handle.state === 'open', 'the connection with a good token')
  const reports = client.failures()
  t.same(reports.map((report) => report.error instanceof Error && report.error.message), [
    'token service offline',
    'thrown synchronously',
    'bearerProtocols: the token must be a non-empty JWT string'
  ], 'each failure reported with its error')
  for (const [i, report] of reports.entries()) {
    const cap = Math.min(50, 20 * 2 ** i)
    t.ok(report.willRetry && report.delay >= 0 && report.delay <= cap, `failure ${i + 1}: backed off within [0, ${cap}] ms`)
  }
  t.equal(client.tokenCalls.length, 4, 'token() once per attempt')
  t.equal(app.handshakes.length, 1, 'no handshake without a token')
  t.equal(app.handshakes[0]?.token, good.minted[0])
})

test('token() failures stop after maxRetries', async (t) => {
  const client = track(t, 'ws://127.0.0.1:9/', { token: async () => { throw new Error('down') }, minDelay: 10, maxRetries: 2 })
  await waitFor(() => client.failures().length === 3, 'three failures')
  t.same(client.failures().map((report) => report.willRetry), [true, true, false])
  t.equal(client.handle.state, 'closed')
  await sleep(100)
  t.equal(client.tokenCalls.length, 3, 'no more token() calls')
})

test('a WebSocket constructor that throws is reported like a token failure', async (t) => {
  const client = track(t, 'not a url', { maxRetries: 0 })
  await waitFor(() => client.failures().length === 1, 'the failure')
  const [report] = client.failures()
  t.match(report, { error: { name: 'SyntaxError' }, willRetry: false })
})

test('maxRetries 0: the first close stops', async (t) => {
  const app = await recordingApp(t, {}, (app) => app.wsRoute('/ws', (socket) => socket.terminate()))
  const client = track(t, app.url('/ws'), { maxRetries: 0 })
  await waitFor(() => client.closes().length === 1, 'the close')
  t.same(client.closes(), [{ code: 1006, reason: '', willRetry: false }])
})

test('bad limits fail at once with a RangeError', async (t) => {
  for (const limits of [{ minDelay: 0 }, { minDelay: -1 }, { minDelay: 100, maxDelay: 50 }, { maxRetries: -1 }, { stableAfter: -1 }, { minDelay: Number.NaN }]) {
    t.throws(() => connect('ws://127.0.0.1:9/', { WebSocket, ...limits }), { name: 'RangeError', message: /connect: needs 0 < minDelay <= maxDelay/ }, JSON.stringify(limits))
  }
})

test('without the WebSocket option, the global WebSocket is used', async (t) => {
  await t.test('no global WebSocket: a TypeError that says what to pass', async (t) => {
    const own = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket')
    Object.defineProperty(globalThis, 'WebSocket', { value: undefined, configurable: true, writable: true })
    t.teardown(() => {
      if (own === undefined) delete (globalThis as { WebSocket?: unknown }).WebSocket
      else Object.defineProperty(globalThis, 'WebSocket', own)
    })
    t.throws(() => connect('ws://127.0.0.1:9/'), { name: 'TypeError', message: /no global WebSocket \(Node < 22\): pass options\.WebSocket/ })
  })

  // A version gate, not a missing binary: Node 22 made WebSocket a global; Node 20 needs the
  // WebSocket option, which every other test here uses.
  const major = Number(process.versions.node.split('.')[0])
  await t.test('Node 22+: the global WebSocket opens, sends and receives', { skip: major < 22 ? `Node ${process.versions.node} has no global WebSocket (Node 22 and later do)` : false }, async (t) => {
    const app = await echoApp(t)
    const messages: string[] = []
    const closed = deferred<unknown>()
    const handle = connect(app.url('/echo'), {
      token: numberedTokens().token,
      protocols: ['chat.v1'],
      onMessage: (event) => messages.push(String(event.data)),
      onClose: closed.resolve
    })
    t.teardown(() => handle.close())
    await waitFor(() => messages.length === 1, 'the hello')
    t.ok(handle.socket instanceof (globalThis as unknown as { WebSocket: typeof WebSocket }).WebSocket, 'a global WebSocket')
    t.equal(handle.send('ping'), true)
    await waitFor(() => messages.length === 2, 'the echo')
    t.same(messages, ['hello 1 over chat.v1', 'ping'])
    handle.close()
    t.same(await closed.promise, { code: 1000, reason: '', willRetry: false })
  })
})
