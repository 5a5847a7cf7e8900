import { InvalidOptionError } from '../errors.js'
import { assertKnownKeys, assertPlainObject, describe, nonEmptyString, optionalInteger } from '../validate.js'
import type { ConnectionStore, ControlMessage, Lease, Revocation, StoreListener } from './contract.js'
import { RedisNotReadyError, type RedisConnection } from './redis-connection.js'
import { isIoredisClient } from './redis-ioredis.js'
import { parseControlMessage, parseRevocation } from './redis-messages.js'
import { isNodeRedisClient, nodeRedisConnection, type NodeRedisClient } from './redis-node-redis.js'
import { acquireLease, countLeases, listRevocations, renewLeases, storeRevocation, type RedisScript } from './redis-scripts.js'

/*
 * The fleet's store. Key layout, under `prefix` (default `ws-guard:`):
 *   {user:alice}                 sorted set: a lease id per member, scored by its expiry in ms
 *   {revocations}                sorted set: the key of each revocation, scored by its end
 *   {revocations}:jti:<jti>      a revocation's JSON, expiring at its end (PXAT)
 *   {revocations}:sub:<sub>:<t>  the same, for every token of <sub> issued before <t>
 *   control                      the channel of control messages (SPUBLISH on Redis >= 7)
 * The braces are Redis Cluster hash tags: what one script touches lives in one slot.
 */

const defaults = Object.freeze({ prefix: 'ws-guard:', leaseTtl: 30_000 })
const knownOptions = ['client', 'prefix', 'leaseTtl']
// A lease is renewed every third of its ttl: below this, renewals would flood Redis.
const minLeaseTtl = 300
const readyPollMs = 20

/** Options of {@link RedisStore}. */
export interface RedisStoreOptions {
  /**
   * A connected node-redis v6 client (`await createClient({ url }).connect()` from `redis`),
   * or an ioredis one wrapped by `ioredisClient(redis)`. The app owns it: the store never
   * closes it, and subscribes on a duplicate of its own.
   */
  client: NodeRedisClient | RedisConnection
  /**
   * Put before every key and the channel name, to share a Redis with other apps or fleets.
   * @default 'ws-guard:'
   */
  prefix?: string
  /**
   * How long a lease lives without renewal, in ms: a connection of an instance that died
   * stops counting against its user's limit after at most this long.
   * @default 30000
   */
  leaseTtl?: number
}

/**
 * Counts connections and carries control messages for a fleet of instances through Redis
 * (6.2 or later). Per-user limits hold fleet-wide: a lease is a member of the user's sorted
 * set, taken by one Lua script, so concurrent handshakes on any instances never exceed the
 * limit. When Redis is unreachable every call rejects at once with a `RedisNotReadyError`
 * (code `ERR_WS_GUARD_REDIS_NOT_READY`), and the guard follows its `onStoreError` option.
 *
 * @example
 * ```ts
 * import { createClient } from 'redis'
 * import { RedisStore } from 'fastify-ws-guard/redis'
 *
 * const redis = await createClient({ url: process.env.REDIS_URL }).connect()
 * app.register(wsGuard, { store: new RedisStore({ client: redis }) })
 * app.addHook('onClose', async () => { await redis.close() })
 * ```
 */
export class RedisStore implements ConnectionStore {
  readonly leaseTtl: number
  readonly #redis: RedisConnection
  readonly #prefix: string
  readonly #channel: string
  readonly #revocationIndex: string
  // Asked of the server once: publisher and subscriber must agree on SPUBLISH or PUBLISH.
  #sharded: Promise<boolean> | undefined

  constructor (options: RedisStoreOptions) {
    assertPlainObject(options, 'RedisStore options')
    assertKnownKeys(options, knownOptions, 'RedisStore')
    this.#redis = connectionOf(options.client)
    this.#prefix = options.prefix === undefined ? defaults.prefix : nonEmptyString(options.prefix, 'RedisStore prefix')
    this.leaseTtl = optionalInteger(options.leaseTtl, defaults.leaseTtl, 'RedisStore leaseTtl (ms)', minLeaseTtl)
    this.#channel = `${this.#prefix}control`
    this.#revocationIndex = `${this.#prefix}{revocations}`
  }

  async acquire (lease: Lease, limit: number): Promise<boolean> {
    const reply = await this.#run(acquireLease, [this.#leaseSet(lease.key)], [lease.id, limit === Infinity ? 'inf' : String(limit), String(this.leaseTtl)])
    return reply === 1
  }

