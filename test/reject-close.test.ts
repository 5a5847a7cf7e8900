import { once } from 'node:events'
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import wsGuard, {
  HandshakeTimeoutError,
  InternalError,
  InvalidKeyError,
  OriginNotAllowedError,
  UnsupportedProtocolError
} from '../index.js'
import * as errors from '../lib/errors.js'
import {
  assertRefusal,
  closeOf,
  countingEcho,
  guardedApp,
  guardLines,
  handshake,
  openClient,
  rawExchange,
  rawRead,
  startApp,
  startAppClosingWithin,
  tryConnect,
  tryConnectWithin,
  type Outcome
} from './helpers.js'

function assertClosed (t: Test, outcome: Outcome, code: number, reason: string): void {
  if (outcome.kind === 'open') outcome.socket.terminate()
  t.same(outcome, { kind: 'closed', code, reason }, `closed with ${code} '${reason}'`)
}

test("rejectWith: 'close': an origin rejection completes the upgrade, then closes with 4403 'origin not allowed'", async (t) => {
  const app = await guardedApp(t, { rejectWith: 'close', origins: ['https://app.example.com'] })
  const outcome = await tryConnect(app.url('/ws'), [], { origin: 'https://evil.example' })
  assertClosed(t, outcome, 4403, 'origin not allowed')
  // The same over a raw socket: a 101, then a close frame.
  const headEnd = (bytes: Buffer) => bytes.indexOf('\r\n\r\n')
  const closeFrameLength = 4 + Buffer.byteLength('origin not allowed')
  const raw = await rawRead(app.port, handshake('/ws', { Origin: 'https://evil.example' }),
    (bytes) => headEnd(bytes) !== -1 && bytes.length >= headEnd(bytes) + 4 + closeFrameLength)
  t.match(raw.toString('latin1'), /^HTTP\/1\.1 101 /, 'the upgrade completed')
  const frame = raw.subarray(headEnd(raw) + 4)
  t.equal(frame[0], 0x88, 'a close frame follows the 101')
  t.equal(frame[1], closeFrameLength - 2, 'unmasked, with a code and the reason')
  t.equal(frame.readUInt16BE(2), 4403)
  t.equal(frame.subarray(4).toString(), 'origin not allowed')
  t.equal(app.echo.calls, 0, 'the handler never ran')
  await openClient(t, app.url('/ws'), [], { origin: 'https://app.example.com' })
  t.equal(app.echo.calls, 1)
})

test("rejectWith: 'close': malformed handshakes still get HTTP", async (t) => {
  const app = await guardedApp(t, { rejectWith: 'close', origins: ['https://app.example.com'] })
  assertRefusal(t, await rawExchange(app.port, handshake('/ws', { 'Sec-WebSocket-Key': 'abc', Origin: 'https://evil.example' })), 400, 'FST_WS_GUARD_INVALID_KEY')
  assertRefusal(t, await rawExchange(app.port, handshake('/ws', { 'Sec-WebSocket-Version': '8' })), 426, 'FST_WS_GUARD_UNSUPPORTED_VERSION')
  assertRefusal(t, await rawExchange(app.port, handshake('/ws', { 'Sec-WebSocket-Protocol': 'a,,b' })), 400, 'FST_WS_GUARD_INVALID_PROTOCOL_HEADER')
  assertRefusal(t, await rawExchange(app.port, 'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'), 426, 'FST_WS_GUARD_UPGRADE_REQUIRED')
  t.equal(app.echo.calls, 0)
})

test("rejectWith: 'close': an unsupported subprotocol reaches the client as a reason it can read", async (t) => {
  const echo = countingEcho()
  const app = await startAppClosingWithin(t, 500, async (app) => {
    await app.register(wsGuard, { rejectWith: 'close', protocols: ['chat.v1'] })
    app.wsRoute('/ws', echo.handler)
  })
  // A 101 that names none of the offered subprotocols fails in ws and browsers before any
  // close frame is read: the refusal must be an HTTP 400 or a 101 the client accepts, then 4400.
  const outcome = await tryConnectWithin(300, app.url('/ws'), ['chat.v9'])
  if (outcome.kind === 'refused') {
    assertRefusal(t, outcome, 400, 'FST_WS_GUARD_UNSUPPORTED_PROTOCOL')
  } else {
    if (outcome.kind === 'open') outcome.socket.terminate()
    t.match(outcome, { kind: 'closed', code: 4400 }, 'closed with 4400')
  }
  t.equal(echo.calls, 0)
})

test("rejectWith: 'close': a client that offered subprotocols can read the close code", async (t) => {
  const echo = countingEcho()
  const app = await startAppClosingWithin(t, 500, async (app) => {
    await app.register(wsGuard, { rejectWith: 'close', origins: ['https://app.example.com'] })
    app.wsRoute('/ws', echo.handler)
    app.wsRoute('/chat', { config: { wsGuard: { protocols: ['chat.v1'] } } }, echo.handler)
  })
  // Browsers that authenticate with new WebSocket(url, ['bearer.<token>', 'chat.v1']) always offer some.
  for (const [path, offered] of [['/ws', ['chat']], ['/chat', ['chat.v1']], ['/chat', ['x', 'chat.v1']]] as const) {
    const outcome = await tryConnectWithin(300, app.url(path), [...offered], { origin: 'https://evil.example' })
    if (outcome.kind === 'open') outcome.socket.terminate()
    t.same(outcome, { kind: 'closed', code: 4403, reason: 'origin not allowed' }, `${path} offering ${offered.join(', ')}`)
  }
  t.equal(echo.calls, 0)
})

