import websocket, { type WebsocketPluginOptions } from '@fastify/websocket'
import type { FastifyInstance } from 'fastify'
import type { ServerOptions, WebSocketServer } from 'ws'
import { GuardedWebSocket } from './connections.js'
import { installProtocolSelection } from './protocols.js'

const kInstalled = Symbol('fastify-ws-guard.installed')

/**
 * Registers @fastify/websocket with the guard's ws options unless the app already did, and
 * takes over subprotocol selection on its ws server (once, however many guards share it).
 */
export async function ensureWebSocket (fastify: FastifyInstance, options: ServerOptions): Promise<WebSocketServer> {
  if (!fastify.hasDecorator('websocketServer')) {
    await fastify.register(websocket, { options: { WebSocket: GuardedWebSocket, ...options } as WebsocketPluginOptions['options'] })
  }
  const wss = fastify.websocketServer as WebSocketServer & { [kInstalled]?: true }
  if (wss[kInstalled] !== true) {
    wss[kInstalled] = true
    installProtocolSelection(wss)
  }
  return wss
}
