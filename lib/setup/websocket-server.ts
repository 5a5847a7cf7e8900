import websocket, { type WebsocketPluginOptions } from '@fastify/websocket'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ServerOptions, WebSocket, WebSocketServer } from 'ws'
import { GuardedWebSocket, markError } from '../connection/guarded-socket.js'
import { installProtocolSelection } from '../handshake/protocols.js'

const kInstalled = Symbol('fastify-ws-guard.installed')

/**
 * Registers @fastify/websocket with the guard's ws options unless the app already did, and
 * takes over subprotocol selection on its ws server (once, however many guards share it).
 */
export async function ensureWebSocket (fastify: FastifyInstance, options: ServerOptions): Promise<WebSocketServer> {
  if (!fastify.hasDecorator('websocketServer')) {
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
 * @fastify/websocket's own behaviour (log, terminate), plus the connection's close reason:
 * a handler that throws or rejects ends its connection as an error, never the process.
 */
function onHandlerError (this: FastifyInstance, error: Error, socket: WebSocket, request: FastifyRequest): void {
  markError(socket)
  request.log.error({ err: error }, 'websocket handler failed')
  socket.terminate()
}
