import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { RevocationList } from './lib/auth/revocations.js'
import { createRefresh } from './lib/connection/refresh.js'
import { ConnectionTracker } from './lib/connection/tracker.js'
import { HandshakeGuard } from './lib/handshake/chain.js'
import { kHandshake, type GuardedIncomingMessage } from './lib/handshake/contract.js'
import { UpgradeSockets } from './lib/handshake/upgrade-sockets.js'
import { SessionControl, type RevokeTarget, type SessionView } from './lib/sessions/control.js'
import { LeaseKeeper } from './lib/sessions/leases.js'
import { StoreHealth } from './lib/sessions/store-health.js'
import { normalizeOptions, type WsGuardOptions, type WsGuardRouteOptions } from './lib/setup/options.js'
import { createNotFoundGuard, createRouteGuard, declareWebSocketRoute } from './lib/setup/routes.js'
import { ensureWebSocket } from './lib/setup/websocket-server.js'
import { StatsCounter, type WsGuardStats } from './lib/stats.js'
import type { SessionFilter } from './lib/store/contract.js'
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
  const settings = normalizeOptions(options)
  const stats = new StatsCounter()
  const revocations = new RevocationList()
  const connections = new ConnectionTracker(stats)
  const storeHealth = new StoreHealth(fastify.log)
  const leases = new LeaseKeeper(settings.store, settings.onStoreError, storeHealth)
  const sessions = new SessionControl(connections, settings.store, leases, revocations, storeHealth, fastify.log, settings.revocationTtl)

  // Added before @fastify/websocket registers its own preClose, which closes every socket
  // without a code. Handshakes stop first, then open connections get a 1001, spread over
  // drainSpread; whatever has not ended when shutdownGrace is over is ended then, so
  // app.close() always ends.
  fastify.addHook('preClose', async () => {
    handshakes.startClosing()
    const drained = connections.closeAll(settings.drainSpread ?? Math.min(settings.maxDefaultDrainSpread, connections.open.size))
    await settledWithin(settings.shutdownGrace, drained, upgrades.settled())
    connections.terminateAll()
    handshakes.refuseWaiting()
    upgrades.destroyAll()
    // Terminated sockets close at once: resolve with every connection counted.
    await drained
  })
  // After every socket is gone: their leases were given back through the store.
  fastify.addHook('onClose', async () => { await sessions.stop() })

  // The revocations in force and the control channel, before the first handshake.
  await sessions.start()
  const wss = await ensureWebSocket(fastify, settings.websocket)
  const handshakes = new HandshakeGuard(wss, settings, stats, leases, revocations)
  const upgrades = new UpgradeSockets(fastify.server, wss, settings.route.handshakeTimeout, (status) => handshakes.answeredByFastify(status))
  wss.on('connection', (socket, raw: GuardedIncomingMessage) => {
    const state = raw[kHandshake]
    if (state?.owner === handshakes.owner) connections.track(socket, state)
  })

  fastify.decorateRequest('wsUser', null)
  fastify.decorateRequest('wsRefresh', createRefresh(connections, revocations))
  fastify.decorate('wsRoute', declareWebSocketRoute as unknown as WsRouteMethod)
  const wsGuard: WsGuardDecorator = {
    stats: () => stats.snapshot(connections.open.size),
    get draining () { return connections.draining },
    sessions: (filter) => sessions.sessions(filter),
    disconnect: async (filter, closeOptions) => await sessions.disconnect(filter, closeOptions),
    revoke: async (target, revokeOptions) => await sessions.revoke(target, revokeOptions),
    count: async (filter) => await sessions.count(filter)
  }
  fastify.decorate('wsGuard', wsGuard)
  fastify.addHook('onRequest', createNotFoundGuard(stats))
  fastify.addHook('onRoute', createRouteGuard(settings, handshakes, connections, upgrades))
}

/** Resolves when every promise has, or after `ms`, whichever comes first. */
async function settledWithin (ms: number, ...pending: Array<Promise<void>>): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([Promise.all(pending), new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) })])
  clearTimeout(timer)
}

export const fastifyWsGuard = fp(plugin, { fastify: '5.x', name: 'fastify-ws-guard' })
export default fastifyWsGuard

export * from './lib/errors.js'
export type { WsGuardOptions, WsGuardRouteOptions } from './lib/setup/options.js'
export type { OriginOption, OriginPredicate } from './lib/handshake/origin-policy.js'
export type { WsGuardUserRegistry, WsRouteHandler, WsRouteMethod, WsRouteOptions, WsUser } from './lib/types.js'
export type { WsGuardAuthOptions } from './lib/auth/options.js'
export type { TokenSource } from './lib/auth/token-sources.js'
export { redactQueryTokens, requestSerializer } from './lib/serializers.js'
export { channels } from './lib/stats.js'
export type { AcceptedMessage, ClosedMessage, CloseReason, DroppedMessage, RejectedMessage, WsGuardStats } from './lib/stats.js'
export { MemoryStore } from './lib/store/memory.js'
export type { ConnectionStore, ControlMessage, Lease, Revocation, SessionFilter, StoreListener } from './lib/store/contract.js'
export type { RevokeTarget, SessionView } from './lib/sessions/control.js'

/** `app.wsGuard`: counters, the draining flag, and the sessions of this instance and of the fleet. */
export interface WsGuardDecorator {
  /** The guard's counters. */
  stats: () => WsGuardStats
  /** True from the moment `app.close()` starts: answer readiness probes with 503. */
  readonly draining: boolean
  /** This instance's open guarded connections, filtered by `sub`, `jti` and `route`. Never a token. */
  sessions: (filter?: SessionFilter) => SessionView[]
  /**
   * Closes the matching sessions on every instance that shares the store; default 4403
   * `disconnected`. Resolves with how many closed on this instance.
   */
  disconnect: (filter: SessionFilter, options?: { code?: number | undefined, reason?: string | undefined }) => Promise<number>
  /**
   * "Log out everywhere": closes the matching sessions on every instance with 4401 `token
   * revoked`, and refuses matching tokens until `until` (epoch seconds; default now +
   * `revocationTtl`). Resolves with how many closed on this instance.
   */
  revoke: (target: RevokeTarget, options?: { until?: number | undefined }) => Promise<number>
  /** How many connections `sub` holds across the fleet. */
  count: (filter: { sub: string }) => Promise<number>
}

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Declares a guarded WebSocket GET route; `handler` is `(socket, request)` as with
     * @fastify/websocket. Per-route guard settings go in `config.wsGuard`.
     */
    wsRoute: WsRouteMethod
    /** The guard's counters, draining flag and sessions. */
    wsGuard: WsGuardDecorator
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
