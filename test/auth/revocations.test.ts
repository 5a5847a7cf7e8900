import { test } from 'tap'
import { RevocationList } from '../../lib/auth/revocations.js'

// Times are epoch seconds; `revokes(claims, now)` takes the clock as an argument.
const t0 = 1_700_000_000

test('an empty list revokes nothing', async (t) => {
  const list = new RevocationList()
  t.equal(list.size, 0)
  t.equal(list.revokes({ sub: 'alice', jti: 'token-1', iat: t0 }, t0), false)
})

test('a jti revocation revokes that token until its until, then is dropped', async (t) => {
  const list = new RevocationList()
  list.add({ jti: 'token-1', until: t0 + 60 })
  t.equal(list.size, 1)
  t.equal(list.revokes({ jti: 'token-1', sub: 'alice', iat: t0 + 30 }, t0), true, 'the token is revoked, whatever its iat')
  t.equal(list.revokes({ jti: 'token-2', sub: 'alice', iat: t0 - 30 }, t0), false, 'another token of the same user is not')
  t.equal(list.revokes({ sub: 'alice' }, t0), false, 'nor a token without jti')
  t.equal(list.revokes({ jti: 5 } as never, t0), false, 'nor a jti that is not a string')
  t.equal(list.revokes({ jti: 'token-1' }, t0 + 59.9), true, 'still revoked just before until')
  t.equal(list.revokes({ jti: 'token-1' }, t0 + 60), false, 'no longer at until')
  t.equal(list.size, 0, 'and the entry is dropped when found expired')
})

test('a subject revocation revokes tokens issued at or before issuedBefore, or without iat', async (t) => {
  const list = new RevocationList()
  list.add({ sub: 'alice', issuedBefore: t0, until: t0 + 3600 })
  t.equal(list.revokes({ sub: 'alice', iat: t0 - 100 }, t0 + 1), true, 'issued before')
  t.equal(list.revokes({ sub: 'alice', iat: t0 }, t0 + 1), true, 'issued in the same second')
  t.equal(list.revokes({ sub: 'alice', iat: t0 + 1 }, t0 + 1), false, 'issued after')
  t.equal(list.revokes({ sub: 'alice' }, t0 + 1), true, 'a token without iat: its age is unknown')
  t.equal(list.revokes({ sub: 'alice', iat: 'yesterday' } as never, t0 + 1), true, 'an iat that is not a number: unknown too')
  t.equal(list.revokes({ sub: 'bob', iat: t0 - 100 }, t0 + 1), false, 'another subject is not revoked')
  t.equal(list.revokes({ sub: 'alice', iat: t0 - 100 }, t0 + 3600), false, 'not after until')
  t.equal(list.size, 0, 'the expired entry is dropped when found')
  t.equal(list.revokes({ sub: 'alice', iat: t0 - 100 }, t0 + 1), false, 'and stays gone')
})

test('a jti revocation and a subject revocation apply together', async (t) => {
  const list = new RevocationList()
  list.add({ jti: 'token-1', until: t0 + 10 })
  list.add({ sub: 'alice', issuedBefore: t0, until: t0 + 100 })
  t.equal(list.revokes({ jti: 'token-2', sub: 'alice', iat: t0 - 1 }, t0), true, 'by subject')
  t.equal(list.revokes({ jti: 'token-1', sub: 'bob', iat: t0 + 5 }, t0), true, 'by jti')
  t.equal(list.revokes({ jti: 'token-1', sub: 'alice', iat: t0 - 1 }, t0 + 20), true, 'the jti expired, the subject still revokes')
  t.equal(list.size, 1, 'only the expired jti was dropped')
})

test('adding again keeps the wider revocation', async (t) => {
  const list = new RevocationList()
  list.add({ jti: 'token-1', until: t0 + 100 })
  list.add({ jti: 'token-1', until: t0 + 10 })
  t.equal(list.size, 1, 'one entry per jti')
  t.equal(list.revokes({ jti: 'token-1' }, t0 + 50), true, 'the later until wins')
  list.add({ sub: 'alice', issuedBefore: t0 + 50, until: t0 + 100 })
  list.add({ sub: 'alice', issuedBefore: t0, until: t0 + 500 })
  t.equal(list.size, 2, 'one entry per subject')
  t.equal(list.revokes({ sub: 'alice', iat: t0 + 40 }, t0 + 200), true, 'the later issuedBefore and the later until are both kept')
  t.equal(list.revokes({ sub: 'alice', iat: t0 + 51 }, t0 + 200), false)
})

