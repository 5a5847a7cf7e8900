import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import WebSocket, { type ClientOptions } from 'ws'
import { bearerProtocols } from '../../client.js'
import wsGuard from '../../index.js'
import { authApp, countingEcho, guardedApp, startApp, startAppBounded } from '../helpers/app.js'
import { expectOpen, openClient, tryConnect, tryConnectWithin, whenClosed, type Outcome } from '../helpers/clients.js'
import { guardLines } from '../helpers/logs.js'
import { handshake, rawConnect, rawExchange, rawRead, readHead } from '../helpers/raw.js'
import { assertRefusal } from '../helpers/refusals.js'
import { bearer, keyPair, mint, now, publicJwk, secret, secretBytes, sensitive, startJwksServer } from '../helpers/tokens.js'

/*
 * How a refusal reaches the client: over HTTP (the default), or with rejectWith: 'close' as
 * an upgrade followed at once by a close frame that page JavaScript can read.
 */

/** Asserts the upgrade was followed at once by a close frame with `code` and `reason`. */
function assertClosed (t: Test, outcome: Outcome | { kind: 'timeout' }, code: number, reason: string | RegExp): void {
  if (outcome.kind !== 'closed') {
    t.fail(`expected a close ${code}, got ${JSON.stringify(outcome.kind === 'open' ? 'open' : outcome)}`)
    if (outcome.kind === 'open') outcome.socket.terminate()
    return
  }
  t.equal(outcome.code, code, `close code ${code}`)
  if (typeof reason === 'string') t.equal(outcome.reason, reason, `reason '${reason}'`)
  else t.match(outcome.reason, reason)
  t.ok(Buffer.byteLength(outcome.reason) <= 123, 'the reason fits a close frame')
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
  const app = await startAppBounded(t, 500, async (app) => {
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
  const app = await startAppBounded(t, 500, async (app) => {
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
  t.equal((outcome as { reason?: string }).reason, 'handshake timeout; retry-after=5000', 'and says when to come back, as Retry-After: 5 does')
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
  const { code, reason } = socket.readyState === socket.CLOSED ? { code: 0, reason: 'closed before the test listened' } : await whenClosed(socket as never)
  t.equal(code, 4403)
  t.equal(reason, 'origin not allowed')
  t.equal(app.echo.calls, 0)
})

test("rejectWith: 'close': a client that answers the close frame with garbage cannot crash the server", async (t) => {
  const app = await guardedApp(t, { rejectWith: 'close', origins: ['https://app.example.com'] })
  const socket = await rawConnect(t, app.port, handshake('/ws', { Origin: 'https://evil.example' }))
  t.match(await readHead(socket), /^HTTP\/1\.1 101 /)
  // An unmasked frame with a reserved opcode: ws fails the connection with an 'error' event.
  socket.write(Buffer.from([0x83, 0x00]))
  socket.resume()
  await once(socket, 'close')
  t.equal(app.echo.calls, 0)
  // The server is still up.
  await openClient(t, app.url('/ws'), [], { origin: 'https://app.example.com' })
  t.equal(app.echo.calls, 1)
})

test("rejectWith: 'close': every authentication refusal answers with a close frame the browser can read", async (t) => {
  const good = await mint(secretBytes, { sub: sensitive.sub, role: 'member' })
  const app = await authApp(t, {
    secret,
    isRevoked: (user) => user.jti === 'revoked',
    authorize: (user) => user.role !== 'guest'
  }, { plugin: { rejectWith: 'close' } })
  const closes = async (code: number, reason: string | RegExp, protocols: string[] = [], options: ClientOptions = {}): Promise<void> => {
    assertClosed(t, await tryConnect(app.url('/ws'), protocols, options), code, reason)
  }

  await closes(4401, 'authentication required')
  await closes(4401, 'invalid token', [], bearer(await mint(new TextEncoder().encode('y'.repeat(40)), {})))
  await closes(4401, 'token expired', [], bearer(await mint(secretBytes, {}, { exp: now(-60) })))
  await closes(4401, 'token revoked', [], bearer(await mint(secretBytes, { jti: 'revoked' })))
  await closes(4403, 'forbidden', [], bearer(await mint(secretBytes, { role: 'guest' })))
  await closes(4400, /.+/, bearerProtocols(good), bearer(good))
  await closes(4400, /.+/, [], { headers: { authorization: 'Bearer' } })
  t.equal(app.calls, 0, 'the handler never ran')
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(good))).user?.sub, sensitive.sub, 'a good token still opens')

  t.test('the 101 before the close names the app protocol, never the token', async (t) => {
    const app = await authApp(t, { secret }, { plugin: { rejectWith: 'close' }, route: { config: { wsGuard: { protocols: ['chat.v1'] } } } })
    const expired = await mint(secretBytes, {}, { exp: now(-60) })
    let protocolHeader: unknown
    const outcome = await new Promise<{ code: number, reason: string }>((resolve) => {
      const socket = new WebSocket(app.url('/ws'), bearerProtocols(expired, 'chat.v1'))
      socket.on('upgrade', (response) => { protocolHeader = response.headers['sec-websocket-protocol'] })
      socket.on('close', (code, reason) => resolve({ code, reason: String(reason) }))
      socket.on('error', () => {})
    })
    t.equal(protocolHeader, 'chat.v1')
    t.same(outcome, { code: 4401, reason: 'token expired' })
    t.equal(app.calls, 0)
  })

  t.test('a route can choose close while the plugin answers over HTTP', async (t) => {
    const app = await authApp(t, { secret }, { route: { config: { wsGuard: { rejectWith: 'close' } } } })
    assertClosed(t, await tryConnect(app.url('/ws')), 4401, 'authentication required')
  })
})

