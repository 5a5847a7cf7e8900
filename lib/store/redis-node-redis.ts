import type { RedisConnection, SubscriptionEvents } from './redis-connection.js'

/*
 * node-redis (the `redis` package, v6) as a RedisConnection. Its types are written out here,
 * reduced to what is used, so that the published types never need the package itself.
 */

type Listener = (...args: any[]) => void

/** The part of a node-redis client (`createClient()` from `redis`) the store uses. */
export interface NodeRedisClient {
  readonly isReady: boolean
  sendCommand: (args: string[]) => Promise<unknown>
  duplicate: () => NodeRedisSubscriber
}

/** The part of a duplicated node-redis client the subscription uses. */
export interface NodeRedisSubscriber {
  readonly isReady: boolean
  on: (event: string, listener: Listener) => unknown
  off: (event: string, listener: Listener) => unknown
  connect: () => Promise<unknown>
  subscribe: (channel: string, listener: (message: string) => void) => Promise<void>
  sSubscribe: (channel: string, listener: (message: string) => void) => Promise<void>
  close: () => Promise<void>
  destroy: () => void
}

/** Whether `value` looks like a node-redis client. */
export function isNodeRedisClient (value: object): value is NodeRedisClient {
  const candidate = value as Partial<Record<keyof NodeRedisClient, unknown>>
  return typeof candidate.sendCommand === 'function' && typeof candidate.duplicate === 'function' && 'isReady' in value
}

/** A node-redis client as the store drives it; what `new RedisStore({ client })` does with one. */
export function nodeRedisConnection (client: NodeRedisClient): RedisConnection {
  return {
    get isReady () { return client.isReady },
    command: async (args) => await client.sendCommand([...args]),
    subscribe: async (channel, sharded, events) => await subscribe(client.duplicate(), channel, sharded, events)
  }
}

async function subscribe (subscriber: NodeRedisSubscriber, channel: string, sharded: boolean, events: SubscriptionEvents): Promise<() => Promise<void>> {
  let subscribed = false
  // Every 'error' is listened to: one nobody listens to would crash the process. Only those
  // that cost the connection are drops (node-redis also reports errors it recovers from).
  subscriber.on('error', (err: unknown) => { if (subscribed && !subscriber.isReady) events.dropped(err) })
  // node-redis subscribes again before it emits 'ready' on a new connection.
  subscriber.on('ready', () => { if (subscribed) events.resubscribed() })
  // The client retries a refused connection forever: the first failure ends the attempt.
  let onFirstError!: Listener
  const firstError = new Promise<never>((_resolve, reject) => { onFirstError = reject })
  subscriber.on('error', onFirstError)
  try {
    await Promise.race([subscriber.connect(), firstError])
    const onMessage = (message: string): void => { events.message(message) }
    await Promise.race([sharded ? subscriber.sSubscribe(channel, onMessage) : subscriber.subscribe(channel, onMessage), firstError])
  } catch (err) {
    subscriber.destroy()
    throw err
  } finally {
    subscriber.off('error', onFirstError)
  }
  subscribed = true
  return async () => {
    subscribed = false
    // close() waits for pending replies, which never come while the server is away.
    if (subscriber.isReady) await subscriber.close()
    else subscriber.destroy()
  }
}
