import { createSecretKey, generateKeyPairSync, KeyObject } from 'node:crypto'
import Fastify from 'fastify'
import { exportJWK, exportSPKI, SignJWT, type CryptoKey } from 'jose'
import { test, type Test } from 'tap'
import wsGuard, { type WsGuardOptions } from '../../index.js'
import { authApp, registrationError, userEcho } from '../helpers/app.js'
import { expectOpen } from '../helpers/clients.js'
import { guardLines } from '../helpers/logs.js'
import { checkChallenge, expectRefused } from '../helpers/refusals.js'
import { bearer, keyPair, mint, secret, secretBytes } from '../helpers/tokens.js'

/** The error registering the guard with `options` and a `/ws` route fails with (one saying it succeeded otherwise). */
async function keyError (t: Test, options: WsGuardOptions, route: Record<string, unknown> = {}): Promise<Error & { code?: string }> {
  return await registrationError(t, options, (app) => { app.wsRoute('/ws', route, userEcho()) }) ?? new Error('registration succeeded')
}

async function expectRegistrationError (t: Test, options: WsGuardOptions, message: RegExp, route: Record<string, unknown> = {}): Promise<void> {
  const err = await keyError(t, options, route)
  t.equal(err.code, 'FST_WS_GUARD_INVALID_OPTION', 'a registration error')
  t.match(err.message, message)
}

test('secret: a string or a Uint8Array, HS256/384/512 by default', async (t) => {
  for (const [label, key] of [['string', secret], ['Uint8Array', secretBytes]] as const) {
    t.test(`secret as a ${label}`, async (t) => {
      const app = await authApp(t, { secret: key })
      for (const alg of ['HS256', 'HS384', 'HS512']) {
        const token = await mint(secretBytes, { sub: 'alice' }, { alg })
        const { user } = await expectOpen(t, app.url('/ws'), [], bearer(token))
        t.equal(user?.sub, 'alice', `${alg} accepted`)
      }
      // Another secret: the signature does not verify.
      const forged = await mint(new TextEncoder().encode('another-secret-0123456789-abcdefghijklmn'), { sub: 'alice' })
      const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(forged))
      checkChallenge(t, refusal, 'invalid_token')
      t.match(refusal.body.message, /signature/)
      // Asymmetric algorithms never fit a secret.
      const rsa = await keyPair('RS256')
      const rs256 = await mint(rsa.privateKey, { sub: 'alice' })
      const wrongAlg = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(rs256))
      t.match(wrongAlg.body.message, /algorithm is not allowed/)
      t.equal(app.calls, 3, 'the handler ran only for the accepted tokens')
    })
  }
})

test('publicKey: PEM SPKI, JWK, KeyObject and CryptoKey, for RS256, PS256, ES256 and EdDSA', async (t) => {
  const forms: Record<string, (key: CryptoKey) => Promise<unknown>> = {
    'PEM SPKI': (key) => exportSPKI(key),
    JWK: (key) => exportJWK(key),
    KeyObject: async (key) => KeyObject.from(key),
    CryptoKey: async (key) => key
  }
  for (const alg of ['RS256', 'PS256', 'ES256', 'EdDSA']) {
    const pair = await keyPair(alg)
    const token = await mint(pair.privateKey, { sub: `user-${alg}` }, { alg })
    const other = await keyPair(alg, 'other')
    const forged = await mint(other.privateKey, { sub: `user-${alg}` }, { alg })
    for (const [form, convert] of Object.entries(forms)) {
      t.test(`${alg} key as ${form}`, async (t) => {
        const publicKey = await convert(pair.publicKey) as string
        const app = await authApp(t, { publicKey })
        const { user } = await expectOpen(t, app.url('/ws'), [], bearer(token))
        t.equal(user?.sub, `user-${alg}`, 'the verified claims reach the handler')
        const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(forged))
        t.match(refusal.body.message, /signature verification failed/, 'a token signed by another key is refused')
        t.equal(app.calls, 1)
      })
    }
  }
})

