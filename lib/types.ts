import type { FastifyInstance, FastifyRequest, RouteShorthandOptions } from 'fastify'
import type { JWTPayload } from 'jose'
import type { WebSocket } from 'ws'

/**
 * Declare the shape of your tokens' claims once, and `request.wsUser` is typed everywhere:
 * @example
 * ```ts
 * declare module 'fastify-ws-guard' {
 *   interface WsGuardUserRegistry { user: { sub: string, role: 'admin' | 'member' } }
 * }
 * ```
 */
export interface WsGuardUserRegistry {}

/** The verified claims: the registry's `user` when declared, jose's `JWTPayload` otherwise. */
export type WsUser = WsGuardUserRegistry extends { user: infer User } ? User : JWTPayload

/** Route options `app.wsRoute()` accepts: those of a GET route, `config.wsGuard` included. */
export type WsRouteOptions = Omit<RouteShorthandOptions, 'websocket'>

/** A handler whose request carries claims of type `User` (a refinement of {@link WsUser}). */
export type WsRouteHandler<User = WsUser> = (
  this: FastifyInstance,
  socket: WebSocket,
  request: FastifyRequest & { wsUser: User | null }
) => void | Promise<unknown>

/** `app.wsRoute(path, [options], handler)`. */
export interface WsRouteMethod {
  <User = WsUser>(path: string, handler: WsRouteHandler<User>): FastifyInstance
  <User = WsUser>(path: string, options: WsRouteOptions, handler: WsRouteHandler<User>): FastifyInstance
}
