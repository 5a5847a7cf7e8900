import type { Duplex } from 'node:stream'
import { performance } from 'node:perf_hooks'
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import type { JWTPayload } from 'jose'
import type { WebSocketServer } from 'ws'
import { HandshakeTimeoutError, InternalError, OriginNotAllowedError, ShuttingDownError, type GuardError } from './errors.js'
import { createAuthStep } from './auth/authenticate.js'
import { bearerPrefix } from './auth/token-sources.js'
import { checkHandshake } from './handshake.js'
import type { RouteSettings } from './options.js'
import { checkOrigin } from './origin.js'
import { parseOfferedProtocols, selectProtocol } from './protocols.js'
import { sendCloseRejection, sendHttpRejection, type Rejection } from './reject.js'
import { kHandshake } from './symbols.js'
import type { Connection } from './connections.js'
import type { TimerWheel, WheelEntry } from './timer-wheel.js'

/** What the guard knows about one handshake; kept on the raw request for ws's callbacks. */
export interface HandshakeState {
  readonly settings: RouteSettings
  /** The route's URL pattern, never the request URL (which may carry a token in its query). */
  readonly route: string
  /** The subprotocol the 101 names; `false` for none. */
  protocol: string | false
  readonly offeredProtocols: readonly string[]
  /** The verified claims, on authenticated routes. */
  user: Readonly<JWTPayload> | null
  /** The upgrade socket; limits release their counts when it closes. */
  readonly socket: Duplex
  /** `performance.now()` when the guard started on this handshake. */
  readonly startedAt: number
  /** The plugin instance that guards it (several may share one ws server). */
  readonly context: GuardContext
  readonly request: FastifyRequest
  /** Set once the upgrade completed. */
  connection: Connection | undefined
}

/** One check of the chain: `undefined` to go on, a rejection to stop, or a promise of either. */
export type GuardStep = (request: FastifyRequest, state: HandshakeState) => Rejection | undefined | Promise<Rejection | undefined>

/** What every guarded route of one plugin instance shares. */
export interface GuardContext {
  wss: WebSocketServer
  /** Steps every guarded route runs after authentication (limits). */
  readonly steps: readonly GuardStep[]
  /** Called once for every refused handshake, after it was answered. */
  readonly onRejected: (request: FastifyRequest, state: HandshakeState | undefined, error: GuardError) => void
  /** Set by `app.close()`: new upgrades are refused. */
  closing: boolean
  /** Deadlines of handshakes waiting on async checks. */
  readonly handshakeTimers: TimerWheel<HandshakeRun>
}

type RawWithState = FastifyRequest['raw'] & { [kHandshake]?: HandshakeState }

/**
 * Builds the `onRequest` hook of one guarded route. The chain reads top to bottom: the
 * handshake's shape, the origin, the subprotocols, then the steps later concerns add (token,
 * verification, authorization, limits). Only then does @fastify/websocket upgrade.
 */
export function createGuardHook (context: GuardContext, settings: RouteSettings, route: string, servesHttp: boolean): onRequestHookHandler {
  const chain: GuardStep[] = [checkClosingStep, checkOriginStep, selectProtocolStep]
  if (settings.auth !== undefined) chain.push(createAuthStep(settings.auth))
  chain.push(...context.steps)

  return function wsGuardOnRequest (request, reply, done) {
    if (servesHttp && !request.ws) return done()
    // A malformed handshake cannot be upgraded, so it is always answered over HTTP.
    const shapeError = checkHandshake(request)
    const offered = shapeError ?? parseOfferedProtocols(request.headers['sec-websocket-protocol'])
    if (!Array.isArray(offered)) {
      sendHttpRejection(request, reply, { error: offered, headers: shapeHeaders(offered) })
      recordRejection(context, request, undefined, offered)
      return
    }
    const state: HandshakeState = {
      settings,
      route,
      protocol: false,
      offeredProtocols: offered,
      user: null,
      socket: reply.raw.socket as Duplex,
      startedAt: performance.now(),
      context,
      request,
      connection: undefined
    }
    ;(request.raw as RawWithState)[kHandshake] = state
    new HandshakeRun(context, chain, request, reply, state, done).next(0)
  }
}

