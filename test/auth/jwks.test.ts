import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { RemoteKeysMonitor } from '../../lib/auth/keys.js'
import { authApp } from '../helpers/app.js'
import { expectOpen, tryConnect } from '../helpers/clients.js'
import { assertNoLeak, guardLines } from '../helpers/logs.js'
import { freePort } from '../helpers/raw.js'
import { checkChallenge, expectRefused } from '../helpers/refusals.js'
import { bearer, joseMessages, keyPair, mint, publicJwk, secretBytes, startJwksServer } from '../helpers/tokens.js'

test('jwksUrl: tokens verified with keys from a real JWK Set endpoint', async (t) => {
  const rsa = await keyPair('RS256')
  const ec = await keyPair('ES256')
  const jwks = await startJwksServer(t, [await publicJwk(rsa, 'rsa-1'), await publicJwk(ec, 'ec-1')])
  const app = await authApp(t, { jwksUrl: new URL(jwks.url) })
  t.equal(jwks.requests, 0, 'fetched lazily')
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(rsa.privateKey, { sub: 'alice' }, { kid: 'rsa-1' })))).user?.sub, 'alice')
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(ec.privateKey, { sub: 'bob' }, { kid: 'ec-1' })))).user?.sub, 'bob')
  t.equal(jwks.requests, 1, 'the set is fetched once and cached')

  t.test('HMAC is never accepted with a JWK Set, and never costs a fetch', async (t) => {
    const jwks = await startJwksServer(t, [{ kty: 'oct', k: Buffer.from(secretBytes).toString('base64url'), kid: 'hmac' }])
    const app = await authApp(t, { jwksUrl: jwks.url })
    const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await mint(secretBytes, {}, { kid: 'hmac' })))
    t.match(refusal.body.message, /algorithm is not allowed/)
    t.equal(jwks.requests, 0)
  })

  t.test('a kid whose key does not fit the algorithm', async (t) => {
    const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await mint(ec.privateKey, {}, { kid: 'rsa-1' })))
    checkChallenge(t, refusal, 'invalid_token')
    t.match(refusal.body.message, /no key matches the token/)
  })

  t.test('a set with two keys for one kid', async (t) => {
    const other = await keyPair('RS256', 'other')
    const jwks = await startJwksServer(t, [await publicJwk(rsa, 'dup'), await publicJwk(other, 'dup')])
    const app = await authApp(t, { jwksUrl: jwks.url })
    const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await mint(rsa.privateKey, {}, { kid: 'dup' })))
    t.match(refusal.body.message, /no key matches the token/)
  })
})

test('key rotation: a new kid is accepted after a refetch', async (t) => {
  const first = await keyPair('ES256', 'first')
  const second = await keyPair('ES256', 'second')
  const jwks = await startJwksServer(t, [await publicJwk(first, 'k1')])
  const app = await authApp(t, { jwksUrl: jwks.url, jwks: { cooldownDuration: 100 } })
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(first.privateKey, { sub: 'a' }, { kid: 'k1' })))).user?.sub, 'a')
  t.equal(jwks.requests, 1)

  // The issuer rotates: the set now holds the new key (and still the old one).
  jwks.keys = [await publicJwk(first, 'k1'), await publicJwk(second, 'k2')]
  const rotated = await mint(second.privateKey, { sub: 'b' }, { kid: 'k2' })
  const early = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(rotated))
  t.match(early.body.message, /no key matches the token/, 'within the cooldown the set is not refetched')
  t.equal(jwks.requests, 1)

  await sleep(150)
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(rotated))).user?.sub, 'b', 'the new kid is accepted')
  t.equal(jwks.requests, 2, 'after exactly one refetch')
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(first.privateKey, { sub: 'c' }, { kid: 'k1' })))).user?.sub, 'c', 'the old key still works')
  t.equal(jwks.requests, 2)
})

test('a flood of unknown kids triggers at most one refetch per cooldown', async (t) => {
  const pair = await keyPair('ES256')
  const jwks = await startJwksServer(t, [await publicJwk(pair, 'known')])
  // Long enough that 25 handshakes fit in one cooldown on a loaded machine.
  const app = await authApp(t, { jwksUrl: jwks.url, jwks: { cooldownDuration: 2000 } })
  t.ok((await expectOpen(t, app.url('/ws'), [], bearer(await mint(pair.privateKey, {}, { kid: 'known' })))).user)
  t.equal(jwks.requests, 1)

  const flood = async (): Promise<string[]> => {
    const tokens = await Promise.all(Array.from({ length: 25 }, (_, i) => mint(pair.privateKey, { n: i }, { kid: `unknown-${i}-${Math.random()}` })))
    const outcomes = await Promise.all(tokens.map((token) => tryConnect(app.url('/ws'), [], bearer(token))))
    return outcomes.map((outcome) => outcome.kind === 'refused' ? `${outcome.status} ${JSON.parse(outcome.body).code}` : outcome.kind)
  }
  // Within the cooldown of the first fetch: no refetch at all.
  t.same(new Set(await flood()), new Set(['401 FST_WS_GUARD_TOKEN_INVALID']))
  t.equal(jwks.requests, 1, 'no refetch within the cooldown')

  await sleep(2100)
  t.same(new Set(await flood()), new Set(['401 FST_WS_GUARD_TOKEN_INVALID']))
  t.equal(jwks.requests, 2, 'one refetch for 25 unknown kids')
  t.same(new Set(await flood()), new Set(['401 FST_WS_GUARD_TOKEN_INVALID']))
  t.equal(jwks.requests, 2, 'and none more within the new cooldown')
  t.equal(app.calls, 1)
})

