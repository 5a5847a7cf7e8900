import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import { RedisStore } from '../../redis.js'
import type { RedisStoreOptions } from '../../lib/store/redis.js'
import { clientFlavors, startRedis, type RunningRedis } from '../helpers/redis.js'
import { waitFor } from '../helpers/wait.js'

// Leases against a real redis-server, with each client the store supports: the same checks
// run once with node-redis and once with ioredis.

let next = 0
/** A prefix of its own per store group, so that "nothing left behind" sees only its keys. */
const freshPrefix = (): string => `test-${process.pid}-${++next}:`

async function setUp (t: Test, connect: (t: Test, redis: RunningRedis) => Promise<RedisStoreOptions['client']>): Promise<{ redis: RunningRedis, connect: () => Promise<RedisStoreOptions['client']> } | undefined> {
  const redis = await startRedis(t)
  if (redis === undefined) return undefined
  return { redis, connect: async () => await connect(t, redis) }
}

for (const [flavor, connect] of Object.entries(clientFlavors)) {
  test(`${flavor}: leases`, async (t) => {
    const setup = await setUp(t, connect)
    if (setup === undefined) return
    const { redis } = setup
    const client = await setup.connect()

    t.test('acquire takes slots up to the limit and refuses the next', async (t) => {
      const prefix = freshPrefix()
      const store = new RedisStore({ client, prefix })
      t.equal(await store.acquire({ key: 'user:alice', id: 'a1' }, 2), true, 'first')
      t.equal(await store.acquire({ key: 'user:alice', id: 'a2' }, 2), true, 'second')
      t.equal(await store.acquire({ key: 'user:alice', id: 'a3' }, 2), false, 'not past the limit')
      t.equal(await store.acquire({ key: 'user:alice', id: 'a1' }, 2), true, 'a lease already held keeps its slot')
      t.equal(await store.acquire({ key: 'user:bob', id: 'b1' }, 2), true, 'keys are counted apart')
      t.equal(await store.acquire({ key: 'user:carol', id: 'c1' }, 0), false, 'a limit of 0 refuses all')
      t.equal(await store.count('user:alice'), 2, 'two held')
      t.equal(await store.count('user:nobody'), 0, 'an unknown key counts zero')
      t.equal(await redis.command('EXISTS', `${prefix}{user:alice}`), 1, 'the lease set is under the prefix, hash-tagged')
      await store.release({ key: 'user:alice', id: 'a1' })
      t.equal(await store.count('user:alice'), 1, 'one released')
      await store.release({ key: 'user:alice', id: 'a1' })
      await store.release({ key: 'user:nobody', id: 'x' })
      t.equal(await store.count('user:alice'), 1, 'releasing twice or an unknown lease changes nothing')
      t.equal(await store.acquire({ key: 'user:alice', id: 'a3' }, 2), true, 'the released slot can be taken again')
      for (const id of ['a2', 'a3']) await store.release({ key: 'user:alice', id })
      await store.release({ key: 'user:bob', id: 'b1' })
      t.equal(await redis.keysUnder(prefix), 0, 'a key whose last lease is released is gone')
    })

    t.test('an Infinity limit only counts', async (t) => {
      const store = new RedisStore({ client, prefix: freshPrefix() })
      for (let i = 0; i < 50; i++) t.equal(await store.acquire({ key: 'user:many', id: `m${i}` }, Infinity), true, `lease ${i}`)
      t.equal(await store.count('user:many'), 50, 'all counted')
      t.equal(await store.acquire({ key: 'user:many', id: 'one-more' }, 50), false, 'and a finite limit sees them')
    })

    t.test('concurrent acquires from two instances never exceed the limit', async (t) => {
      const prefix = freshPrefix()
      const first = new RedisStore({ client, prefix })
      const second = new RedisStore({ client: await setup.connect(), prefix })
      const attempts = Array.from({ length: 200 }, async (_, i) => await (i % 2 === 0 ? first : second).acquire({ key: 'user:rush', id: `r${i}` }, 7))
      const granted = (await Promise.all(attempts)).filter(Boolean).length
      t.equal(granted, 7, 'exactly the limit granted')
      t.equal(await second.count('user:rush'), 7, 'and counted')
    })

    t.test('a lease not renewed is gone after leaseTtl, not before', async (t) => {
      const store = new RedisStore({ client, prefix: freshPrefix(), leaseTtl: 600 })
      const lease = { key: 'user:idle', id: 'i1' }
      const started = Date.now()
      await store.acquire(lease, 1)
      await sleep(300)
      t.equal(await store.count('user:idle'), 1, `still held after ${Date.now() - started} ms`)
      t.equal(await store.acquire({ key: 'user:idle', id: 'i2' }, 1), false, 'and still holding its slot')
      await waitFor(() => Date.now() - started > 650, '650 ms')
      t.equal(await store.count('user:idle'), 0, `gone after ${Date.now() - started} ms`)
      t.equal(await store.acquire({ key: 'user:idle', id: 'i2' }, 1), true, 'its slot is free again')
    })

    t.test('renew keeps leases alive', async (t) => {
      const prefix = freshPrefix()
      const store = new RedisStore({ client, prefix, leaseTtl: 600 })
      const leases = [{ key: 'user:kept', id: 'k1' }, { key: 'user:kept', id: 'k2' }, { key: 'user:other', id: 'o1' }]
      for (const lease of leases) await store.acquire(lease, 5)
      const started = Date.now()
      while (Date.now() - started < 1200) {
        await sleep(200)
        await store.renew(leases)
      }
      t.equal(await store.count('user:kept'), 2, 'both leases of a key kept past twice their ttl')
      t.equal(await store.count('user:other'), 1, 'and the other key\'s')
      const pttl = Number(await redis.command('PTTL', `${prefix}{user:kept}`))
      t.ok(pttl > 0 && pttl <= 600, `the key expires with its leases (PTTL ${pttl})`)
      await waitFor(() => Date.now() - started > 1200 + 800, 'the ttl after the last renewal', 3000)
      t.equal(await store.count('user:kept'), 0, 'once renewals stop, they are gone')
      t.equal(await redis.keysUnder(prefix), 0, 'and so are their keys')
      await t.resolves(store.renew([]), 'renewing nothing is fine')
    })

    t.test('renew re-adds leases Redis lost, scripts included', async (t) => {
      const store = new RedisStore({ client, prefix: freshPrefix() })
      const leases = [{ key: 'user:lost', id: 'l1' }, { key: 'user:lost', id: 'l2' }]
      for (const lease of leases) await store.acquire(lease, 2)
      // What a restart with persistence off leaves: no keys, no cached scripts.
      await redis.command('FLUSHALL')
      await redis.command('SCRIPT', 'FLUSH')
      t.equal(await store.count('user:lost'), 0, 'lost')
      await store.renew(leases)
      t.equal(await store.count('user:lost'), 2, 'back after one renewal')
      t.equal(await store.acquire({ key: 'user:lost', id: 'l3' }, 2), false, 'holding their slots again')
    })

    t.test('1,000 acquire and release cycles leave no key behind', async (t) => {
      const prefix = freshPrefix()
      const store = new RedisStore({ client, prefix })
      let granted = 0
      for (let i = 0; i < 1000; i++) {
        const lease = { key: `user:u${i % 10}`, id: `cycle-${i}` }
        if (await store.acquire(lease, 1)) granted++
        await store.release(lease)
      }
      t.equal(granted, 1000, 'every acquire granted: each release freed its slot')
      t.equal(await redis.keysUnder(prefix), 0, 'no key left')
    })
  })
}
