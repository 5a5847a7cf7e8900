import type { Duplex } from 'node:stream'
import type { FastifyReply, FastifyRequest, onRequestHookHandler, preHandlerHookHandler } from 'fastify'
import type { WebSocketServer } from 'ws'
import type { RevocationList } from '../auth/revocations.js'
import { carriesToken } from '../auth/token-sources.js'
import { HandshakeTimeoutError, InternalError, ShuttingDownError, TokenRevokedError } from '../errors.js'
import { errorIdentity } from '../serializers.js'
import type { LeaseKeeper } from '../sessions/leases.js'
import type { NormalizedOptions, RouteSettings } from '../setup/options.js'
import type { StatsCounter } from '../stats.js'
import { TimerWheel, type WheelEntry } from '../timer-wheel.js'
import { challenge, createAuthStep } from './authenticate.js'
import { HandshakeState, kHandshake, type GuardedIncomingMessage, type GuardStep, type Rejection } from './contract.js'
import { createLimitStep } from './limits.js'
import { checkOriginStep } from './origin.js'
import { parseOfferedProtocols, selectProtocolStep } from './protocols.js'
import { recordRejection, refuseBeforeHandshake, sendCloseRejection, sendHttpRejection } from './reject.js'
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
  readonly #waiting = new Set<HandshakeRun>()

  readonly #revocations: RevocationList

  constructor (wss: WebSocketServer, options: NormalizedOptions, stats: StatsCounter, leases: LeaseKeeper, revocations: RevocationList) {
    this.wss = wss
    this.stats = stats
    this.#limitConnections = createLimitStep(leases, options.maxConnections)
    this.#revocations = revocations
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
    if (settings.auth !== undefined) steps.push(createAuthStep(settings.auth, settings.maxConnectionsPerUser !== undefined, this.#revocations))
    // 7. Room for one more connection, in the process and for the user across the fleet:
    //    503, 429 FST_WS_GUARD_TOO_MANY_*, 503 FST_WS_GUARD_STORE_UNAVAILABLE.
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
        refuseBeforeHandshake(this.stats, request, reply, offered)
        return
      }
      const state = new HandshakeState(this.owner, settings, route, offered, reply.raw.socket as Duplex, request)
      ;(request.raw as GuardedIncomingMessage)[kHandshake] = state
      // 3 to 7, then 8: done() lets @fastify/websocket upgrade.
      new HandshakeRun(this, steps, request, reply, state, done).next(0)
    }
  }

  /**
   * A `preHandler` of every guarded route, after the app's own hooks: the last moment before
   * @fastify/websocket upgrades, so a handshake that was still in the app's hooks when closing
   * started, or whose token was revoked meanwhile, is refused too, and its handler never runs.
   */
  readonly beforeUpgrade: preHandlerHookHandler = (request, reply, done) => {
    const state = (request.raw as GuardedIncomingMessage)[kHandshake]
    if (!request.ws || state?.owner !== this.owner) return done()
    if (this.closing) return refuse(this, request, reply, state, { error: new ShuttingDownError() })
    // A revoke() that landed while an async check (authorize, the store) was pending.
    if (state.user !== null && this.#revocations.revokes(state.user)) {
      return refuse(this, request, reply, state, challenge(state.settings.auth!, new TokenRevokedError()))
    }
    done()
  }

  /**
   * An upgrade Fastify answered before any hook ran: while closing, its own 503 is this
   * guard's refusal in all but name, and is counted as one.
   */
  answeredByFastify (statusCode: number): void {
    if (this.closing && statusCode === 503) this.stats.countRejection('FST_WS_GUARD_SHUTTING_DOWN')
  }

  /** From `preClose` on: new handshakes are refused, and so are those waiting on a step when it settles. */
  startClosing (): void {
    this.closing = true
  }

  /** Refuses the handshakes still waiting when the shutdown grace is over. */
  refuseWaiting (): void {
    for (const run of this.#waiting) run.reject({ error: new ShuttingDownError() })
  }

  /** A handshake starts waiting on an async step: `handshakeTimeout` bounds it from here. */
  startWaiting (run: HandshakeRun): void {
    this.#waiting.add(run)
    this.timers.schedule(run, Date.now() + run.state.settings.handshakeTimeout)
  }

  stopWaiting (run: HandshakeRun): void {
    this.#waiting.delete(run)
    this.timers.remove(run)
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
      this.guard.startWaiting(this)
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
      // The app started closing meanwhile: no upgrade now.
      if (result === undefined && this.guard.closing) return this.reject({ error: new ShuttingDownError() })
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
    refuse(this.guard, this.request, this.reply, this.state, rejection)
  }

  timeout (): void {
    this.reject({ error: new HandshakeTimeoutError() })
  }

  finish (): void {
    this.#settled = true
    if (this.#onGone !== undefined) {
      this.guard.stopWaiting(this)
      this.state.socket.off('end', this.#onGone)
      this.state.socket.off('close', this.#onGone)
    }
  }
}

/** Answers a refusal as the route says (over HTTP, or with a close frame after the upgrade), then records it. */
function refuse (guard: HandshakeGuard, request: FastifyRequest, reply: FastifyReply, state: HandshakeState, rejection: Rejection): void {
  const protocol = state.settings.rejectWith === 'close' ? protocolForClose(state) : undefined
  if (protocol !== undefined) {
    state.protocol = protocol
    sendCloseRejection(guard.wss, request, reply, rejection.error)
  } else {
    sendHttpRejection(request, reply, rejection)
  }
  recordRejection(guard.stats, request, state, rejection.error)
}

/**
 * The subprotocol the 101 of a close rejection names: a client that offered subprotocols fails
 * a handshake that selects none before it reads the close frame. `undefined` when there is no
 * safe choice (only a `bearer.<token>` offered): that refusal goes over HTTP.
 */
function protocolForClose (state: HandshakeState): string | false | undefined {
  if (state.protocol !== false || state.offeredProtocols.length === 0) return state.protocol
  const choice = state.offeredProtocols.find((protocol) => !carriesToken(protocol))
  return choice ?? undefined
}
