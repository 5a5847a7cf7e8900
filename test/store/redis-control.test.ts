import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import { RedisStore, type RedisConnection } from '../../redis.js'
import type { ControlMessage } from '../../lib/store/contract.js'
import { nodeRedisConnection, type NodeRedisClient } from '../../lib/store/redis-node-redis.js'
import { clientFlavors, connectedClients, recordingListener, startRedis, type RunningRedis } from '../helpers/redis.js'
import { waitFor } from '../helpers/wait.js'

// Control messages and revocations between stores, against a real redis-server, with each
// client, on Redis 7's sharded channels and as on Redis 6 (plain PUBLISH/SUBSCRIBE).

let next = 0
const freshPrefix = (): string => `control-${process.pid}-${++next}:`

/** The same connection, as if the server were Redis 6: the store must fall back to PUBLISH. */
function asRedis6 (client: NodeRedisClient | RedisConnection): RedisConnection {
  const connection = 'sendCommand' in client ? nodeRedisConnection(client) : client
  return {
    get isReady () { return connection.isReady },
    command: async (args) => args[0] === 'INFO' ? '# Server\r\nredis_version:6.2.14\r\n' : await connection.command(args),
    subscribe: connection.subscribe
  }
}

/** How many connections are subscribed to `channel`, sharded or not. */
async function subscribers (redis: RunningRedis, channel: string, sharded: boolean): Promise<number> {
  return Number(await redis.command('EVAL', `return redis.call('PUBSUB', '${sharded ? 'SHARDNUMSUB' : 'NUMSUB'}', ARGV[1])[2]`, '0', channel))
}

const disconnect: ControlMessage = { type: 'disconnect', from: 'instance-a', filter: { sub: 'alice', route: '/chat' }, code: 4001, reason: 'logged out' }

for (const [flavor, connect] of Object.entries(clientFlavors)) {
  for (const sharded of [true, false]) {
    const mode = sharded ? 'SPUBLISH' : 'PUBLISH (Redis 6)'
    test(`${flavor}, ${mode}: control messages`, async (t) => {
      const redis = await startRedis(t)
      if (redis === undefined) return
      const storeFor = async (prefix: string): Promise<RedisStore> => {
        const client = await connect(t, redis)
        return new RedisStore({ client: sharded ? client : asRedis6(client), prefix })
      }
      const listening = async (t: Test, store: RedisStore): Promise<ReturnType<typeof recordingListener>> => {
        const recorded = recordingListener()
        const stop = await store.listen(recorded.listener)
        t.teardown(stop)
        return recorded
      }

      t.test('a disconnect and a revocation reach every instance, the sender included', async (t) => {
        const prefix = freshPrefix()
        const [a, b] = [await storeFor(prefix), await storeFor(prefix)]
        const [heardByA, heardByB] = [await listening(t, a), await listening(t, b)]
        t.same(heardByA.events, ['available'], 'available once subscribed')
        t.equal(await subscribers(redis, `${prefix}control`, sharded), 2, `both subscribed with ${sharded ? 'SSUBSCRIBE' : 'SUBSCRIBE'}`)
        const revoke: ControlMessage = { type: 'revoke', from: 'instance-b', revocation: { jti: 'token-1', until: Date.now() / 1000 + 60 } }
        await a.publish(disconnect)
        await b.publish(revoke)
        await waitFor(() => heardByA.messages.length === 2 && heardByB.messages.length === 2, 'both messages on both instances')
        t.same(heardByA.messages, [disconnect, revoke], 'parsed, with their sender')
        t.same(heardByB.messages, [disconnect, revoke], 'the same on the other instance')
      })

      t.test('a revocation is listed until its end, then gone without a trace', async (t) => {
        const prefix = freshPrefix()
        const [a, b] = [await storeFor(prefix), await storeFor(prefix)]
        const until = (Date.now() + 1000) / 1000
        const byJti = { jti: 'token-2', until }
        const bySub = { sub: 'mallory', issuedBefore: Math.floor(Date.now() / 1000), until: until + 0.6 }
        t.same(await b.revocations(), [], 'none at first')
        await a.publish({ type: 'revoke', from: 'a', revocation: byJti })
        await a.publish({ type: 'revoke', from: 'a', revocation: bySub })
        await a.publish({ type: 'revoke', from: 'a', revocation: { jti: 'over', until: Date.now() / 1000 - 1 } })
        t.same(await b.revocations(), [byJti, bySub], 'listed for another instance, oldest end first; one already over is not kept')
        await waitFor(() => Date.now() > until * 1000 + 50, 'the first end')
        t.same(await b.revocations(), [bySub], 'the first is gone after its end')
        await waitFor(() => Date.now() > (until + 0.6) * 1000 + 50, 'the second end')
        t.same(await b.revocations(), [], 'and the second after its own')
        t.equal(await redis.keysUnder(prefix), 0, 'no key left')
      })

      t.test('revocations() skips what is not a revocation', async (t) => {
        const prefix = freshPrefix()
        const store = await storeFor(prefix)
        const index = `${prefix}{revocations}`
        const ends = String(Date.now() + 60_000)
        await redis.command('ZADD', index, ends, `${index}:jti:garbage`)
        await redis.command('SET', `${index}:jti:garbage`, 'not json')
        await redis.command('ZADD', index, ends, `${index}:jti:missing`)
        t.same(await store.revocations(), [], 'neither garbage nor a missing key')
      })

      t.test('messages of the wrong shape are ignored', async (t) => {
        const prefix = freshPrefix()
        const store = await storeFor(prefix)
        const heard = await listening(t, store)
        const channel = `${prefix}control`
        for (const text of ['not json', 'null', '[]', '{"type":"disconnect"}', '{"type":"revoke","from":"x","revocation":{"jti":"t"}}', JSON.stringify({ ...disconnect, code: 1006 })]) {
          await redis.command(sharded ? 'SPUBLISH' : 'PUBLISH', channel, text)
        }
        await store.publish(disconnect)
        await waitFor(() => heard.messages.length > 0, 'the well-formed message')
        await sleep(50)
        t.same(heard.messages, [disconnect], 'only the well-formed one, and the process is still here')
      })

      t.test('the stop function closes the subscription connection, and only it', async (t) => {
        const prefix = freshPrefix()
        const store = await storeFor(prefix)
        const before = await connectedClients(redis)
        const heard = recordingListener()
        const stop = await store.listen(heard.listener)
        t.equal(await connectedClients(redis), before + 1, 'one connection more while listening')
        await stop()
        const until = Date.now() + 2000
        while (await connectedClients(redis) !== before && Date.now() < until) await sleep(10)
        t.equal(await connectedClients(redis), before, 'back to the app\'s own connections')
        t.equal(await store.acquire({ key: 'user:alice', id: 'after-stop' }, 1), true, 'the app\'s client still works')
        await store.publish(disconnect)
        await sleep(50)
        t.same(heard.messages, [], 'nothing is delivered after stop')
        t.same(heard.events, ['available'], 'and no unavailable for the stop')
      })
    })
  }
}