test('publicKey: the default algorithms are those that fit the key', async (t) => {
  t.test('an RSA key accepts RS* and PS*, never HS*', async (t) => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const app = await authApp(t, { publicKey })
    for (const alg of ['RS256', 'RS512', 'PS256', 'PS384']) {
      const token = await new SignJWT({ sub: alg }).setProtectedHeader({ alg }).setExpirationTime('1h').sign(privateKey)
      const { user } = await expectOpen(t, app.url('/ws'), [], bearer(token))
      t.equal(user?.sub, alg, `${alg} accepted`)
    }
    const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await mint(secretBytes, {}, { alg: 'HS256' })))
    t.match(refusal.body.message, /algorithm is not allowed/)
  })

  t.test('an RSA-PSS key is refused at registration: jose cannot verify with it on Node 20, and PS256 works with a plain RSA key', async (t) => {
    const { publicKey } = generateKeyPairSync('rsa-pss', { modulusLength: 2048 })
    await expectRegistrationError(t, { auth: { publicKey } }, /is a rsa-pss key, which no supported JWS algorithm verifies; use RSA \(2048\+ bits, also for PS256\)/)
  })

  for (const [curve, alg, wrong] of [['P-384', 'ES384', 'ES256'], ['P-521', 'ES512', 'ES384'], ['P-256', 'ES256', 'ES512']] as const) {
    t.test(`an EC ${curve} key accepts ${alg} only`, async (t) => {
      const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: curve })
      t.test(`${alg} verifies`, async (t) => {
        const app = await authApp(t, { publicKey })
        const token = await new SignJWT({ sub: curve }).setProtectedHeader({ alg }).setExpirationTime('1h').sign(privateKey)
        t.equal((await expectOpen(t, app.url('/ws'), [], bearer(token))).user?.sub, curve, `${alg} with ${curve}`)
      })
      t.test(`${wrong} does not fit`, (t) => expectRegistrationError(t, { auth: { publicKey, algorithms: [wrong] } }, new RegExp(`"${wrong}" does not fit the public key's type; it fits ${alg}$`)))
    })
  }

  t.test('an Ed25519 key accepts EdDSA and Ed25519', async (t) => {
    const pair = await keyPair('EdDSA')
    const app = await authApp(t, { publicKey: KeyObject.from(pair.publicKey) })
    for (const alg of ['EdDSA', 'Ed25519']) {
      t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(pair.privateKey, { sub: alg }, { alg })))).user?.sub, alg)
    }
  })
})

test('algorithms: an explicit allowlist narrows what the key would accept', async (t) => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const app = await authApp(t, { publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string, algorithms: ['PS256'] })
  const signed = (alg: string): Promise<string> => new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg }).setExpirationTime('1h').sign(privateKey)
  const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await signed('RS256')))
  checkChallenge(t, refusal, 'invalid_token')
  t.match(refusal.body.message, /algorithm is not allowed/, 'an RS256 token signed by the very key is refused')
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await signed('PS256')))).user?.sub, 'alice')
  t.equal(app.calls, 1)

  t.test('with a secret', async (t) => {
    const app = await authApp(t, { secret, algorithms: ['HS512'] })
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await mint(secretBytes, {}, { alg: 'HS256' })))
    t.ok((await expectOpen(t, app.url('/ws'), [], bearer(await mint(secretBytes, {}, { alg: 'HS512' })))).user)
  })
})

test('getKey: a jose key resolver, asymmetric algorithms unless listed', async (t) => {
  const pair = await keyPair('ES256')
  const seen: Array<{ alg: string, kid?: string | undefined }> = []
  const app = await authApp(t, {
    getKey: async (header) => {
      seen.push({ alg: header.alg, kid: header.kid })
      return pair.publicKey
    }
  })
  const token = await mint(pair.privateKey, { sub: 'resolved' }, { kid: 'k1' })
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(token))).user?.sub, 'resolved')
  t.same(seen, [{ alg: 'ES256', kid: 'k1' }], 'the resolver got the protected header')
  await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(await mint(secretBytes, {}, { alg: 'HS256' })))
  t.equal(seen.length, 1, 'HMAC is refused before the resolver is asked')

  t.test('HMAC with getKey when listed explicitly', async (t) => {
    const app = await authApp(t, { getKey: () => secretBytes, algorithms: ['HS256'] })
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'h' })))).user?.sub, 'h')
  })

  t.test('a resolver that fails answers 503 (fail closed)', async (t) => {
    const app = await authApp(t, { getKey: () => { throw new Error('database down: SENSITIVE') } })
    const refusal = await expectRefused(t, app.url('/ws'), 503, 'FST_WS_GUARD_KEYS_UNAVAILABLE', [], bearer(token))
    t.equal(refusal.headers['retry-after'], '5')
    t.notMatch(refusal.raw, /SENSITIVE/)
    t.notMatch(app.logs.text, /SENSITIVE/, 'the resolver\'s message is not logged')
    t.match(guardLines(app.logs), [{ wsGuard: { code: 'FST_WS_GUARD_KEYS_UNAVAILABLE', causeCode: 'unknown' } }], 'the log line carries a code, not the message')
    t.equal(app.calls, 0)
  })
})

