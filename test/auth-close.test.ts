import { test, type Test } from 'tap'
import WebSocket, { type ClientOptions } from 'ws'
import { bearerProtocols } from '../client.js'
import { authApp, bearer, expectOpen, keyPair, mint, now, publicJwk, secret, secretBytes, sensitive, startJwksServer, type AuthApp } from './auth-helpers.js'
import { tryConnect } from './helpers.js'

/** Connects and expects the upgrade to be followed at once by a close frame. */
async function expectClosed (t: Test, app: AuthApp, code: number, reason: string | RegExp, protocols: string[] = [], options: ClientOptions = {}): Promise<void> {
  const outcome = await tryConnect(app.url('/ws'), protocols, options)
  if (outcome.kind !== 'closed') {
    t.fail(`expected a close ${code}, got ${JSON.stringify(outcome.kind === 'open' ? 'open' : outcome)}`)
    if (outcome.kind === 'open') outcome.socket.terminate()
    return
  }
  t.equal(outcome.code, code, `close code ${code}`)
  if (typeof reason === 'string') t.equal(outcome.reason, reason)
  else t.match(outcome.reason, reason)
  t.ok(Buffer.byteLength(outcome.reason) <= 123, 'the reason fits a close frame')
}

test("rejectWith: 'close' answers with a close frame the browser can read", async (t) => {
  const good = await mint(secretBytes, { sub: sensitive.sub, role: 'member' })
  const app = await authApp(t, {
    secret,
    isRevoked: (user) => user.jti === 'revoked',
    authorize: (user) => user.role !== 'guest'
  }, { plugin: { rejectWith: 'close' } })

  await expectClosed(t, app, 4401, 'authentication required')
  await expectClosed(t, app, 4401, 'invalid token', [], bearer(await mint(new TextEncoder().encode('y'.repeat(40)), {})))
  await expectClosed(t, app, 4401, 'token expired', [], bearer(await mint(secretBytes, {}, { exp: now(-60) })))
  await expectClosed(t, app, 4401, 'token revoked', [], bearer(await mint(secretBytes, { jti: 'revoked' })))
  await expectClosed(t, app, 4403, 'forbidden', [], bearer(await mint(secretBytes, { role: 'guest' })))
  await expectClosed(t, app, 4400, /.+/, bearerProtocols(good), bearer(good))
  await expectClosed(t, app, 4400, /.+/, [], { headers: { authorization: 'Bearer' } })
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
    await expectClosed(t, app, 4401, 'authentication required')
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
    t.equal(app.calls, 0)
  })

  t.test('handshake timeout', async (t) => {
    const app = await authApp(t, { secret, authorize: () => new Promise<boolean>(() => {}) }, { plugin: { rejectWith: 'close', handshakeTimeout: 200 } })
    const outcome = await tryConnect(app.url('/ws'), [], bearer(await mint(secretBytes, {})))
    t.equal(outcome.kind === 'closed' && outcome.code, 1013)
    t.notMatch(outcome.kind === 'closed' ? outcome.reason : '', /^bad request$/, 'not described as the client\'s fault')
    t.equal(app.calls, 0)
  })

  t.test('an internal error: 1011', async (t) => {
    const app = await authApp(t, { secret, authorize: () => { throw new Error(`boom ${sensitive.sub}`) } }, { plugin: { rejectWith: 'close' } })
    await expectClosed(t, app, 1011, 'internal error', [], bearer(await mint(secretBytes, {})))
  })
})

test('close reasons carry no token, claim or description', async (t) => {
  const app = await authApp(t, { secret, issuer: 'https://issuer.example' }, { plugin: { rejectWith: 'close' } })
  const token = await mint(secretBytes, { sub: sensitive.sub }, { iss: sensitive.iss })
  const outcome = await tryConnect(app.url('/ws'), [], bearer(token))
  t.same(outcome, { kind: 'closed', code: 4401, reason: 'invalid token' })
  t.notMatch(app.logs.text, sensitive.iss)
  t.notMatch(app.logs.text, token)
})
