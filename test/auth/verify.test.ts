import { KeyObject } from 'node:crypto'
import type { FastifyServerOptions } from 'fastify'
import { CompactEncrypt, CompactSign, exportSPKI, base64url } from 'jose'
import { test, type Test } from 'tap'
import type { WsGuardAuthOptions } from '../../index.js'
import { mapJoseError } from '../../lib/auth/verify.js'
import { authApp, spiedApp, type AuthApp, type AuthAppOptions } from '../helpers/app.js'
import { expectOpen, tryConnect } from '../helpers/clients.js'
import { assertNoLeak, guardLines } from '../helpers/logs.js'
import { handshake, rawExchange } from '../helpers/raw.js'
import { checkChallenge, expectRefused, refusalText } from '../helpers/refusals.js'
import { bearer, hmacToken, joseMessages, keyPair, mint, now, rawToken, secret, secretBytes, sensitive } from '../helpers/tokens.js'

test('attacks refused with 401 invalid_token', async (t) => {
  const rsa = await keyPair('RS256')
  const pem = await exportSPKI(rsa.publicKey)

  for (const [label, auth] of [['secret', { secret }], ['publicKey', { publicKey: pem }]] as const) {
    t.test(`alg: none against a ${label}`, async (t) => {
      const app = await authApp(t, auth)
      for (const alg of ['none', 'None', 'NONE']) {
        const token = rawToken({ alg, typ: 'JWT' }, { sub: 'admin', exp: now(3600) })
        const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(token))
        checkChallenge(t, refusal, 'invalid_token')
        t.match(refusal.body.message, /algorithm is not allowed/, `alg ${alg}`)
      }
      t.equal(app.calls, 0)
    })
  }

  for (const [label, publicKey] of [['PEM', pem], ['KeyObject', KeyObject.from(rsa.publicKey)]] as const) {
    t.test(`HS256 signed with the RSA public key as HMAC secret, against a ${label} publicKey`, async (t) => {
      const app = await authApp(t, { publicKey })
      for (const key of [pem, pem.trim()]) {
        const forged = await mint(new TextEncoder().encode(key), { sub: 'admin' }, { alg: 'HS256' })
        const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(forged))
        t.match(refusal.body.message, /algorithm is not allowed/)
      }
      t.equal(app.calls, 0)
    })
  }

  t.test('an algorithm outside the allowlist', async (t) => {
    const app = await authApp(t, { secret, algorithms: ['HS256'] })
    const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await mint(secretBytes, {}, { alg: 'HS384' })))
    t.match(refusal.body.message, /algorithm is not allowed/)
  })

  t.test('a signature from another key', async (t) => {
    const app = await authApp(t, { publicKey: pem })
    const other = await keyPair('RS256', 'other')
    const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await mint(other.privateKey, { sub: 'admin' })))
    t.match(refusal.body.message, /signature verification failed/)
    // The signature of a real token, grafted on other claims.
    const real = await mint(rsa.privateKey, { sub: 'alice' })
    const [header, , signature] = real.split('.')
    const grafted = `${header}.${base64url.encode(JSON.stringify({ sub: 'admin', exp: now(3600) }))}.${signature}`
    const refusal2 = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(grafted))
    t.match(refusal2.body.message, /signature verification failed/)
  })

  t.test('a JWE (five segments) never reaches jose', async (t) => {
    const app = await spiedApp(t)
    const jwe = await new CompactEncrypt(new TextEncoder().encode(JSON.stringify({ sub: 'alice', exp: now(3600) })))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' })
      .encrypt(new Uint8Array(32))
    t.equal(jwe.split('.').length, 5)
    const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(jwe))
    checkChallenge(t, refusal, 'invalid_token')
    t.match(refusal.body.message, /encrypted tokens \(JWE\) are not accepted/)
    t.equal(app.keyLookups(), 0)
  })

  t.test('malformed tokens and bad base64url', async (t) => {
    const app = await spiedApp(t)
    const pair = await keyPair('ES256')
    const valid = await mint(pair.privateKey, { sub: 'alice' })
    const [header, payload, signature] = valid.split('.') as [string, string, string]
    const signedPayload = (text: string): Promise<string> => new CompactSign(new TextEncoder().encode(text)).setProtectedHeader({ alg: 'ES256' }).sign(pair.privateKey)
    const cases: Array<[string, string]> = [
      ['one segment', 'abcdef'],
      ['two segments', `${header}.${payload}`],
      ['four segments', `${valid}.abc`],
      ['standard base64 characters', `${header}.${payload.slice(0, -2)}+/.${signature}`],
      ['trailing padding', `${valid}==`],
      ['a header that is not base64url JSON', `abc.${payload}.${signature}`],
      ['a payload that is not JSON', await signedPayload('not json')],
      ['a payload that is not a claims object', await signedPayload('[1,2]')],
      ['an empty header', `.${payload}.${signature}`]
    ]
    for (const [label, token] of cases) {
      const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(token))
      t.match(refusal.body.message, /^Invalid token: malformed token$/, label)
    }
    t.equal(app.calls, 0)
  })

  t.test('an unknown critical header parameter', async (t) => {
    const app = await authApp(t, { secret })
    const token = hmacToken({ alg: 'HS256', crit: ['x-unknown'], 'x-unknown': true }, { sub: 'alice', exp: now(3600) })
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(token))
    t.equal(app.calls, 0)
  })
})

