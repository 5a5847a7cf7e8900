import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { GuardContext } from './lib/guard.js'
import { normalizeOptions, type WsGuardOptions, type WsGuardRouteOptions } from './lib/options.js'
import { createRouteGuard, declareWebSocketRoute } from './lib/routes.js'
import { ensureWebSocket } from './lib/websocket.js'
import type { WsRouteMethod, WsUser } from './lib/types.js'

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
  const wss = await ensureWebSocket(fastify, normalized.websocket)
  const context: GuardContext = {
    wss,
    steps: [],
    onRejected: () => {}
  }
  fastify.decorateRequest('wsUser', null)
  fastify.decorate('wsRoute', declareWebSocketRoute as unknown as WsRouteMethod)
  fastify.addHook('onRoute', createRouteGuard(normalized, context))
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

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Declares a guarded WebSocket GET route; `handler` is `(socket, request)` as with
     * @fastify/websocket. Per-route guard settings go in `config.wsGuard`.
     */
    wsRoute: WsRouteMethod
  }
  interface FastifyRequest {
    /** The verified token claims on authenticated WebSocket routes; `null` elsewhere. */
    wsUser: WsUser | null
  }
  interface FastifyContextConfig {
    /** Guard settings of this route: overrides of the plugin options, or `false` to opt out. */
    wsGuard?: WsGuardRouteOptions | false
  }
}