test('registration errors', async (t) => {
  const rsa = await keyPair('RS256')
  const pem = await exportSPKI(rsa.publicKey)
  const cases: Array<[string, WsGuardOptions, RegExp]> = [
    ['two key sources', { auth: { secret, publicKey: pem } }, /needs exactly one key source.*got secret and publicKey/],
    ['no key source', { auth: {} }, /needs exactly one key source.*got none/],
    ['a short secret', { auth: { secret: 'too-short' } }, /secret is 9 bytes; HMAC secrets need at least 32/],
    ['a short Uint8Array secret', { auth: { secret: new Uint8Array(31) } }, /secret is 31 bytes/],
    ['a secret of the wrong type', { auth: { secret: 42 as unknown as string } }, /secret must be a string or a Uint8Array, got number/],
    ['a bad PEM', { auth: { publicKey: '-----BEGIN PUBLIC KEY-----\nbm9wZQ==\n-----END PUBLIC KEY-----\n' } }, /publicKey must be a PEM public key.*could not be imported/],
    ['a publicKey of the wrong type', { auth: { publicKey: 42 as unknown as string } }, /could not be imported from number/],
    ['a private KeyObject', { auth: { publicKey: KeyObject.from(rsa.privateKey) } }, /publicKey is a private key; pass the public key/],
    ['a private CryptoKey', { auth: { publicKey: rsa.privateKey } }, /publicKey is a private key/],
    ['a secret KeyObject as publicKey', { auth: { publicKey: createSecretKey(secretBytes) } }, /publicKey is a secret key/],
    ['HS256 listed with a publicKey', { auth: { publicKey: pem, algorithms: ['HS256'] } }, /"HS256" does not fit the publicKey key source \(HMAC is never accepted with public keys or a JWK Set\)/],
    ['HS256 listed with a jwksUrl', { auth: { jwksUrl: 'https://issuer.example/jwks.json', algorithms: ['RS256', 'HS256'] } }, /"HS256" does not fit the jwksUrl key source \(HMAC/],
    ['RS256 listed with a secret', { auth: { secret, algorithms: ['RS256'] } }, /"RS256" does not fit the secret key source$/],
    ['ES256 listed with an RSA key', { auth: { publicKey: pem, algorithms: ['ES256'] } }, /"ES256" does not fit the public key's type/],
    ['an unknown algorithm', { auth: { secret, algorithms: ['XS256'] } }, /"XS256" is not a supported JWS algorithm/],
    ['alg none', { auth: { secret, algorithms: ['none'] } }, /"none" is not a supported JWS algorithm/],
    ['an empty allowlist', { auth: { secret, algorithms: [] } }, /algorithms must be a non-empty array/],
    ['an allowlist that is a string', { auth: { secret, algorithms: 'HS256' as unknown as string[] } }, /algorithms must be a non-empty array/],
    ['an unknown token source', { auth: { secret, tokenSources: ['header', 'body' as 'header'] } }, /tokenSources must be an array of 'header', 'protocol', 'cookie', 'query', got an array/],
    ['tokenSources as a string', { auth: { secret, tokenSources: 'header' as unknown as ['header'] } }, /tokenSources must be an array.*got the string "header"/],
    ['no token source at all', { auth: { secret, tokenSources: [] } }, /tokenSources is empty and there is no getToken/],
    ['cookie auth with allowMissingOrigin: true', { allowMissingOrigin: true, auth: { secret, tokenSources: ['cookie'] } }, /cookie auth is ambient.*remove allowMissingOrigin: true/],
    ["cookie auth with origins: '*'", { origins: '*', auth: { secret, tokenSources: ['header', 'cookie'] } }, /cookie auth is ambient.*remove origins: '\*'/],
    ['jwks without jwksUrl', { auth: { secret, jwks: { timeoutDuration: 100 } } }, /auth\.jwks only applies with jwksUrl/],
    ['a jwksUrl that is not a URL', { auth: { jwksUrl: 'not a url' } }, /jwksUrl must be an absolute http\(s\) URL, got the string "not a url"/],
    ['a jwksUrl that is not http(s)', { auth: { jwksUrl: 'file:///etc/jwks.json' } }, /jwksUrl must be an http\(s\) URL, got file:/],
    ['a negative jwks.timeoutDuration', { auth: { jwksUrl: 'https://issuer.example/jwks.json', jwks: { timeoutDuration: -1 } } }, /jwks\.timeoutDuration/],
    ['an unknown jwks option', { auth: { jwksUrl: 'https://issuer.example/jwks.json', jwks: { timeout: 100 } as unknown as { timeoutDuration: number } } }, /unknown option options\.auth\.jwks\.timeout/],
    ['jwks that is not an object', { auth: { jwksUrl: 'https://issuer.example/jwks.json', jwks: 'fast' as unknown as { timeoutDuration: number } } }, /jwks must be an object/],
    ['a getKey that is not a function', { auth: { getKey: 'key' as unknown as () => Uint8Array } }, /getKey must be a function \(protectedHeader, token\) => key/],
    ['a realm with a quote', { auth: { secret, realm: 'say "hi"' } }, /realm must be printable ASCII without quotes or backslashes/],
    ['a realm with a newline', { auth: { secret, realm: 'a\r\nSet-Cookie: x=1' } }, /realm must be printable ASCII/],
    ['an empty realm', { auth: { secret, realm: '' } }, /realm must be a non-empty string/],
    ['an unknown auth option', { auth: { secret, audiences: ['x'] } as unknown as WsGuardOptions['auth'] }, /unknown option options\.auth\.audiences/],
    ['auth that is not an object', { auth: 'secret' as unknown as false }, /options\.auth must be an object, got the string/],
    ['an empty issuer', { auth: { secret, issuer: '' } }, /issuer must be a non-empty string/],
    ['an audience list with a number', { auth: { secret, audience: ['a', 1 as unknown as string] } }, /audience must be an array of non-empty strings/],
    ['a subject that is not a string', { auth: { secret, subject: 7 as unknown as string } }, /subject must be a non-empty string, got number/],
    ['an empty typ', { auth: { secret, typ: '' } }, /typ must be a non-empty string/],
    ['a negative maxTokenAge', { auth: { secret, maxTokenAge: -1 } }, /maxTokenAge must be a number of seconds or a span such as '2h'/],
    ['a maxTokenAge that is no span', { auth: { secret, maxTokenAge: 'soon' } }, /maxTokenAge must be a number of seconds/],
    ['requiredClaims as a string', { auth: { secret, requiredClaims: 'sub' as unknown as string[] } }, /requiredClaims must be an array of non-empty strings/],
    ['allowMissingExp not a boolean', { auth: { secret, allowMissingExp: 'yes' as unknown as boolean } }, /allowMissingExp must be true or false/],
    ['a negative clockTolerance', { auth: { secret, clockTolerance: -1 } }, /clockTolerance must be a whole number >= 0/],
    ['a tiny maxTokenLength', { auth: { secret, maxTokenLength: 8 } }, /maxTokenLength must be a whole number >= 16/],
    ['a cookieName with a space', { auth: { secret, tokenSources: ['cookie'], cookieName: 'a b' } }, /cookieName must be a non-empty name without spaces/],
    ['an empty queryParam', { auth: { secret, tokenSources: ['query'], queryParam: '' } }, /queryParam must be a non-empty name/],
    ['an authorize that is not a function', { auth: { secret, authorize: true as unknown as () => boolean } }, /authorize must be a function/],
    ['an isRevoked that is not a function', { auth: { secret, isRevoked: {} as unknown as () => boolean } }, /isRevoked must be a function/],
    ['a getToken that is not a function', { auth: { secret, getToken: 'x' as unknown as () => string } }, /getToken must be a function/],
    ['a cache of max 0', { auth: { secret, cache: { max: 0 } } }, /cache\.max must be a whole number >= 1/],
    ['an unknown cache option', { auth: { secret, cache: { ttl: 5 } as unknown as { max: number } } }, /unknown option options\.auth\.cache\.ttl/],
    ['a cache that is a string', { auth: { secret, cache: 'yes' as unknown as boolean } }, /cache must be an object/],
    ['closeOnExpiry not a boolean', { auth: { secret, closeOnExpiry: 1 as unknown as boolean } }, /closeOnExpiry must be true or false/]
  ]
  for (const [label, options, message] of cases) {
    t.test(label, (t) => expectRegistrationError(t, options, message))
  }

  t.test('route-level auth is validated at declaration, with the route named', async (t) => {
    await expectRegistrationError(t, { auth: { secret } }, /config\.wsGuard of GET \/ws\.auth\.publicKey must be a PEM public key/, {
      config: { wsGuard: { auth: { publicKey: 'nope' } } }
    })
    await expectRegistrationError(t, { auth: { secret, tokenSources: ['cookie'] } }, /config\.wsGuard of GET \/ws: cookie auth is ambient/, {
      config: { wsGuard: { allowMissingOrigin: true } }
    })
    await expectRegistrationError(t, { auth: { secret } }, /config\.wsGuard of GET \/ws\.auth\.algorithms: "RS256" does not fit the secret key source/, {
      config: { wsGuard: { auth: { algorithms: ['RS256'] } } }
    })
  })

  t.test('a cookie source is fine with an origin check in place', async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(wsGuard, { origins: ['https://app.example.com'], auth: { secret, tokenSources: ['cookie'] } })
    app.wsRoute('/ws', userEcho())
    await app.ready()
    t.ok(app.hasRoute({ method: 'GET', url: '/ws' }), 'registered')
  })
})

test('a private key given as publicKey is refused at registration, whatever its form', async (t) => {
  // createPublicKey() quietly derives the public half of a private PEM: a config that carries
  // the signing key to every verifier must not be accepted.
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  for (const [form, key] of [
    ['PKCS#8 PEM', privateKey.export({ type: 'pkcs8', format: 'pem' })],
    ['PKCS#1 PEM', privateKey.export({ type: 'pkcs1', format: 'pem' })],
    ['private JWK', privateKey.export({ format: 'jwk' })]
  ] as const) {
    t.test(form, async (t) => {
      const err = await keyError(t, { auth: { publicKey: key as string } })
      t.equal(err.code, 'FST_WS_GUARD_INVALID_OPTION')
      t.match(err.message, /private|could not be imported/)
      const material = typeof key === 'string' ? key.split('\n')[1]! : String((key as { d: string }).d)
      t.notOk(err.message.includes(material.slice(0, 24)), 'the key material is not quoted')
    })
  }
})

test('a public key that no supported JWS algorithm can verify with is refused at registration', async (t) => {
  // Accepted, every token would fail on an internal error (500) instead.
  const keys: Array<[string, KeyObject]> = [
    ['X25519 (a key agreement key)', generateKeyPairSync('x25519').publicKey],
    ['Ed448 (jose 6 verifies EdDSA with Ed25519 only)', generateKeyPairSync('ed448').publicKey],
    ['DSA', generateKeyPairSync('dsa', { modulusLength: 2048, divisorLength: 256 }).publicKey],
    ['EC secp256k1', generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey],
    ['RSA 1024 (jose requires 2048 bits)', generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey]
  ]
  for (const [label, publicKey] of keys) {
    t.test(label, async (t) => {
      const err = await keyError(t, { auth: { publicKey } })
      t.equal(err.code, 'FST_WS_GUARD_INVALID_OPTION', 'the key is refused when the app starts, not on every request')
    })
  }
})
