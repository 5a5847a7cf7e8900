import type { FastifyInstance, onRequestHookHandler, preHandlerHookHandler, RouteOptions } from 'fastify'
import type { ConnectionTracker } from '../connection/tracker.js'
import { InvalidOptionError, NotWebSocketRouteError, RouteNotFoundError } from '../errors.js'
import type { HandshakeGuard } from '../handshake/chain.js'
import type { UpgradeSockets } from '../handshake/upgrade-sockets.js'
import { refuseBeforeHandshake } from '../handshake/reject.js'
import type { StatsCounter } from '../stats.js'
import { assertWithinMaxPayload, resolveRouteSettings, type NormalizedOptions } from './options.js'

/**
 * The `onRoute` hook that guards every route declared in the plugin's scope: WebSocket routes
 * get the guard chain, plain routes get a clear refusal of upgrade requests.
 */
export function createRouteGuard (options: NormalizedOptions, guard: HandshakeGuard, tracker: ConnectionTracker, upgrades: UpgradeSockets) {
  return function onRoute (routeOptions: RouteOptions): void {
    const overrides = routeOptions.config?.wsGuard
    if (overrides === false) return
    const methods = ([] as string[]).concat(routeOptions.method)
    const name = `${methods.join(',')} ${routeOptions.url}`
    const isWebSocket = routeOptions.websocket === true || typeof routeOptions.wsHandler === 'function'
    if (!isWebSocket) {
      if (overrides !== undefined) {
        throw new InvalidOptionError(`config.wsGuard is set on ${name}, which is not a WebSocket route; add websocket: true or declare it with app.wsRoute()`)
      }
      prependOnRequest(routeOptions, rejectUpgrade(guard.stats, methods[0]!, routeOptions.url))
      return
    }
    // A HEAD route (including the one Fastify adds for a GET) can never be upgraded.
    if (methods.every((method) => method === 'HEAD')) return
    const settings = resolveRouteSettings(options, overrides, name)
    assertWithinMaxPayload(settings, guard.wss.options.maxPayload, name)
    tracker.noteIntervals(settings)
    upgrades.noteHandshakeTimeout(settings.handshakeTimeout)
    // A wsHandler route also serves plain HTTP through its handler.
    const servesHttp = routeOptions.websocket !== true
    prependOnRequest(routeOptions, guard.routeHook(settings, routeOptions.url, servesHttp))
    appendPreHandler(routeOptions, guard.beforeUpgrade)
  }
}

/**
 * Upgrades to a path no route matches, in the guard's scope: Fastify's own 404 quotes the URL,
 * query string (and a query token) included. The guard answers them itself, path cut to 100
 * characters, query dropped. Every other request goes on at the cost of one property read.
 */
export function createNotFoundGuard (stats: StatsCounter): onRequestHookHandler {
  return function wsGuardNotFound (request, reply, done) {
    if (!request.ws || !request.is404) return done()
    const path = request.url.split('?', 1)[0]!
    const error = new RouteNotFoundError(request.method, path.length > 100 ? path.slice(0, 100) + '...' : path)
    refuseBeforeHandshake(stats, request, reply, error)
  }
}

/** Upgrades aimed at a plain HTTP route would get a 101 and an immediate close; refuse them first. */
function rejectUpgrade (stats: StatsCounter, method: string, url: string): onRequestHookHandler {
  return function wsGuardPlainRoute (request, reply, done) {
    if (!request.ws) return done()
    const error = new NotWebSocketRouteError(method, url)
    refuseBeforeHandshake(stats, request, reply, error)
  }
}

/** The guard runs before the route's own hooks, so no app code sees a refused handshake. */
function prependOnRequest (routeOptions: RouteOptions, hook: onRequestHookHandler): void {
  const existing = routeOptions.onRequest
  routeOptions.onRequest = existing === undefined ? [hook] : [hook, ...([] as onRequestHookHandler[]).concat(existing)]
}

/** After the route's own preHandlers: the last check before the upgrade. */
function appendPreHandler (routeOptions: RouteOptions, hook: preHandlerHookHandler): void {
  const existing = routeOptions.preHandler
  routeOptions.preHandler = existing === undefined ? [hook] : [...([] as preHandlerHookHandler[]).concat(existing), hook]
}

/** Arguments of `app.wsRoute(path, [routeOptions], handler)`. */
export function declareWebSocketRoute (this: FastifyInstance, path: string, optionsOrHandler: object | Function, handler?: Function): FastifyInstance {
  const options = typeof optionsOrHandler === 'function' ? {} : optionsOrHandler
  const wsHandler = typeof optionsOrHandler === 'function' ? optionsOrHandler : handler
  if (typeof wsHandler !== 'function') {
    throw new InvalidOptionError(`wsRoute('${path}') needs a handler (socket, request) => {}`)
  }
  return this.route({ ...options, method: 'GET', url: path, websocket: true, handler: wsHandler } as RouteOptions)
}