test('claims', async (t) => {
  const key = secretBytes
  const expectInvalid = async (t: Test, app: AuthApp, token: string, code: string, message: RegExp) => {
    const refusal = await expectRefused(t, app.url('/ws'), 401, code, [], bearer(token))
    checkChallenge(t, refusal, 'invalid_token')
    t.match(refusal.body.message, message)
    return refusal
  }

  t.test('exp is required', async (t) => {
    const app = await authApp(t, { secret })
    const noExp = await mint(key, { sub: 'alice' }, { exp: false })
    const refusal = await expectInvalid(t, app, noExp, 'FST_WS_GUARD_TOKEN_INVALID', /the "exp" claim is missing/)
    t.match(refusal.headers['www-authenticate'], /error_description="Invalid token: the 'exp' claim is missing"/, 'quotes are never nested in the challenge')
    t.equal(app.calls, 0)
  })

  t.test('allowMissingExp: true accepts tokens without exp', async (t) => {
    const app = await authApp(t, { secret, allowMissingExp: true })
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(key, { sub: 'alice' }, { exp: false })))).user?.sub, 'alice')
    await expectInvalid(t, app, await mint(key, {}, { exp: now(-60) }), 'FST_WS_GUARD_TOKEN_EXPIRED', /expired/)
  })

  t.test('an expired token says so, so that clients refresh', async (t) => {
    const app = await authApp(t, { secret })
    const expired = await mint(key, { sub: 'alice' }, { exp: now(-60) })
    const refusal = await expectInvalid(t, app, expired, 'FST_WS_GUARD_TOKEN_EXPIRED', /expired/)
    t.match(refusal.headers['www-authenticate'], /error="invalid_token", error_description="[^"]*expired[^"]*"/)
    // Within the default clock tolerance (5 s), a just-expired token still passes.
    t.ok((await expectOpen(t, app.url('/ws'), [], bearer(await mint(key, {}, { exp: now(-2) })))).user)
  })

  t.test('nbf in the future', async (t) => {
    const app = await authApp(t, { secret })
    await expectInvalid(t, app, await mint(key, {}, { nbf: now(120) }), 'FST_WS_GUARD_TOKEN_INVALID', /not valid yet/)
    t.ok((await expectOpen(t, app.url('/ws'), [], bearer(await mint(key, {}, { nbf: now(3) })))).user, 'within clockTolerance')
  })

  t.test('nbf with clockTolerance: 0', async (t) => {
    const app = await authApp(t, { secret, clockTolerance: 0 })
    await expectInvalid(t, app, await mint(key, {}, { nbf: now(3) }), 'FST_WS_GUARD_TOKEN_INVALID', /not valid yet/)
  })

  t.test('issuer, audience, subject and typ', async (t) => {
    const app = await authApp(t, { secret, issuer: 'https://issuer.example', audience: ['chat', 'admin'], subject: 'alice', typ: 'at+jwt' })
    const good = { iss: 'https://issuer.example', aud: 'chat', sub: 'alice', typ: 'at+jwt' }
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(key, {}, good)))).user?.aud, 'chat')
    t.ok((await expectOpen(t, app.url('/ws'), [], bearer(await mint(key, {}, { ...good, typ: 'application/at+jwt' })))).user, 'typ is compared as a media type')
    for (const [claim, options, message] of [
      ['iss', { iss: sensitive.iss }, /the "iss" claim is not accepted/],
      ['aud', { aud: sensitive.aud }, /the "aud" claim is not accepted/],
      ['sub', { sub: sensitive.sub }, /the "sub" claim is not accepted/],
      ['typ', { typ: 'JWT' }, /the "typ" claim is not accepted/],
      ['missing iss', { iss: undefined }, /the "iss" claim is missing/],
      ['missing aud', { aud: undefined }, /the "aud" claim is missing/]
    ] as const) {
      const token = await mint(key, {}, { ...good, ...options })
      const refusal = await expectInvalid(t, app, token, 'FST_WS_GUARD_TOKEN_INVALID', message)
      assertNoLeak(t, refusalText(refusal), [token, sensitive.iss, sensitive.aud, sensitive.sub, ...joseMessages], `the ${claim} refusal`)
    }
    t.equal(app.calls, 2)
    assertNoLeak(t, app.logs.text, [sensitive.iss, sensitive.aud, sensitive.sub, ...joseMessages], 'the logs')
  })

  t.test('requiredClaims', async (t) => {
    const app = await authApp(t, { secret, requiredClaims: ['scope', 'exp'] })
    await expectInvalid(t, app, await mint(key, { sub: 'alice' }), 'FST_WS_GUARD_TOKEN_INVALID', /the "scope" claim is missing/)
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(key, { scope: 'chat' })))).user?.scope, 'chat')
    // Listing exp does not make it optional, and not listing it does not either.
    await expectInvalid(t, app, await mint(key, { scope: 'chat' }, { exp: false }), 'FST_WS_GUARD_TOKEN_INVALID', /the "exp" claim is missing/)
  })

  for (const maxTokenAge of [60, '1m']) {
    t.test(`maxTokenAge: ${JSON.stringify(maxTokenAge)}`, async (t) => {
      const app = await authApp(t, { secret, maxTokenAge })
      t.ok((await expectOpen(t, app.url('/ws'), [], bearer(await mint(key, { sub: 'fresh' })))).user)
      // Too old: the client must get a fresh token, as for an expired one.
      await expectInvalid(t, app, await mint(key, {}, { iat: now(-600) }), 'FST_WS_GUARD_TOKEN_EXPIRED', /expired/)
    })
  }

  t.test('maxTokenAge: a token without iat, or issued in the future, is described as such', async (t) => {
    const app = await authApp(t, { secret, maxTokenAge: 60 })
    await expectInvalid(t, app, await mint(key, {}, { iat: false }), 'FST_WS_GUARD_TOKEN_INVALID', /the "iat" claim is missing/)
    const future = await expectInvalid(t, app, await mint(key, {}, { iat: now(3600) }), 'FST_WS_GUARD_TOKEN_INVALID', /iat/)
    t.notMatch(future.body.message, /too old/, 'a token issued in the future is not "too old"')
  })
})

