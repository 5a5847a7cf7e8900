import websocket, { type WebsocketPluginOptions } from '@fastify/websocket'
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import type { ServerOptions, WebSocket, WebSocketServer } from 'ws'
import { GuardedWebSocket, markEnding } from '../connection/guarded-socket.js'
import { installProtocolSelection } from '../handshake/protocols.js'
import { errorIdentity } from '../serializers.js'

const kInstalled = Symbol('fastify-ws-guard.installed')

/**
 * Registers @fastify/websocket with the guard's ws options unless the app already did, and
 * takes over subprotocol selection on its ws server (once, however many guards share it).
 */
export async function ensureWebSocket (fastify: FastifyInstance, options: ServerOptions): Promise<WebSocketServer> {
  if (!fastify.hasDecorator('websocketServer')) {
    warnUnsafeOptions(fastify.log, options)
    await fastify.register(websocket, {
      options: { WebSocket: GuardedWebSocket, ...options } as WebsocketPluginOptions['options'],
      errorHandler: onHandlerError
    })
  }
  const wss = fastify.websocketServer as WebSocketServer & { [kInstalled]?: true }
  if (wss[kInstalled] !== true) {
    wss[kInstalled] = true
    installProtocolSelection(wss)
  }
  return wss
}

/**
 * What @fastify/websocket hands its error handler: a handler that threw or rejected (the
 * app's bug: error level, ends the connection, never the process), or ws's error for a client
 * that broke the protocol: the client's doing, one info line, no stack, so that no client can
 * fill the log. (A reset is no error to ws: it ends as a close without a frame.)
 */
function onHandlerError (this: FastifyInstance, error: Error & { code?: unknown }, socket: WebSocket, request: FastifyRequest): void {
  const code = typeof error.code === 'string' ? error.code : ''
  if (code.startsWith('WS_ERR_')) {
    markEnding(socket, 'protocolError')
    request.log.info({ wsGuard: { err: errorIdentity(error) } }, 'websocket client broke the protocol')
  } else {
    markEnding(socket, 'error')
    request.log.error({ err: error }, 'websocket handler failed')
  }
  socket.terminate()
}

/** ws limits beyond which a client can make the server hold far more than it sent. */
const safeLimits = Object.freeze({
  // Tiny fragments pin about 15 times their size on the wire (websockets/ws#2331).
  maxFragments: 1024,
  maxBufferedChunks: 16 * 1024,
  maxPayload: 16 * 1024 * 1024
})

/** Warns once, at registration, of `websocket` options raised past what is safe to face the internet with. */
export function warnUnsafeOptions (log: FastifyBaseLogger, options: ServerOptions): void {
  for (const [name, safe] of Object.entries(safeLimits)) {
    const value = (options as Record<string, unknown>)[name]
    if (typeof value === 'number' && (value > safe || value === 0)) {
      log.warn({ wsGuard: { option: `websocket.${name}`, value, safe } }, `fastify-ws-guard: websocket.${name} is ${value === 0 ? '0 (no limit)' : value}; a client can make the server hold far more memory than it sends: keep it at ${safe} or less`)
    }
  }
}
