/*
 * The few things RedisStore asks of a Redis client, so that node-redis and ioredis (and any
 * other client, through a small object of its own) fit the same store.
 */

/**
 * A Redis client as RedisStore uses it. The store wraps a node-redis client itself;
 * `ioredisClient()` wraps an ioredis one. Implement it to bring another client.
 */
export interface RedisConnection {
  /**
   * Whether a command sent now goes out at once: `false` while disconnected or reconnecting,
   * when the store refuses at once instead of letting the client queue the command.
   */
  readonly isReady: boolean
  /** Sends one command; resolves with its reply (strings, integers, arrays, null), rejects with the server's error. */
  command: (args: readonly string[]) => Promise<unknown>
  /**
   * Opens a connection of its own and subscribes it to `channel` (with SSUBSCRIBE when
   * `sharded`); resolves once subscribed with the way to close that connection, rejects
   * when it cannot connect.
   */
  subscribe: (channel: string, sharded: boolean, events: SubscriptionEvents) => Promise<() => Promise<void>>
}

/** What a subscription reports, after `subscribe()` resolved. */
export interface SubscriptionEvents {
  /** A message on the channel, as it arrived. */
  message: (text: string) => void
  /** Subscribed again after the connection came back. */
  resubscribed: () => void
  /** The connection failed or closed; reported again on each failed reconnection. */
  dropped: (err: unknown) => void
}

/** The error of a command refused because the client is not connected. */
export class RedisNotReadyError extends Error {
  readonly code = 'ERR_WS_GUARD_REDIS_NOT_READY'

  constructor () {
    super('fastify-ws-guard/redis: the Redis client is not connected (down, reconnecting or not yet connected); the store does not queue commands')
    this.name = 'RedisNotReadyError'
  }
}