test("rejectWith: 'close': an origin function that throws closes with 1011 'internal error'", async (t) => {
  const app = await guardedApp(t, { rejectWith: 'close', origins: () => { throw new Error('boom') } })
  assertClosed(t, await tryConnect(app.url('/ws'), [], { origin: 'https://a.example.com' }), 1011, 'internal error')
  t.equal(app.echo.calls, 0)
})

test("rejectWith: 'close': a handshake timeout closes with 1013 (try again later) and a reason that says so", async (t) => {
  const app = await guardedApp(t, { rejectWith: 'close', handshakeTimeout: 100, origins: () => new Promise<boolean>(() => {}) })
  const outcome = await tryConnect(app.url('/ws'), [], { origin: 'https://a.example.com' })
  if (outcome.kind === 'open') outcome.socket.terminate()
  t.match(outcome, { kind: 'closed', code: 1013 })
  t.not((outcome as { reason?: string }).reason, 'bad request', 'a timeout is not a bad request')
  t.match((outcome as { reason?: string }).reason, /time/, 'the reason names the timeout')
  t.equal(app.echo.calls, 0)
})

test('rejectWith per route: the plugin answers HTTP, one route closes', async (t) => {
  const echo = countingEcho()
  const { url, logs } = await startApp(t, async (app) => {
    await app.register(wsGuard, { origins: ['https://app.example.com'] })
    app.wsRoute('/http', echo.handler)
    app.wsRoute('/close', { config: { wsGuard: { rejectWith: 'close' } } }, echo.handler)
  })
  assertRefusal(t, await tryConnect(url('/http'), [], { origin: 'https://evil.example' }), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  assertClosed(t, await tryConnect(url('/close'), [], { origin: 'https://evil.example' }), 4403, 'origin not allowed')
  t.equal(echo.calls, 0)
  t.same(guardLines(logs).map((line) => line.wsGuard), [
    { code: 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', statusCode: 403, route: '/http' },
    { code: 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', statusCode: 403, route: '/close' }
  ], 'a close rejection is logged like an HTTP one')
})

test("rejectWith: 'close' leaves no socket behind on the server", async (t) => {
  const app = await guardedApp(t, { rejectWith: 'close', origins: ['https://app.example.com'] })
  for (let i = 0; i < 3; i++) {
    assertClosed(t, await tryConnect(app.url('/ws'), [], { origin: 'https://evil.example' }), 4403, 'origin not allowed')
  }
  await sleep(50)
  t.equal(app.app.websocketServer.clients.size, 0, 'ws tracks no rejected client')
})

test("rejectWith: 'close' under injectWS", async (t) => {
  const app = await guardedApp(t, { rejectWith: 'close', origins: ['https://app.example.com'] })
  // injectWS's in-memory stream never ends after a close handshake (the same when a handler
  // closes), so ws would keep its 30 s close timer: end the server side in teardown.
  t.teardown(() => { for (const client of app.app.websocketServer.clients) client.terminate() })
  const socket = await app.app.injectWS('/ws', { headers: { origin: 'https://evil.example' } })
  const { code, reason } = socket.readyState === socket.CLOSED ? { code: 0, reason: 'closed before the test listened' } : await closeOf(socket as never)
  t.equal(code, 4403)
  t.equal(reason, 'origin not allowed')
  t.equal(app.echo.calls, 0)
})

test("rejectWith: 'close': a client that answers the close frame with garbage cannot crash the server", async (t) => {
  const app = await guardedApp(t, { rejectWith: 'close', origins: ['https://app.example.com'] })
  const socket = connect(app.port, '127.0.0.1')
  await once(socket, 'connect')
  socket.write(handshake('/ws', { Origin: 'https://evil.example' }))
  let received = Buffer.alloc(0)
  while (!received.includes('\r\n\r\n')) {
    const [chunk] = await once(socket, 'data') as [Buffer]
    received = Buffer.concat([received, chunk])
  }
  t.match(received.toString('latin1'), /^HTTP\/1\.1 101 /)
  // An unmasked frame with a reserved opcode: ws fails the connection with an 'error' event.
  socket.write(Buffer.from([0x83, 0x00]))
  await once(socket, 'close')
  t.equal(app.echo.calls, 0)
  // The server is still up.
  await openClient(t, app.url('/ws'), [], { origin: 'https://app.example.com' })
  t.equal(app.echo.calls, 1)
})

test('close codes and reasons', async (t) => {
  t.equal(new OriginNotAllowedError('x').closeCode, 4403)
  t.equal(new UnsupportedProtocolError('x').closeCode, 4400)
  t.equal(new InternalError().closeCode, 1011)
  t.equal(new HandshakeTimeoutError().closeCode, 1013)
  t.equal(new OriginNotAllowedError('https://evil.example').closeReason, 'origin not allowed', 'the reason is fixed, never the details')
  t.equal(new InvalidKeyError('missing').closeReason, 'bad request')
  for (const ErrorClass of Object.values(errors)) {
    if (typeof ErrorClass !== 'function' || ErrorClass === errors.InvalidOptionError) continue
    const error = new (ErrorClass as new (...args: unknown[]) => errors.GuardError)('x', 'y')
    t.ok(Buffer.byteLength(error.closeReason) <= 123, `${error.code}: the reason fits a close frame`)
    const expected = error.statusCode >= 500 ? (error.statusCode === 500 ? 1011 : 1013) : error.statusCode === 426 ? 4400 : 4000 + error.statusCode
    t.equal(error.closeCode, expected, `${error.code}: ${error.statusCode} closes with ${expected}`)
  }
})
