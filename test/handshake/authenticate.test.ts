import { setTimeout as sleep } from 'node:timers/promises'
import { exportSPKI } from 'jose'
import { test } from 'tap'
import WebSocket from 'ws'
import { bearerProtocols } from '../../client.js'
import { authApp, userEcho } from '../helpers/app.js'
import { expectOpen } from '../helpers/clients.js'
import { assertNoLeak, guardLines } from '../helpers/logs.js'
import { checkChallenge, expectRefused } from '../helpers/refusals.js'
import { bearer, keyPair, mint, secret, secretBytes, sensitive } from '../helpers/tokens.js'

test('request.wsUser holds the verified claims', async (t) => {
  const app = await authApp(t, { secret })
  const token = await mint(secretBytes, { sub: 'alice', role: 'admin', scope: ['chat:read'] }, { iss: 'https://issuer.example' })
  const { user } = await expectOpen(t, app.url('/ws'), [], bearer(token))
  t.match(user, { sub: 'alice', role: 'admin', scope: ['chat:read'], iss: 'https://issuer.example', exp: Number, iat: Number })
  t.equal(app.calls, 1)
})

test('auth: false on a route makes it public while the plugin requires auth', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const app = await authApp(t, { secret }, {
    setup: (app) => {
      app.wsRoute('/public', { config: { wsGuard: { auth: false } } }, userEcho())
      app.get('/http', async () => ({ ok: true }))
    }
  })
  const open = await expectOpen(t, app.url('/public'))
  t.equal(open.user, null, 'wsUser is null on a public route')
  const withToken = await expectOpen(t, app.url('/public'), bearerProtocols(token))
  t.equal(withToken.user, null, 'a token is not looked at there')
  t.equal(withToken.protocol, 'bearer', 'and never echoed')
  await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING')
  t.equal((await app.app.inject('/http')).json().ok, true, 'plain HTTP routes are untouched')

  t.test('the public route still runs the other checks', async (t) => {
    await expectRefused(t, app.url('/public'), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', [], { origin: 'https://evil.example' })
  })
})

test('a route can require auth when the plugin does not', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const app = await authApp(t, undefined, {
    setup: (app) => { app.wsRoute('/private', { config: { wsGuard: { auth: { secret } } } }, userEcho()) }
  })
  t.equal((await expectOpen(t, app.url('/ws'))).user, null)
  await expectRefused(t, app.url('/private'), 401, 'FST_WS_GUARD_TOKEN_MISSING')
  t.equal((await expectOpen(t, app.url('/private'), [], bearer(token))).user?.sub, 'alice')
})

test("route-level auth merges over the plugin's and shares its key", async (t) => {
  const rsa = await keyPair('RS256')
  const pem = await exportSPKI(rsa.publicKey)
  const app = await authApp(t, { secret, audience: 'chat', realm: 'chat' }, {
    setup: (app) => {
      app.wsRoute('/admin', { config: { wsGuard: { auth: { audience: 'admin', realm: 'admin' } } } }, userEcho())
      app.wsRoute('/partner', { config: { wsGuard: { auth: { publicKey: pem } } } }, userEcho())
    }
  })
  const chat = await mint(secretBytes, { sub: 'alice' }, { aud: 'chat' })
  const admin = await mint(secretBytes, { sub: 'root' }, { aud: 'admin' })
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(chat))).user?.sub, 'alice')
  const refusal = await expectRefused(t, app.url('/admin'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(chat))
  checkChallenge(t, refusal, 'invalid_token', 'admin')
  t.equal((await expectOpen(t, app.url('/admin'), [], bearer(admin))).user?.sub, 'root', "the plugin's secret verifies on the route")
  await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(admin))

  // A route that names its own key source replaces the plugin's (and keeps its claims checks).
  const partner = await mint(rsa.privateKey, { sub: 'partner' }, { aud: 'chat' })
  t.equal((await expectOpen(t, app.url('/partner'), [], bearer(partner))).user?.sub, 'partner')
  const hmac = await expectRefused(t, app.url('/partner'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(chat))
  t.match(hmac.body.message, /algorithm is not allowed/, "the plugin's secret is not used there")
  await expectRefused(t, app.url('/partner'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await mint(rsa.privateKey, {}, { aud: 'other' })))
})