  async renew (leases: readonly Lease[]): Promise<void> {
    const idsByKey = new Map<string, string[]>()
    for (const { key, id } of leases) {
      const ids = idsByKey.get(key)
      if (ids === undefined) idsByKey.set(key, [id])
      else ids.push(id)
    }
    // One script per user, each in its own slot, all sent at once: the client pipelines them.
    await Promise.all([...idsByKey].map(async ([key, ids]) => await this.#run(renewLeases, [this.#leaseSet(key)], [String(this.leaseTtl), ...ids])))
  }

  async release (lease: Lease): Promise<void> {
    // An empty sorted set is deleted by Redis itself.
    await this.#command(['ZREM', this.#leaseSet(lease.key), lease.id])
  }

  async count (key: string): Promise<number> {
    return Number(await this.#run(countLeases, [this.#leaseSet(key)], []))
  }

  async publish (message: ControlMessage): Promise<void> {
    // Kept before it is sent: an instance that hears it, or starts later, finds it listed.
    if (message.type === 'revoke') {
      const { revocation } = message
      await this.#run(storeRevocation, [this.#revocationIndex, this.#revocationKey(revocation)], [JSON.stringify(revocation), String(Math.round(revocation.until * 1000))])
    }
    const sharded = await this.#isSharded()
    await this.#command([sharded ? 'SPUBLISH' : 'PUBLISH', this.#channel, JSON.stringify(message)])
  }

  async revocations (): Promise<Revocation[]> {
    const stored = await this.#run(listRevocations, [this.#revocationIndex], []) as string[]
    return stored.map(parseRevocation).filter((revocation) => revocation !== undefined)
  }

  async listen (listener: StoreListener): Promise<() => Promise<void>> {
    const sharded = await this.#isSharded()
    let subscribed = true
    let stopped = false
    // What the listener heard last: `available` and `unavailable` alternate, once per change,
    // however many errors and reconnections the client reports in between.
    let available = false
    const tellAvailable = (): void => {
      if (!subscribed || stopped || available) return
      if (!this.#redis.isReady) {
        // Commands go through the app's client, which may come back after the subscription.
        setTimeout(tellAvailable, readyPollMs).unref()
        return
      }
      available = true
      listener.available()
    }
    const close = await this.#redis.subscribe(this.#channel, sharded, {
      message: (text) => {
        const message = parseControlMessage(text)
        if (message !== undefined && !stopped) listener.message(message)
      },
      resubscribed: () => {
        subscribed = true
        tellAvailable()
      },
      dropped: (err) => {
        subscribed = false
        if (available && !stopped) {
          available = false
          listener.unavailable(err)
        }
      }
    })
    tellAvailable()
    return async () => {
      stopped = true
      await close()
    }
  }

  #leaseSet (key: string): string {
    return `${this.#prefix}{${key}}`
  }

  #revocationKey (revocation: Revocation): string {
    const id = 'jti' in revocation ? `jti:${revocation.jti}` : `sub:${revocation.sub}:${revocation.issuedBefore}`
    return `${this.#revocationIndex}:${id}`
  }

  async #isSharded (): Promise<boolean> {
    this.#sharded ??= this.#command(['INFO', 'server']).then((info) => {
      const major = /^redis_version:(\d+)/m.exec(String(info))?.[1]
      return Number(major) >= 7
    }, (err: unknown) => {
      // Asked again next time.
      this.#sharded = undefined
      throw err
    })
    return await this.#sharded
  }

  /** EVALSHA, and EVAL when the server does not have the script (yet, or since a restart). */
  async #run (script: RedisScript, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    const tail = [String(keys.length), ...keys, ...args]
    try {
      return await this.#command(['EVALSHA', script.sha, ...tail])
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err
      return await this.#command(['EVAL', script.source, ...tail])
    }
  }

  async #command (args: readonly string[]): Promise<unknown> {
    // Clients queue commands while disconnected: a handshake would wait for Redis to return.
    if (!this.#redis.isReady) throw new RedisNotReadyError()
    return await this.#redis.command(args)
  }
}

function connectionOf (client: unknown): RedisConnection {
  if (typeof client === 'object' && client !== null) {
    if (isIoredisClient(client)) {
      throw new InvalidOptionError('RedisStore client is an ioredis client: wrap it, client: ioredisClient(redis), with ioredisClient from fastify-ws-guard/redis')
    }
    if ('masters' in client) {
      throw new InvalidOptionError('RedisStore client is a node-redis cluster client, which the store does not drive: give it a client of one Redis, createClient({ url }), or a RedisConnection of your own for the cluster')
    }
    if (isNodeRedisClient(client)) return nodeRedisConnection(client)
    if (isRedisConnection(client)) return client
  }
  throw new InvalidOptionError(`RedisStore client must be a connected node-redis client, client: await createClient({ url }).connect() (from 'redis'), or ioredisClient(redis) for ioredis; got ${describe(client)}`)
}

function isRedisConnection (value: object): value is RedisConnection {
  const candidate = value as Partial<Record<keyof RedisConnection, unknown>>
  return typeof candidate.command === 'function' && typeof candidate.subscribe === 'function' && 'isReady' in value
}