test('merge() takes in what the store holds and returns what only this copy holds, in force', async (t) => {
  const list = new RevocationList()
  list.add({ jti: 'local-only', until: t0 + 100 })
  list.add({ jti: 'both', until: t0 + 100 })
  list.add({ jti: 'local-expired', until: t0 - 1 })
  list.add({ sub: 'bob', issuedBefore: t0, until: t0 + 100 })
  list.add({ sub: 'carol', issuedBefore: t0 + 10, until: t0 + 100 })
  list.add({ sub: 'dave', issuedBefore: t0, until: t0 + 100 })
  list.add({ sub: 'erin', issuedBefore: t0, until: t0 - 1 })
  const missing = list.merge([
    { jti: 'both', until: t0 + 50 },
    { jti: 'store-only', until: t0 + 100 },
    { sub: 'alice', issuedBefore: t0, until: t0 + 100 },
    // The store knows carol's revocation up to an earlier second only, in two entries.
    { sub: 'carol', issuedBefore: t0 - 10, until: t0 + 100 },
    { sub: 'carol', issuedBefore: t0 + 5, until: t0 + 100 },
    { sub: 'dave', issuedBefore: t0 + 1, until: t0 + 100 }
  ], t0)
  t.same(missing, [
    { jti: 'local-only', until: t0 + 100 },
    { sub: 'bob', issuedBefore: t0, until: t0 + 100 },
    { sub: 'carol', issuedBefore: t0 + 10, until: t0 + 100 }
  ], 'what the store lacks, or holds for an earlier second; nothing expired; nothing it holds')
  t.equal(list.revokes({ jti: 'store-only' }, t0), true, 'what the store holds is in force here')
  t.equal(list.revokes({ sub: 'alice', iat: t0 }, t0), true)
  t.equal(list.revokes({ jti: 'local-only' }, t0), true, 'what only this copy holds stays in force')
  t.equal(list.revokes({ jti: 'both' }, t0 + 75), true, 'the later until of the two is kept')
  t.equal(list.revokes({ sub: 'dave', iat: t0 + 1 }, t0), true, 'the later issuedBefore of the two is kept')
  t.equal(list.revokes({ sub: 'carol', iat: t0 + 10 }, t0), true)
  t.same(list.merge([], t0 + 200), [], 'once all have expired, nothing is missing')
  t.same(new RevocationList().merge([], t0), [], 'an empty copy and an empty store')
})

test('past 1024 entries, an addition first drops what has expired', async (t) => {
  const list = new RevocationList()
  const nowSeconds = Math.floor(Date.now() / 1000)
  // 1000 expired tokens and 20 expired subjects, 4 live ones: 1024 in all.
  for (let i = 0; i < 1000; i++) list.add({ jti: `expired-${i}`, until: nowSeconds - 10 })
  for (let i = 0; i < 20; i++) list.add({ sub: `gone-${i}`, issuedBefore: nowSeconds - 20, until: nowSeconds - 10 })
  for (let i = 0; i < 2; i++) list.add({ jti: `live-${i}`, until: nowSeconds + 3600 })
  for (let i = 0; i < 2; i++) list.add({ sub: `user-${i}`, issuedBefore: nowSeconds, until: nowSeconds + 3600 })
  t.equal(list.size, 1024, 'nothing is pruned below the threshold')
  list.add({ jti: 'one-more', until: nowSeconds + 3600 })
  t.equal(list.size, 5, 'the expired entries are gone, the live ones and the new one kept')
  t.equal(list.revokes({ jti: 'live-1' }), true)
  t.equal(list.revokes({ sub: 'user-0', iat: nowSeconds - 5 }), true)
  t.equal(list.revokes({ jti: 'one-more' }), true)

  // A list of live revocations only: the threshold moves to twice its size.
  const live = new RevocationList()
  for (let i = 0; i < 1024; i++) live.add({ jti: `live-${i}`, until: nowSeconds + 3600 })
  live.add({ jti: 'live-1024', until: nowSeconds + 3600 })
  t.equal(live.size, 1025, 'nothing live is ever pruned')
  for (let i = 1025; i < 2048; i++) live.add({ jti: `live-${i}`, until: nowSeconds + 3600 })
  t.equal(live.size, 2048, 'every live revocation kept as the list grows')
})
