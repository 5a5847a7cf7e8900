/**
 * The fleet store of fastify-ws-guard: per-user connection limits and control messages
 * (disconnects, revocations) shared by every instance through Redis.
 * @module fastify-ws-guard/redis
 */

export { RedisStore } from './lib/store/redis.js'
export type { RedisStoreOptions } from './lib/store/redis.js'
export { ioredisClient } from './lib/store/redis-ioredis.js'
export type { IoredisClient, IoredisSubscriber } from './lib/store/redis-ioredis.js'
export type { NodeRedisClient, NodeRedisSubscriber } from './lib/store/redis-node-redis.js'
export { RedisNotReadyError } from './lib/store/redis-connection.js'
export type { RedisConnection, SubscriptionEvents } from './lib/store/redis-connection.js'
