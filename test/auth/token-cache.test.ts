import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { VerifiedTokenCache } from '../../lib/auth/token-cache.js'
import { spiedApp, userEcho } from '../helpers/app.js'
import { expectOpen } from '../helpers/clients.js'
import { expectRefused } from '../helpers/refusals.js'
import { bearer, keyPair, mint, now } from '../helpers/tokens.js'

async function token (claims: Record<string, unknown> = {}, options: Parameters<typeof mint>[2] = {}): Promise<string> {
  return mint((await keyPair('ES256')).privateKey, claims, options)
}

test('a repeated token is verified once', async (t) => {
  const app = await spiedApp(t)
  const alice = await token({ sub: 'alice' })
  for (let i = 0; i < 3; i++) {
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(alice))).user?.sub, 'alice', `connection ${i + 1}`)
  }
  t.equal(app.keyLookups(), 1, 'one signature check for three connections')
  t.equal((await expectOpen(t, app.url('/ws'), [], bearer(await token({ sub: 'bob' })))).user?.sub, 'bob')
  t.equal(app.keyLookups(), 2, 'another token is verified')
  t.equal(app.calls, 4)
})

test('cache: false verifies every time', async (t) => {
  const app = await spiedApp(t, { cache: false })
  const alice = await token({ sub: 'alice' })
  for (let i = 0; i < 3; i++) await expectOpen(t, app.url('/ws'), [], bearer(alice))
  t.equal(app.keyLookups(), 3)
})

test('cache: true is the default', async (t) => {
  const app = await spiedApp(t, { cache: true })
  const alice = await token({ sub: 'alice' })
  for (let i = 0; i < 3; i++) await expectOpen(t, app.url('/ws'), [], bearer(alice))
  t.equal(app.keyLookups(), 1)
})

test('cache: { max: 1 } evicts the oldest entry', async (t) => {
  const app = await spiedApp(t, { cache: { max: 1 } })
  const a = await token({ sub: 'a' })
  const b = await token({ sub: 'b' })
  const sequence: Array<[string, number]> = [[a, 1], [a, 1], [b, 2], [a, 3], [a, 3], [b, 4]]
  for (const [value, expected] of sequence) {
    await expectOpen(t, app.url('/ws'), [], bearer(value))
    t.equal(app.keyLookups(), expected)
  }
})

test('failed verifications are not cached', async (t) => {
  const app = await spiedApp(t, { audience: 'chat' })
  const wrong = await token({ sub: 'alice' }, { aud: 'other' })
  await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(wrong))
  await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(wrong))
  t.equal(app.keyLookups(), 2)
})

test('authorize and isRevoked run on cache hits too', async (t) => {
  let revoked = false
  let allowed = true
  const authorized: string[] = []
  const checked: string[] = []
  const app = await spiedApp(t, {
    isRevoked: async (user) => { checked.push(String(user.sub)); return revoked },
    authorize: (user) => { authorized.push(String(user.sub)); return allowed }
  })
  const alice = await token({ sub: 'alice' })
  await expectOpen(t, app.url('/ws'), [], bearer(alice))
  await expectOpen(t, app.url('/ws'), [], bearer(alice))
  t.equal(app.keyLookups(), 1, 'the second connection was a cache hit')
  t.same(checked, ['alice', 'alice'])
  t.same(authorized, ['alice', 'alice'])

  revoked = true
  await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_REVOKED', [], bearer(alice))
  revoked = false
  allowed = false
  await expectRefused(t, app.url('/ws'), 403, 'FST_WS_GUARD_FORBIDDEN', [], bearer(alice))
  t.equal(app.keyLookups(), 1, 'still cached: only the callbacks changed their minds')
  t.same(authorized, ['alice', 'alice', 'alice'], 'authorize is not asked about a revoked token')
  t.equal(app.calls, 2)
})

test('cached verdicts end with the token', async (t) => {
  // Side by side: each waits for its token to pass its limit (three to four seconds). Every
  // token keeps two seconds at least for the handshakes that must open, on a slow machine too.
  const atExp = async (): Promise<void> => {
    const app = await spiedApp(t, { clockTolerance: 0 })
    const exp = now(3)
    const short = await token({ sub: 'alice' }, { exp })
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(short))).user?.sub, 'alice')
    t.equal((await expectOpen(t, app.url('/ws'), [], bearer(short))).user?.sub, 'alice')
    t.equal(app.keyLookups(), 1, 'exp: cached')
    await sleep(exp * 1000 - Date.now() + 50)
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_EXPIRED', [], bearer(short))
    t.equal(app.keyLookups(), 2, 'exp: an expired cached token is verified again, and refused')
  }
  const atMaxAge = async (maxTokenAge: number | string): Promise<void> => {
    const app = await spiedApp(t, { clockTolerance: 0, maxTokenAge })
    const iat = now()
    const aging = await token({ sub: 'alice' }, { iat })
    await expectOpen(t, app.url('/ws'), [], bearer(aging))
    await expectOpen(t, app.url('/ws'), [], bearer(aging))
    t.equal(app.keyLookups(), 1, `maxTokenAge ${maxTokenAge}: cached`)
    // jose counts whole seconds: the token is too old once a full second past maxTokenAge.
    await sleep((iat + 4) * 1000 - Date.now() + 50)
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_EXPIRED', [], bearer(aging))
    t.equal(app.keyLookups(), 2, `maxTokenAge ${maxTokenAge}: too old now, verified again and refused`)
  }
  await Promise.all([atExp(), atMaxAge(3), atMaxAge('3s')])
})

test('routes share the cache only when they verify alike', async (t) => {
  const app = await spiedApp(t, { audience: 'chat' }, {
    setup: (app) => {
      app.wsRoute('/same', { config: { wsGuard: { auth: { authorize: () => true } } } }, userEcho())
      app.wsRoute('/admin', { config: { wsGuard: { auth: { audience: 'admin' } } } }, userEcho())
    }
  })
  const chat = await token({ sub: 'alice' }, { aud: 'chat' })
  await expectOpen(t, app.url('/ws'), [], bearer(chat))
  t.equal((await expectOpen(t, app.url('/same'), [], bearer(chat))).user?.sub, 'alice')
  t.equal(app.keyLookups(), 1, 'a route that only adds authorize shares the verdict')
  // A verdict cached for one audience must not open a route that expects another.
  const refusal = await expectRefused(t, app.url('/admin'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(chat))
  t.match(refusal.body.message, /the "aud" claim is not accepted/)
  t.equal(app.keyLookups(), 2)
})

test('VerifiedTokenCache', async (t) => {
  const cache = new VerifiedTokenCache(2)
  const key = VerifiedTokenCache.keyOf('header.payload.signature')
  t.equal(key, VerifiedTokenCache.keyOf('header.payload.signature'), 'stable')
  t.not(key, VerifiedTokenCache.keyOf('header.payload.signaturf'))
  t.notMatch(key, /header|payload|signature/, 'the token itself is never kept')
  cache.set(key, { sub: 'a' }, 1000)
  t.same(cache.get(key, 999), { sub: 'a' })
  t.equal(cache.get(key, 1000), undefined, 'gone at its limit')
  t.equal(cache.size, 0, 'and dropped')
  cache.set('a', { sub: 'a' }, 5000)
  cache.set('b', { sub: 'b' }, 5000)
  cache.set('c', { sub: 'c' }, 5000)
  t.equal(cache.size, 2, 'bounded')
  t.equal(cache.get('a', 0), undefined, 'the oldest went first')
  t.same(cache.get('c', 0), { sub: 'c' })
})
