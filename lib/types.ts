import type { WebsocketHandler } from '@fastify/websocket'
import type { FastifyInstance, RouteShorthandOptions } from 'fastify'

/** Route options `app.wsRoute()` accepts: those of a GET route, `config.wsGuard` included. */
export type WsRouteOptions = Omit<RouteShorthandOptions, 'websocket'>

/** `app.wsRoute(path, [options], handler)`. */
export interface WsRouteMethod {
  (path: string, handler: WebsocketHandler): FastifyInstance
  (path: string, options: WsRouteOptions, handler: WebsocketHandler): FastifyInstance
}