test("rejectWith: 'close' for 503 cases: 1013 (try again later) with a reason that says so", async (t) => {
  const pair = await keyPair('ES256')
  const token = await mint(pair.privateKey, { sub: 'alice' }, { kid: 'k1' })

  t.test('keys unavailable', async (t) => {
    const jwks = await startJwksServer(t, [await publicJwk(pair, 'k1')])
    jwks.mode = 'error'
    const app = await authApp(t, { jwksUrl: jwks.url }, { plugin: { rejectWith: 'close' } })
    const outcome = await tryConnect(app.url('/ws'), [], bearer(token))
    t.equal(outcome.kind === 'closed' && outcome.code, 1013)
    t.notMatch(outcome.kind === 'closed' ? outcome.reason : '', /^bad request$/, 'not described as the client\'s fault')
    t.ok(outcome.kind === 'closed' && outcome.reason.length > 0, 'a reason')
    t.equal(outcome.kind === 'closed' && outcome.reason, 'try again later; retry-after=5000', 'with the retry hint')
    t.equal(app.calls, 0)
  })

  t.test('handshake timeout', async (t) => {
    const app = await authApp(t, { secret, authorize: () => new Promise<boolean>(() => {}) }, { plugin: { rejectWith: 'close', handshakeTimeout: 200 } })
    const outcome = await tryConnect(app.url('/ws'), [], bearer(await mint(secretBytes, {})))
    t.equal(outcome.kind === 'closed' && outcome.code, 1013)
    t.notMatch(outcome.kind === 'closed' ? outcome.reason : '', /^bad request$/, 'not described as the client\'s fault')
    t.equal(outcome.kind === 'closed' && outcome.reason, 'handshake timeout; retry-after=5000', 'with the retry hint')
    t.equal(app.calls, 0)
  })

  t.test('an internal error: 1011', async (t) => {
    const app = await authApp(t, { secret, authorize: () => { throw new Error(`boom ${sensitive.sub}`) } }, { plugin: { rejectWith: 'close' } })
    assertClosed(t, await tryConnect(app.url('/ws'), [], bearer(await mint(secretBytes, {}))), 1011, 'internal error')
  })
})

test("rejectWith: 'close': close reasons carry no token, claim or description", async (t) => {
  const app = await authApp(t, { secret, issuer: 'https://issuer.example' }, { plugin: { rejectWith: 'close' } })
  const token = await mint(secretBytes, { sub: sensitive.sub }, { iss: sensitive.iss })
  const outcome = await tryConnect(app.url('/ws'), [], bearer(token))
  t.same(outcome, { kind: 'closed', code: 4401, reason: 'invalid token' })
  t.notMatch(app.logs.text, sensitive.iss)
  t.notMatch(app.logs.text, token)
})

test("rejectWith: 'close': only a bearer token offered, the client still learns why (no 101 without a subprotocol)", async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const app = await authApp(t, { secret }, { plugin: { rejectWith: 'close' } })
  const outcome = await tryConnect(app.url('/ws'), [`bearer.${token}`])
  // Browsers fail a 101 that selects no subprotocol when some were offered: the refusal must
  // be either an HTTP 400 or a close frame after a 101 that names one.
  if (outcome.kind === 'refused') {
    t.equal(outcome.status, 400)
    t.equal(JSON.parse(outcome.body).code, 'FST_WS_GUARD_PROTOCOL_REQUIRED')
  } else {
    t.same(outcome.kind === 'closed' ? outcome.code : outcome, 4400, 'a close 4400 the client can read')
  }
  t.equal(app.calls, 0)
})

test("rejectWith: 'close': the connection limits answer with 1013 and 4429 close frames", async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, rejectWith: 'close', maxConnections: 2, maxConnectionsPerUser: 1 })
    app.wsRoute('/ws', () => {})
  })
  await openClient(t, url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' })))
  t.same(await tryConnect(url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }))), { kind: 'closed', code: 4429, reason: 'too many connections; retry-after=5000' }, 'over the user limit: 4429')
  await openClient(t, url('/ws'), [], bearer(await mint(secretBytes, { sub: 'bob' })))
  t.same(await tryConnect(url('/ws'), [], bearer(await mint(secretBytes, { sub: 'carol' }))), { kind: 'closed', code: 1013, reason: 'server at capacity; retry-after=5000' }, 'over the process limit: 1013')
})

test('an HTTP refusal closes the TCP connection, even with keep-alive requests pipelined', async (t) => {
  const app = await authApp(t, { secret })
  const { text } = await rawExchange(app.port, handshake('/ws', { Host: `127.0.0.1:${app.port}` }) + handshake('/ws', { Host: `127.0.0.1:${app.port}` }))
  t.equal(text.match(/HTTP\/1\.1 401/g)?.length, 1, 'one answer, then the connection is closed')
  t.equal(app.calls, 0)
})
