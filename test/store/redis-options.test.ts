import { Redis } from 'ioredis'
import { createClient, createCluster } from 'redis'
import { test } from 'tap'
import { InvalidOptionError } from '../../lib/errors.js'
import { ioredisClient, RedisStore, type RedisStoreOptions } from '../../redis.js'

// Options are checked once, at construction, and a wrong one says what to write instead.

const client = createClient()

function refusal (options: unknown): string {
  try {
    // eslint-disable-next-line no-new
    new RedisStore(options as RedisStoreOptions)
  } catch (err) {
    if (!(err instanceof InvalidOptionError)) throw err
    return (err as Error).message
  }
  throw new Error('accepted')
}

test('defaults', async (t) => {
  t.equal(new RedisStore({ client }).leaseTtl, 30_000, 'leaseTtl 30 s')
  t.equal(new RedisStore({ client, leaseTtl: 600 }).leaseTtl, 600, 'or as given')
  t.ok(new RedisStore({ client: ioredisClient(new Redis({ lazyConnect: true })) }), 'an ioredis client through its adapter')
})

test('wrong options say what to write instead', async (t) => {
  t.match(refusal(undefined), 'RedisStore options must be an object, got undefined')
  t.match(refusal({ client, ttl: 5 }), 'unknown option RedisStore.ttl; known options are client, prefix, leaseTtl')
  t.match(refusal({}), /RedisStore client must be a connected node-redis client, client: await createClient\(\{ url \}\)\.connect\(\) .* or ioredisClient\(redis\) for ioredis; got undefined/)
  t.match(refusal({ client: 'redis://localhost:6379' }), 'got the string "redis://localhost:6379"')
  t.match(refusal({ client: {} }), 'RedisStore client must be a connected node-redis client')
  t.match(refusal({ client: new Redis({ lazyConnect: true }) }), 'RedisStore client is an ioredis client: wrap it, client: ioredisClient(redis)')
  t.match(refusal({ client: createCluster({ rootNodes: [{ url: 'redis://127.0.0.1:1' }] }) }), 'RedisStore client is a node-redis cluster client, which the store does not drive: give it a client of one Redis, createClient({ url })')
  t.match(refusal({ client, prefix: '' }), 'RedisStore prefix must be a non-empty string, got the string ""')
  t.match(refusal({ client, prefix: 7 }), 'RedisStore prefix must be a non-empty string, got number')
  t.match(refusal({ client, leaseTtl: 100 }), 'RedisStore leaseTtl (ms) must be a whole number >= 300, got number 100')
  t.match(refusal({ client, leaseTtl: '30s' }), 'RedisStore leaseTtl (ms) must be a whole number >= 300, got the string "30s"')
})