test('authorize', async (t) => {
  const token = await mint(secretBytes, { sub: sensitive.sub, role: 'member' })

  t.test('false: 403 insufficient_scope, the handler never runs', async (t) => {
    const seen: Array<{ sub: unknown, url: string }> = []
    const app = await authApp(t, {
      secret,
      authorize: async (user, request) => {
        seen.push({ sub: user.sub, url: request.url })
        return user.role === 'admin'
      }
    })
    const refusal = await expectRefused(t, app.url('/ws?room=1'), 403, 'FST_WS_GUARD_FORBIDDEN', [], bearer(token))
    const challenge = checkChallenge(t, refusal, 'insufficient_scope')
    t.match(challenge.params.error_description, /does not grant access/)
    t.same(seen, [{ sub: sensitive.sub, url: '/ws?room=1' }], 'called with the claims and the request')
    t.equal(app.calls, 0)
    t.ok((await expectOpen(t, app.url('/ws'), [], bearer(await mint(secretBytes, { role: 'admin' })))).user)
    assertNoLeak(t, JSON.stringify(refusal.headers) + refusal.raw + app.logs.text, [token, sensitive.sub], 'the refusal and the logs')
  })

  for (const verdict of [undefined, 1, 'yes', null]) {
    t.test(`only true admits (fail closed): ${JSON.stringify(verdict) ?? 'undefined'} refuses`, async (t) => {
      const app = await authApp(t, { secret, authorize: () => verdict as unknown as boolean })
      await expectRefused(t, app.url('/ws'), 403, 'FST_WS_GUARD_FORBIDDEN', [], bearer(token))
    })
  }

  for (const [label, fail] of [
    ['a throwing authorize', () => { throw new Error(`db says no for ${sensitive.sub}`) }],
    ['a rejecting authorize', async () => { throw new TypeError(`cannot read ${sensitive.sub}`) }]
  ] as const) {
    t.test(`${label}: 500 FST_WS_GUARD_INTERNAL, nothing of its message leaked`, async (t) => {
      const app = await authApp(t, { secret, authorize: fail })
      const refusal = await expectRefused(t, app.url('/ws'), 500, 'FST_WS_GUARD_INTERNAL', [], bearer(token))
      t.equal(refusal.body.message, 'The WebSocket handshake failed on an internal error')
      assertNoLeak(t, JSON.stringify(refusal.headers) + refusal.raw + app.logs.text, [sensitive.sub, 'db says no', 'cannot read', token], 'the response and the logs')
      t.match(app.logs.lines.filter((line) => line.level === 50), [{ wsGuard: { err: { name: String } } }], 'an error line with the error name only')
      t.equal(app.calls, 0)
    })
  }

  for (const reason of [undefined, null, 'a string']) {
    t.test(`an authorize that rejects with ${String(reason)} still answers 500 (and does not crash the process)`, async (t) => {
      const app = await authApp(t, { secret, authorize: () => Promise.reject(reason) }, { plugin: { handshakeTimeout: 1000 } })
      await expectRefused(t, app.url('/ws'), 500, 'FST_WS_GUARD_INTERNAL', [], bearer(token))
    })
  }

  t.test('an authorize that never resolves: 503 at handshakeTimeout', async (t) => {
    const app = await authApp(t, { secret, authorize: () => new Promise<boolean>(() => {}) }, { plugin: { handshakeTimeout: 200 } })
    const started = Date.now()
    const refusal = await expectRefused(t, app.url('/ws'), 503, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT', [], bearer(token))
    const elapsed = Date.now() - started
    t.ok(elapsed >= 180 && elapsed < 1500, `answered after ${elapsed} ms`)
    t.equal(refusal.headers['retry-after'], '5')
    t.equal(app.calls, 0)
  })
})

test('isRevoked', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice', jti: 'token-1' })
  const revoked = new Set(['token-1'])
  const app = await authApp(t, { secret, isRevoked: async (user) => revoked.has(String(user.jti)) })
  const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_REVOKED', [], bearer(token))
  const challenge = checkChallenge(t, refusal, 'invalid_token')
  t.match(challenge.params.error_description, /revoked/)
  t.equal(app.calls, 0)
  revoked.clear()
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(token))).user?.jti, 'token-1')

  t.test('anything but false counts as revoked (fail closed)', async (t) => {
    const app = await authApp(t, { secret, isRevoked: () => undefined as unknown as boolean })
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_REVOKED', [], bearer(token))
  })

  t.test('an isRevoked that never resolves: 503 at handshakeTimeout', async (t) => {
    const app = await authApp(t, { secret, isRevoked: () => new Promise<boolean>(() => {}) }, { route: { config: { wsGuard: { handshakeTimeout: 200 } } } })
    await expectRefused(t, app.url('/ws'), 503, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT', [], bearer(token))
  })
})

test('a client that leaves while authorize runs is never upgraded', async (t) => {
  let release: (value: boolean) => void = () => {}
  let asked: () => void = () => {}
  const askedPromise = new Promise<void>((resolve) => { asked = resolve })
  let hold = true
  const app = await authApp(t, {
    secret,
    authorize: () => hold ? new Promise<boolean>((resolve) => { release = resolve; asked() }) : true
  })
  const socket = new WebSocket(app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' })))
  socket.on('error', () => {})
  await askedPromise
  socket.terminate()
  await sleep(20)
  release(true)
  await sleep(50)
  t.equal(app.calls, 0, 'the handler never ran')
  t.equal(guardLines(app.logs).length, 0, 'nothing to refuse either')
  hold = false
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'bob' })))).user?.sub, 'bob', 'the server carries on')
})