test('maxTokenLength is checked before jose sees the token', async (t) => {
  const pair = await keyPair('ES256')
  const padding = 'x'.repeat(9 * 1024)
  const big = await mint(pair.privateKey, { sub: 'alice', padding })
  t.ok(big.length > 9 * 1024 && big.length < 16 * 1024)

  t.test('a 9 KB token in the Authorization header', async (t) => {
    const app = await spiedApp(t)
    const refusal = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_INVALID_REQUEST', [], bearer(big))
    checkChallenge(t, refusal, 'invalid_request')
    t.match(refusal.body.message, /longer than 8192 characters/)
    t.equal(app.keyLookups(), 0, 'jose never asked for a key')
    const small = await mint(pair.privateKey, { sub: 'alice' })
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(small))).user?.sub, 'alice')
    t.equal(app.keyLookups(), 1)
  })

  t.test('maxTokenLength can be lowered', async (t) => {
    const app = await spiedApp(t, { maxTokenLength: 64 })
    await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_INVALID_REQUEST', [], bearer(await mint(pair.privateKey, { sub: 'alice' })))
    t.equal(app.keyLookups(), 0)
  })

  t.test('maxTokenLength can be raised', async (t) => {
    const app = await spiedApp(t, { maxTokenLength: 16 * 1024 })
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(big))).user?.sub, 'alice')
  })
})

