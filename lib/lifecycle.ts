import { performance } from 'node:perf_hooks'
import type { Duplex } from 'node:stream'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { WebSocket, WebSocketServer } from 'ws'
import { ConnectionTracker } from './connections.js'
import type { GuardError } from './errors.js'
import { errorIdentity, type GuardContext, type HandshakeRun, type HandshakeState } from './guard.js'
import { TimerWheel } from './timer-wheel.js'
import { createLimitStep } from './limits.js'
import type { NormalizedOptions } from './options.js'
import { acceptedChannel, rejectedChannel, StatsCounter } from './stats.js'
import { kHandshake } from './symbols.js'

/**
 * Builds one plugin instance's context and ties connections to it: counts and reports
 * refusals, tracks every accepted connection, and closes them all gracefully on `app.close()`.
 */
export function createLifecycle (fastify: FastifyInstance, options: NormalizedOptions): Lifecycle {
  const stats = new StatsCounter()
  const tracker = new ConnectionTracker(stats)
  const limitStep = createLimitStep(options.store, options.maxConnections, (err) => {
    fastify.log.error({ wsGuard: { err: errorIdentity(err) } }, 'websocket connection store failed to release a connection')
  })
  const context: GuardContext = {
    wss: undefined as unknown as WebSocketServer,
    steps: [limitStep],
    closing: false,
    // 25 ms is precise enough for timeouts of seconds (or of a few hundred ms in tests).
    handshakeTimers: new TimerWheel<HandshakeRun>(25, 4096, (run) => run.timeout()),
    onRejected (request: FastifyRequest, state: HandshakeState | undefined, error: GuardError) {
      stats.countRejection(error.code)
      if (rejectedChannel.hasSubscribers) {
        rejectedChannel.publish({
          requestId: request.id,
          route: state?.route ?? request.routeOptions.url,
          code: error.code,
          statusCode: error.statusCode,
          sub: state?.user?.sub,
          handshakeMs: state === undefined ? 0 : performance.now() - state.startedAt
        })
      }
    }
  }

  // Added before @fastify/websocket is registered, so it runs before its preClose, which
  // closes every socket without a code.
  fastify.addHook('preClose', async () => {
    context.closing = true
    // While closing, Fastify answers upgrades with its own 503 before any hook runs, and an
    // upgrade socket is no longer the HTTP server's to close: without this, server.close()
    // would wait on it forever.
    fastify.server.on('upgrade', closeAfterAnswer)
    await tracker.shutdown(options.shutdownGrace)
  })

  function attach (wss: WebSocketServer): void {
    context.wss = wss

    wss.on('connection', (socket: WebSocket, raw: FastifyRequest['raw'] & { [kHandshake]?: HandshakeState }) => {
      const state = raw[kHandshake]
      if (state?.context !== context) return
      state.connection = tracker.track(socket, state, state.request)
      if (acceptedChannel.hasSubscribers) {
        acceptedChannel.publish({
          requestId: state.request.id,
          route: state.route,
          protocol: state.protocol,
          sub: state.user?.sub,
          handshakeMs: performance.now() - state.startedAt
        })
      }
    })
  }
  return { context, stats, tracker, attach }
}

function closeAfterAnswer (_request: unknown, socket: Duplex): void {
  // The guard's own refusals have closed or are closing their sockets already.
  if (socket.writableEnded || socket.destroyed) return
  socket.end()
  socket.once('finish', () => socket.destroy())
}

export interface Lifecycle {
  readonly context: GuardContext
  readonly stats: StatsCounter
  readonly tracker: ConnectionTracker
  /** Ties the lifecycle to the ws server once @fastify/websocket is there. */
  readonly attach: (wss: WebSocketServer) => void
}