/**
 * Walks the chain synchronously until a step goes async; then bounds the rest by
 * `handshakeTimeout`, on the context's shared timer wheel (a timer per handshake costs more
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
    readonly context: GuardContext,
    readonly chain: readonly GuardStep[],
    readonly request: FastifyRequest,
    readonly reply: FastifyReply,
    readonly state: HandshakeState,
    readonly done: (err?: Error) => void
  ) {}

  next (from: number): void {
    for (let i = from; i < this.chain.length; i++) {
      let result: ReturnType<GuardStep>
      try {
        result = this.chain[i]!(this.request, this.state)
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
      this.context.handshakeTimers.schedule(this, Date.now() + this.state.settings.handshakeTimeout)
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
      sendCloseRejection(this.context.wss, this.request, this.reply, rejection.error)
    } else {
      sendHttpRejection(this.request, this.reply, rejection)
    }
    recordRejection(this.context, this.request, state, rejection.error)
  }

  timeout (): void {
    this.reject({ error: new HandshakeTimeoutError() })
  }

  finish (): void {
    this.#settled = true
    if (this.#onGone !== undefined) {
      this.context.handshakeTimers.remove(this)
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

/** Only an error's name and code are logged: its message may carry what must not leak. */
export function errorIdentity (err: unknown): { name?: string, code?: string } {
  if (typeof err !== 'object' || err === null) return { name: typeof err }
  const { name, code } = err as { name?: unknown, code?: unknown }
  return { name: String(name), code: typeof code === 'string' ? code : undefined }
}

function checkClosingStep (_request: FastifyRequest, state: HandshakeState): Rejection | undefined {
  return state.context.closing ? { error: new ShuttingDownError() } : undefined
}

function checkOriginStep (request: FastifyRequest, state: HandshakeState): Rejection | undefined | Promise<Rejection | undefined> {
  const verdict = checkOrigin(request, state.settings.origin)
  if (verdict === undefined) return undefined
  if (typeof verdict === 'string') return originRejection(request, state, verdict)
  return verdict.then((reason) => reason === undefined ? undefined : originRejection(request, state, reason))
}

function originRejection (request: FastifyRequest, state: HandshakeState, reason: string): Rejection | undefined {
  if (state.settings.originReportOnly) {
    request.log.info({ wsGuard: { code: 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', route: state.route, reportOnly: true } }, `websocket origin would be rejected: ${reason}`)
    return undefined
  }
  return { error: new OriginNotAllowedError(reason) }
}

function selectProtocolStep (_request: FastifyRequest, state: HandshakeState): Rejection | undefined {
  const selected = selectProtocol(state.offeredProtocols, state.settings.protocols)
  if (typeof selected === 'object') return { error: selected }
  state.protocol = selected
  return undefined
}

function shapeHeaders (error: GuardError): Record<string, string> | undefined {
  if (error.code === 'FST_WS_GUARD_UNSUPPORTED_VERSION') return { upgrade: 'websocket', 'sec-websocket-version': '13' }
  if (error.statusCode === 426) return { upgrade: 'websocket' }
  return undefined
}

/** One info line per refused handshake (code and reason, never a URL), then the context's bookkeeping. */
export function recordRejection (context: GuardContext, request: FastifyRequest, state: HandshakeState | undefined, error: GuardError): void {
  const { causeCode } = error as GuardError & { causeCode?: string }
  request.log.info({ wsGuard: { code: error.code, statusCode: error.statusCode, route: state?.route ?? request.routeOptions.url, causeCode } }, `websocket handshake rejected: ${error.message}`)
  context.onRejected(request, state, error)
}
