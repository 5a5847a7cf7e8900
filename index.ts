import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { createLifecycle } from './lib/lifecycle.js'
import { normalizeOptions, type WsGuardOptions, type WsGuardRouteOptions } from './lib/options.js'
import { wsRefresh } from './lib/refresh.js'
import { createRouteGuard, declareWebSocketRoute } from './lib/routes.js'
import { ensureWebSocket } from './lib/websocket.js'
import type { WsRouteMethod, WsUser } from './lib/types.js'
import type { WsGuardStats } from './lib/stats.js'

/**
 * Guards every WebSocket route declared in its scope: handshake checks and the Origin
 * allowlist run in `onRequest`, before @fastify/websocket upgrades the connection.
 *
 * @example
 * ```ts
 * await app.register(wsGuard, { origins: ['https://app.example.com'] })
 * app.wsRoute('/chat', (socket, request) => { socket.on('message', (m) => socket.send(m)) })
 * ```
 */
const plugin: FastifyPluginAsync<WsGuardOptions> = async function wsGuard (fastify, options) {
  const normalized = normalizeOptions(options)
  const lifecycle = createLifecycle(fastify, normalized)
  lifecycle.attach(await ensureWebSocket(fastify, normalized.websocket))
  fastify.decorateRequest('wsUser', null)
  fastify.decorateRequest('wsRefresh', wsRefresh)
  fastify.decorate('wsRoute', declareWebSocketRoute as unknown as WsRouteMethod)
  fastify.decorate('wsGuard', { stats: () => lifecycle.stats.snapshot(lifecycle.tracker.open.size) })
  fastify.addHook('onRoute', createRouteGuard(normalized, lifecycle.context, lifecycle.tracker))
}

export const fastifyWsGuard = fp(plugin, { fastify: '5.x', name: 'fastify-ws-guard' })
export default fastifyWsGuard

export * from './lib/errors.js'
export type { WsGuardOptions, WsGuardRouteOptions } from './lib/options.js'
export type { OriginOption, OriginPredicate } from './lib/origin.js'
export type { WsGuardUserRegistry, WsRouteHandler, WsRouteMethod, WsRouteOptions, WsUser } from './lib/types.js'
export type { WsGuardAuthOptions } from './lib/auth/options.js'
export type { TokenSource } from './lib/auth/token-sources.js'
export { requestSerializer } from './lib/serializers.js'
export { channels } from './lib/stats.js'
export type { CloseReason, WsGuardStats } from './lib/stats.js'
export { MemoryStore } from './lib/limits.js'
export type { ConnectionStore } from './lib/limits.js'

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Declares a guarded WebSocket GET route; `handler` is `(socket, request)` as with
     * @fastify/websocket. Per-route guard settings go in `config.wsGuard`.
     */
    wsRoute: WsRouteMethod
    /** The guard's counters. */
    wsGuard: { stats: () => WsGuardStats }
  }
  interface FastifyRequest {
    /** The verified token claims on authenticated WebSocket routes; `null` elsewhere. */
    wsUser: WsUser | null
    /**
     * On an open, authenticated WebSocket: verifies a fresh token (same `sub`) and moves the
     * expiry deadline. Rejects, and closes the connection with 4401, when the token is refused.
     */
    wsRefresh: (token: string) => Promise<void>
  }
  interface FastifyContextConfig {
    /** Guard settings of this route: overrides of the plugin options, or `false` to opt out. */
    wsGuard?: WsGuardRouteOptions | false
  }
}