test('an unavailable JWK Set fails closed: 503 FST_WS_GUARD_KEYS_UNAVAILABLE with Retry-After', async (t) => {
  const pair = await keyPair('ES256')
  const token = await mint(pair.privateKey, { sub: 'alice' }, { kid: 'k1' })

  t.test('a hanging JWKS: 503 within timeoutDuration', async (t) => {
    const jwks = await startJwksServer(t, [await publicJwk(pair, 'k1')])
    jwks.mode = 'hang'
    const app = await authApp(t, { jwksUrl: jwks.url, jwks: { timeoutDuration: 200 } })
    const started = Date.now()
    const refusal = await expectRefused(t, app.url('/ws'), 503, 'FST_WS_GUARD_KEYS_UNAVAILABLE', [], bearer(token))
    const elapsed = Date.now() - started
    t.ok(elapsed >= 180 && elapsed < 1500, `answered after ${elapsed} ms`)
    t.equal(refusal.headers['retry-after'], '5')
    t.equal(refusal.headers['www-authenticate'], undefined, 'no challenge: the client did nothing wrong')
    t.match(guardLines(app.logs), [
      { level: 40, wsGuard: { code: 'FST_WS_GUARD_KEYS_UNAVAILABLE', jwksHost: new URL(jwks.url).host, cause: 'timeout' } },
      { level: 30, wsGuard: { code: 'FST_WS_GUARD_KEYS_UNAVAILABLE', statusCode: 503, causeCode: 'timeout' } }
    ])
    t.equal(app.calls, 0)
  })

  for (const [mode, causeCode] of [['error', 'HTTP 500'], ['not-json', 'not JSON']] as const) {
    t.test(`a JWKS answering ${mode === 'error' ? '500' : 'a body that is not JSON'}`, async (t) => {
      const jwks = await startJwksServer(t, [await publicJwk(pair, 'k1')])
      jwks.mode = mode
      const app = await authApp(t, { jwksUrl: jwks.url })
      const refusal = await expectRefused(t, app.url('/ws'), 503, 'FST_WS_GUARD_KEYS_UNAVAILABLE', [], bearer(token))
      t.equal(refusal.headers['retry-after'], '5')
      t.match(refusal.body.message, /keys to verify tokens are unavailable/)
      assertNoLeak(t, JSON.stringify(refusal.headers) + refusal.raw + app.logs.text, [token, jwks.url, 'maintenance', 'boom', ...joseMessages], 'the response and the logs')
      t.match(guardLines(app.logs), [{ level: 40, wsGuard: { cause: causeCode } }, { level: 30, wsGuard: { code: 'FST_WS_GUARD_KEYS_UNAVAILABLE', causeCode } }])
      // Once the endpoint is back, the next handshake fetches again and succeeds.
      jwks.mode = 'ok'
      t.equal((await expectOpen(t, app.url('/ws'), [], bearer(token))).user?.sub, 'alice', 'recovers')
      t.equal(app.calls, 1)
    })
  }

  t.test('a JWKS that is no JWK Set', async (t) => {
    const jwks = await startJwksServer(t, [])
    ;(jwks as { keys: unknown }).keys = 'nope'
    const app = await authApp(t, { jwksUrl: jwks.url })
    await expectRefused(t, app.url('/ws'), 503, 'FST_WS_GUARD_KEYS_UNAVAILABLE', [], bearer(token))
    t.match(guardLines(app.logs), [{ level: 40, wsGuard: { cause: 'not a JSON Web Key Set' } }])
  })

  t.test('an unreachable JWKS', async (t) => {
    const host = `127.0.0.1:${await freePort()}`
    const app = await authApp(t, { jwksUrl: `http://${host}/jwks.json` })
    await expectRefused(t, app.url('/ws'), 503, 'FST_WS_GUARD_KEYS_UNAVAILABLE', [], bearer(token))
    t.match(guardLines(app.logs), [{ level: 40, wsGuard: { jwksHost: host, cause: 'connection refused' } }, { level: 30, wsGuard: { causeCode: 'connection refused' } }])
  })

  t.test('an unreachable JWKS is told once per cooldown, however many handshakes fail', async (t) => {
    const host = `127.0.0.1:${await freePort()}`
    const app = await authApp(t, { jwksUrl: `http://${host}/jwks.json`, jwks: { cooldownDuration: 60_000 } })
    for (let i = 0; i < 3; i++) await expectRefused(t, app.url('/ws'), 503, 'FST_WS_GUARD_KEYS_UNAVAILABLE', [], bearer(token))
    const warnings = app.logs.lines.filter((line) => line.level === 40)
    t.equal(warnings.length, 1, 'one warn line')
    t.match(warnings[0], { msg: `websocket guard cannot use the JSON Web Key Set at ${host}: connection refused; every authenticated handshake is refused with 503 meanwhile` })
    t.equal(guardLines(app.logs).filter((line) => line.level === 30).length, 3, 'and one info line per refusal')
  })

  t.test('what a failure is called, whatever jose or fetch throws', async (t) => {
    const monitor = new RemoteKeysMonitor(new URL('https://keys.example.com/jwks.json'), 1000)
    t.equal(monitor.host, 'keys.example.com')
    t.equal(monitor.cause({ name: 'TypeError', cause: { code: 'ENOTFOUND' } }), 'ENOTFOUND')
    t.equal(monitor.cause({ code: 'ERR_SOMETHING_ELSE' }), 'ERR_SOMETHING_ELSE')
    t.equal(monitor.cause(new Error('no code')), 'unknown')
  })
})
