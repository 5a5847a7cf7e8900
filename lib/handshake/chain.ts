import type { Server } from 'node:http'
import type { Duplex } from 'node:stream'
import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import type { WebSocketServer } from 'ws'
import { bearerPrefix } from '../auth/token-sources.js'
import { HandshakeTimeoutError, InternalError, ShuttingDownError } from '../errors.js'
import { errorIdentity } from '../serializers.js'
import type { NormalizedOptions, RouteSettings } from '../setup/options.js'
import type { StatsCounter } from '../stats.js'
import { TimerWheel, type WheelEntry } from '../timer-wheel.js'
import { createAuthStep } from './authenticate.js'
import { kHandshake, type GuardedIncomingMessage, type GuardStep, type HandshakeState, type Rejection } from './contract.js'
import { createLimitStep } from './limits.js'
import { checkOriginStep } from './origin.js'
import { parseOfferedProtocols, selectProtocolStep } from './protocols.js'
import { recordRejection, sendCloseRejection, sendHttpRejection } from './reject.js'
import { checkHandshakeShape } from './shape.js'

/**
 * The handshake guard of one plugin instance: builds each guarded route's chain of checks and
 * refuses new upgrades once the app is closing.
 */
export class HandshakeGuard {
  /** Marks the handshakes of this instance: several may share one ws server. */
  readonly owner = Symbol('fastify-ws-guard.instance')
  /** Set by `app.close()`: handshakes not upgraded yet are refused. */
  closing = false
  readonly wss: WebSocketServer
  readonly stats: StatsCounter
  /** Deadlines of handshakes waiting on async checks, on one shared wheel. */
  // 25 ms is precise enough for timeouts of seconds (or of a few hundred ms in tests).
  readonly timers = new TimerWheel<HandshakeRun>(25, 4096, (run) => run.timeout())
  readonly #refuseWhileClosing: GuardStep = () => this.closing ? { error: new ShuttingDownError() } : undefined
  readonly #limitConnections: GuardStep

  constructor (wss: WebSocketServer, options: NormalizedOptions, stats: StatsCounter, log: FastifyBaseLogger) {
    this.wss = wss
    this.stats = stats
    this.#limitConnections = createLimitStep(options.store, options.maxConnections, (err) => {
      log.error({ wsGuard: { err: errorIdentity(err) } }, 'websocket connection store failed to release a connection')
    })
  }

  /**
   * The `onRequest` hook of one guarded route: the whole handshake, in order. Each step either
   * goes on or refuses with the code named beside it; only after the last one does
   * @fastify/websocket answer 101 and run the route's handler.
   */
  routeHook (settings: RouteSettings, route: string, servesHttp: boolean): onRequestHookHandler {
    const steps: GuardStep[] = [
      // 3. The app is not closing: 503 FST_WS_GUARD_SHUTTING_DOWN.
      this.#refuseWhileClosing,
      // 4. The Origin is allowed: 403 FST_WS_GUARD_ORIGIN_NOT_ALLOWED.
      checkOriginStep,
      // 5. A subprotocol both sides speak, never a bearer.<token>: 400 FST_WS_GUARD_UNSUPPORTED_PROTOCOL, FST_WS_GUARD_PROTOCOL_REQUIRED.
      selectProtocolStep
    ]
    // 6. A token, found, verified, not revoked, authorized: 400, 401, 403, 503 FST_WS_GUARD_TOKEN_* and others.
    if (settings.auth !== undefined) steps.push(createAuthStep(settings.auth))
    // 7. Room for one more connection, in the process and for the user: 503, 429 FST_WS_GUARD_TOO_MANY_*.
    steps.push(this.#limitConnections)

    return (request, reply, done) => {
      // A wsHandler route also serves plain HTTP through its handler.
      if (servesHttp && !request.ws) return done()
      // 1. An RFC 6455 handshake: 426 FST_WS_GUARD_UPGRADE_REQUIRED and kin, 400 FST_WS_GUARD_INVALID_KEY.
      // 2. A well-formed Sec-WebSocket-Protocol: 400 FST_WS_GUARD_INVALID_PROTOCOL_HEADER.
      // A malformed handshake cannot be upgraded, so both are always answered over HTTP.
      const shapeError = checkHandshakeShape(request)
      const offered = shapeError ?? parseOfferedProtocols(request.headers['sec-websocket-protocol'])
      if (!Array.isArray(offered)) {
        sendHttpRejection(request, reply, { error: offered })
        recordRejection(this.stats, request, undefined, offered)
        return
      }
      const state: HandshakeState = {
        owner: this.owner,
        settings,
        route,
        protocol: false,
        offeredProtocols: offered,
        user: null,
        socket: reply.raw.socket as Duplex,
        startedAt: performance.now(),
        request
      }
      ;(request.raw as GuardedIncomingMessage)[kHandshake] = state
      // 3 to 7, then 8: done() lets @fastify/websocket upgrade.
      new HandshakeRun(this, steps, request, reply, state, done).next(0)
    }
  }

  /** From `preClose` on: refuse new handshakes and close the sockets of upgrades Fastify answers itself. */
  startClosing (server: Server): void {
    this.closing = true
    // While closing, Fastify answers upgrades with its own 503 before any hook runs, and an
    // upgrade socket is no longer the HTTP server's to close: without this, server.close()
    // would wait on it forever.
    server.on('upgrade', closeAfterAnswer)
  }
}

