import type { RedisConnection, SubscriptionEvents } from './redis-connection.js'

/*
 * ioredis as a RedisConnection. Its types are written out here, reduced to what is used, so
 * that the published types never need the package itself.
 */

type Listener = (...args: any[]) => void

/** The part of an ioredis client (`new Redis()` from `ioredis`) the store uses. */
export interface IoredisClient {
  readonly status: string
  call: (command: string, ...args: string[]) => Promise<unknown>
  duplicate: (override: { lazyConnect: boolean, autoResubscribe: boolean }) => IoredisSubscriber
}

/** The part of a duplicated ioredis client the subscription uses. */
export interface IoredisSubscriber {
  on: (event: string, listener: Listener) => unknown
  connect: () => Promise<void>
  subscribe: (channel: string) => Promise<unknown>
  ssubscribe: (channel: string) => Promise<unknown>
  quit: () => Promise<unknown>
  disconnect: () => void
  readonly status: string
}

/** Whether `value` looks like an ioredis client. */
export function isIoredisClient (value: object): value is IoredisClient {
  const candidate = value as Partial<Record<keyof IoredisClient, unknown>>
  return typeof candidate.call === 'function' && typeof candidate.status === 'string'
}

/**
 * Lets `RedisStore` use an ioredis client. The store sends its commands through `redis`, and
 * subscribes with a `redis.duplicate()` that it closes when the guard stops; it never closes
 * `redis` itself.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis'
 * import { RedisStore, ioredisClient } from 'fastify-ws-guard/redis'
 *
 * const redis = new Redis(process.env.REDIS_URL)
 * app.register(wsGuard, { store: new RedisStore({ client: ioredisClient(redis) }) })
 * app.addHook('onClose', async () => { await redis.quit() })
 * ```
 */
export function ioredisClient (redis: IoredisClient): RedisConnection {
  return {
    get isReady () { return redis.status === 'ready' },
    command: async ([name, ...args]) => await redis.call(name as string, ...args),
    // Subscribed by hand after each reconnection (autoResubscribe off): ioredis emits 'ready'
    // before its own resubscription is done, and the store must only say available after it.
    subscribe: async (channel, sharded, events) => await subscribe(redis.duplicate({ lazyConnect: true, autoResubscribe: false }), channel, sharded, events)
  }
}

async function subscribe (subscriber: IoredisSubscriber, channel: string, sharded: boolean, events: SubscriptionEvents): Promise<() => Promise<void>> {
  let subscribed = false
  const subscribeOnce = async (): Promise<unknown> => await (sharded ? subscriber.ssubscribe(channel) : subscriber.subscribe(channel))
  // The connection is the store's own, subscribed to this one channel only.
  subscriber.on(sharded ? 'smessage' : 'message', (_channel: string, message: string) => { events.message(message) })
  // Every 'error' is listened to (ioredis prints the ones nobody listens to); those on a
  // connection still ready are not drops: a lost connection is also told by 'close'.
  subscriber.on('error', (err: unknown) => { if (subscribed && subscriber.status !== 'ready') events.dropped(err) })
  subscriber.on('close', () => { if (subscribed) events.dropped(new Error('the Redis connection closed')) })
  subscriber.on('ready', () => {
    if (subscribed) subscribeOnce().then(events.resubscribed, events.dropped)
  })
  try {
    await subscriber.connect()
    await subscribeOnce()
  } catch (err) {
    // Without this, ioredis would go on reconnecting a connection nobody holds.
    subscriber.disconnect()
    throw err
  }
  subscribed = true
  return async () => {
    subscribed = false
    // quit() waits for a reply, which never comes while the server is away.
    if (subscriber.status === 'ready') await subscriber.quit()
    else subscriber.disconnect()
  }
}