test('a 10 MB token: 400 before jose, cheaply, and the server lives on', async (t) => {
  const pair = await keyPair('ES256')
  // A well-formed JWS: jose would ask for its key if it ever saw it.
  const header = base64url.encode(JSON.stringify({ alg: 'ES256' }))
  const huge = `${header}.${'A'.repeat(10 * 1024 * 1024)}.${'B'.repeat(86)}`
  const good = await mint(pair.privateKey, { sub: 'alice' })

  t.test('Node refuses a 10 MB header with its default 16 KB limit (431)', async (t) => {
    const app = await spiedApp(t)
    const response = await rawExchange(app.port, handshake('/ws', { Host: `127.0.0.1:${app.port}`, Authorization: `Bearer ${huge}` }), { end: true })
    t.equal(response.status, 431)
    t.equal(app.keyLookups(), 0)
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(good))).user?.sub, 'alice', 'the server still serves')
  })

  // Fastify hands `http` to http.createServer(): room for a 10 MB header block.
  const roomy: AuthAppOptions = { server: { http: { maxHeaderSize: 16 * 1024 * 1024 } } as FastifyServerOptions }
  const cases: Array<[string, Partial<WsGuardAuthOptions>, (port: number) => string]> = [
    ['in the Authorization header', {}, (port) => handshake('/ws', { Host: `127.0.0.1:${port}`, Authorization: `Bearer ${huge}` })],
    ['in the subprotocols', {}, (port) => handshake('/ws', { Host: `127.0.0.1:${port}`, 'Sec-WebSocket-Protocol': `bearer, bearer.${huge}` })],
    ['in the query', { tokenSources: ['query'] }, (port) => handshake(`/ws?access_token=${huge}`, { Host: `127.0.0.1:${port}` })]
  ]
  for (const [label, auth, request] of cases) {
    t.test(label, async (t) => {
      const app = await spiedApp(t, auth, roomy)
      const started = process.hrtime.bigint()
      const response = await rawExchange(app.port, request(app.port))
      const elapsed = Number(process.hrtime.bigint() - started) / 1e6
      t.equal(response.status, 400)
      t.equal(JSON.parse(response.body).code, 'FST_WS_GUARD_INVALID_REQUEST')
      t.match(response.headers['www-authenticate'], /error="invalid_request"/)
      t.ok(response.text.length < 2048, 'a short answer that quotes nothing of the token')
      t.equal(app.keyLookups(), 0, 'jose never saw it')
      t.ok(elapsed < 3000, `answered in ${elapsed.toFixed(0)} ms`)
      t.equal(app.calls, 0)
      const lines = guardLines(app.logs)
      t.ok(lines.length > 0)
      t.ok(JSON.stringify(lines).length < 4096, 'the guard\'s lines quote nothing of the token')
      const query = auth.tokenSources === undefined ? [] : ['query']
      const next = await tryConnect(app.url(query.length > 0 ? `/ws?access_token=${good}` : '/ws'), [], query.length > 0 ? {} : bearer(good))
      t.equal(next.kind, 'open', 'the server still serves')
      if (next.kind === 'open') next.socket.close()
    })
  }
})