/**
 * Walks the steps synchronously until one goes async; then bounds the rest by
 * `handshakeTimeout`, on the guard's shared timer wheel (a timer per handshake costs more
 * than the checks themselves).
 */
export class HandshakeRun implements WheelEntry {
  due = 0
  slot = -1
  wheelPrev: WheelEntry | undefined = undefined
  wheelNext: WheelEntry | undefined = undefined
  #onGone: (() => void) | undefined
  #settled = false

  constructor (
    readonly guard: HandshakeGuard,
    readonly steps: readonly GuardStep[],
    readonly request: FastifyRequest,
    readonly reply: FastifyReply,
    readonly state: HandshakeState,
    readonly done: (err?: Error) => void
  ) {}

  next (from: number): void {
    for (let i = from; i < this.steps.length; i++) {
      let result: ReturnType<GuardStep>
      try {
        result = this.steps[i]!(this.request, this.state)
      } catch (err) {
        return this.fail(err)
      }
      if (result === undefined) continue
      if ('then' in result) return this.wait(result, i + 1)
      return this.reject(result)
    }
    this.finish()
    this.done()
  }

  wait (pending: Promise<Rejection | undefined>, resumeAt: number): void {
    if (this.#onGone === undefined) {
      this.guard.timers.schedule(this, Date.now() + this.state.settings.handshakeTimeout)
      // A client that hangs up (FIN or reset) while we wait gets nothing: no answer, no upgrade.
      this.#onGone = () => {
        this.finish()
        this.state.socket.destroy()
      }
      this.state.socket.once('end', this.#onGone)
      this.state.socket.once('close', this.#onGone)
    }
    pending.then((result) => {
      if (this.#settled) return
      if (result === undefined) return this.next(resumeAt)
      this.reject(result)
    }, (err: unknown) => {
      if (!this.#settled) this.fail(err)
    })
  }

  fail (err: unknown): void {
    this.request.log.error({ wsGuard: { err: errorIdentity(err) } }, 'websocket guard step failed')
    this.reject({ error: new InternalError() })
  }

  reject (rejection: Rejection): void {
    this.finish()
    const { state } = this
    const protocol = state.settings.rejectWith === 'close' ? protocolForClose(state) : undefined
    if (protocol !== undefined) {
      state.protocol = protocol
      sendCloseRejection(this.guard.wss, this.request, this.reply, rejection.error)
    } else {
      sendHttpRejection(this.request, this.reply, rejection)
    }
    recordRejection(this.guard.stats, this.request, state, rejection.error)
  }

  timeout (): void {
    this.reject({ error: new HandshakeTimeoutError() })
  }

  finish (): void {
    this.#settled = true
    if (this.#onGone !== undefined) {
      this.guard.timers.remove(this)
      this.state.socket.off('end', this.#onGone)
      this.state.socket.off('close', this.#onGone)
    }
  }
}

/**
 * The subprotocol the 101 of a close rejection names: a client that offered subprotocols fails
 * a handshake that selects none before it reads the close frame. `undefined` when there is no
 * safe choice (only a `bearer.<token>` offered): that refusal goes over HTTP.
 */
function protocolForClose (state: HandshakeState): string | false | undefined {
  if (state.protocol !== false || state.offeredProtocols.length === 0) return state.protocol
  const choice = state.offeredProtocols.find((protocol) => !protocol.startsWith(bearerPrefix))
  return choice ?? undefined
}

function closeAfterAnswer (_request: unknown, socket: Duplex): void {
  // The guard's own refusals have closed or are closing their sockets already.
  if (socket.writableEnded || socket.destroyed) return
  socket.end()
  socket.once('finish', () => socket.destroy())
}
