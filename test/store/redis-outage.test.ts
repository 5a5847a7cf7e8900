import { createServer } from 'node:net'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { createClient, type RedisClientType } from 'redis'
import { test, type Test } from 'tap'
import { ioredisClient, RedisNotReadyError, RedisStore } from '../../redis.js'
import type { Lease } from '../../lib/store/contract.js'
import { clientFlavors, ioredisClientFor, nodeRedisClient, recordingListener, startRedis } from '../helpers/redis.js'
import { waitFor } from '../helpers/wait.js'

// Redis going away and coming back, with each client: every call fails fast while it is away,
// the listener hears one unavailable per outage and one available per return.

/** Resolves with how long `call` took to reject, failing the test if it resolved. */
async function rejectionTime (t: Test, what: string, call: () => Promise<unknown>): Promise<number> {
  const started = performance.now()
  await t.rejects(call(), RedisNotReadyError, `${what} rejects with RedisNotReadyError`)
  return performance.now() - started
}

/** A port where a listening socket accepts and at once closes every connection, counting them. */
async function slammingPort (t: Test): Promise<{ port: number, attempts: () => number }> {
  let attempts = 0
  const server = createServer((socket) => {
    attempts++
    socket.destroy()
  }).listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  return { port: (server.address() as { port: number }).port, attempts: () => attempts }
}

/** Whether a client tries to connect again within `ms` (its retry delays are shorter). */
async function retriesWithin (slamming: { attempts: () => number }, ms: number): Promise<boolean> {
  const before = slamming.attempts()
  await sleep(ms)
  return slamming.attempts() > before
}

for (const [flavor, connect] of Object.entries(clientFlavors)) {
  test(`${flavor}: an outage`, async (t) => {
    const redis = await startRedis(t)
    if (redis === undefined) return
    const client = await connect(t, redis)
    const store = new RedisStore({ client, prefix: 'outage:' })
    const heard = recordingListener()
    t.teardown(await store.listen(heard.listener))
    const stoppedWhileDown = recordingListener()
    const stopWhileDown = await store.listen(stoppedWhileDown.listener)
    const leases: Lease[] = [{ key: 'user:alice', id: 'a1' }, { key: 'user:alice', id: 'a2' }]
    for (const lease of leases) t.equal(await store.acquire(lease, 2), true, `${lease.id} taken`)

    await redis.stop()
    await waitFor(() => heard.events.length === 2, 'unavailable')
    t.match(heard.events[1], /^unavailable: /, 'unavailable once the connection drops')
    // The app's client notices on its own connection, at about the same time.
    await waitFor(() => !client.isReady, 'the app\'s client to see the outage')
    const times = [
      await rejectionTime(t, 'acquire', async () => await store.acquire({ key: 'user:bob', id: 'b1' }, 1)),
      await rejectionTime(t, 'renew', async () => { await store.renew(leases) }),
      await rejectionTime(t, 'release', async () => { await store.release({ key: 'user:alice', id: 'a1' }) }),
      await rejectionTime(t, 'count', async () => await store.count('user:alice')),
      await rejectionTime(t, 'publish', async () => { await store.publish({ type: 'revoke', from: 'a', revocation: { jti: 'j', until: Date.now() / 1000 + 60 } }) }),
      await rejectionTime(t, 'revocations', async () => await store.revocations())
    ]
    t.ok(Math.max(...times) < 200, `all at once, not after a queue's timeout (slowest ${Math.max(...times).toFixed(1)} ms)`)
    // Several reconnection attempts fail meanwhile: still one unavailable.
    await sleep(700)
    t.equal(heard.events.length, 2, 'unavailable told once per outage, whatever the retries')
    const stopping = performance.now()
    await stopWhileDown()
    t.ok(performance.now() - stopping < 500, 'a listener stops at once while Redis is away')

    await redis.restart()
    await waitFor(() => heard.events.length === 3, 'available again', 10_000)
    t.equal(heard.events[2], 'available', 'available again once resubscribed')
    t.equal(await store.count('user:alice'), 0, 'the restarted Redis lost the leases')
    await store.renew(leases)
    t.equal(await store.count('user:alice'), 2, 'renew resyncs them')
    await store.publish({ type: 'disconnect', from: 'a', filter: { sub: 'alice' }, code: 4001, reason: 'bye' })
    await waitFor(() => heard.messages.length === 1, 'a message after the return')
    t.equal(heard.messages[0]?.type, 'disconnect', 'messages flow again')
    t.equal(stoppedWhileDown.events.length, 2, 'the listener stopped while down heard available and unavailable only')
    t.same(stoppedWhileDown.messages, [], 'not even messages')
  })
}

test('listen rejects at once when the client is not connected', async (t) => {
  const nodeRedis = createClient({ url: 'redis://127.0.0.1:1' })
  await t.rejects(new RedisStore({ client: nodeRedis }).listen(recordingListener().listener), RedisNotReadyError, 'node-redis, never connected')
  const io = new Redis(1, '127.0.0.1', { lazyConnect: true })
  await t.rejects(new RedisStore({ client: ioredisClient(io) }).listen(recordingListener().listener), RedisNotReadyError, 'ioredis, never connected')
})

test('listen rejects when the subscription connection cannot connect, and leaves nothing retrying', async (t) => {
  const redis = await startRedis(t)
  if (redis === undefined) return
  // A port each, so that one client's retries cannot be taken for the other's.
  const [slammedByNodeRedis, slammedByIoredis] = [await slammingPort(t), await slammingPort(t)]

  const app: RedisClientType = await nodeRedisClient(t, redis)
  const nodeRedisStore = new RedisStore({
    client: {
      get isReady () { return app.isReady },
      sendCommand: async (args) => await app.sendCommand(args),
      duplicate: () => createClient({ url: `redis://127.0.0.1:${slammedByNodeRedis.port}`, socket: { reconnectStrategy: () => 10 } })
    }
  })
  await t.rejects(nodeRedisStore.listen(recordingListener().listener), 'node-redis')
  t.equal(await retriesWithin(slammedByNodeRedis, 300), false, 'node-redis: the duplicate does not go on reconnecting')

  const io = await ioredisClientFor(t, redis)
  const ioredisStore = new RedisStore({
    client: ioredisClient({
      get status () { return io.status },
      call: async (command, ...args) => await io.call(command, ...args),
      duplicate: (override) => new Redis(slammedByIoredis.port, '127.0.0.1', { ...override, retryStrategy: () => 10 })
    })
  })
  await t.rejects(ioredisStore.listen(recordingListener().listener), 'ioredis')
  t.equal(await retriesWithin(slammedByIoredis, 300), false, 'ioredis: the duplicate does not go on reconnecting')
})