test('no token, claim or jose text in responses or logs', async (t) => {
  const app = await authApp(t, { secret, issuer: 'https://issuer.example', audience: 'chat' })
  const base = { iss: 'https://issuer.example', aud: 'chat' }
  const tokens = [
    await mint(secretBytes, { sub: sensitive.sub, secretNote: 'SENSITIVE-note' }, { ...base, exp: now(-600) }),
    await mint(secretBytes, { sub: sensitive.sub }, { ...base, iss: sensitive.iss }),
    await mint(secretBytes, { sub: sensitive.sub }, { ...base, aud: sensitive.aud }),
    await mint(new TextEncoder().encode('x'.repeat(40)), { sub: sensitive.sub }, base),
    await mint(secretBytes, { sub: sensitive.sub }, { ...base, nbf: now(3600) }),
    rawToken({ alg: 'none' }, { sub: sensitive.sub })
  ]
  const texts: string[] = []
  for (const token of tokens) {
    const outcome = await tryConnect(app.url('/ws'), [], bearer(token))
    t.equal(outcome.kind, 'refused')
    if (outcome.kind === 'refused') texts.push(JSON.stringify(outcome.headers) + outcome.body)
  }
  const secrets = [...tokens, ...tokens.map((token) => token.split('.')[1]!), sensitive.sub, sensitive.iss, sensitive.aud, 'SENSITIVE-note', ...joseMessages]
  assertNoLeak(t, texts.join('\n'), secrets, 'the responses')
  assertNoLeak(t, app.logs.text, secrets, 'the logs')
  const lines = guardLines(app.logs)
  t.equal(lines.length, tokens.length, 'one guard line per refusal')
  t.ok(lines.every((line) => typeof (line.wsGuard as { code?: unknown }).code === 'string'), 'each carries a code')
})

test('mapJoseError keeps codes, never messages', async (t) => {
  const internal = mapJoseError(new TypeError(`key unusable for ${sensitive.sub}`), 'publicKey') as Error & { code: string, causeCode?: string }
  t.match(internal, { code: 'FST_WS_GUARD_INTERNAL', statusCode: 500, causeCode: 'unknown' }, 'a failing local key is an internal error')
  t.notMatch(internal.message, sensitive.sub)
  t.match(mapJoseError({ code: 'ERR_SOMETHING_NEW', message: sensitive.sub }, 'secret'), { code: 'FST_WS_GUARD_INTERNAL', causeCode: 'ERR_SOMETHING_NEW' })
  t.match(mapJoseError({ code: 'ERR_JWKS_TIMEOUT' }, 'jwksUrl'), { code: 'FST_WS_GUARD_KEYS_UNAVAILABLE', statusCode: 503, causeCode: 'ERR_JWKS_TIMEOUT' })
  t.match(mapJoseError(new Error('resolver down'), 'getKey'), { code: 'FST_WS_GUARD_KEYS_UNAVAILABLE', causeCode: 'unknown' })
  t.match(mapJoseError({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud', reason: 'check_failed', message: `unexpected "aud" claim value ${sensitive.aud}` }, 'secret'), {
    code: 'FST_WS_GUARD_TOKEN_INVALID',
    message: 'Invalid token: the "aud" claim is not accepted'
  })
})
