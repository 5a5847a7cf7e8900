import { performance } from 'node:perf_hooks'
import type { FastifyRequest } from 'fastify'
import WebSocket from 'ws'
import { checkUser } from '../auth/authorize.js'
import type { HandshakeState } from '../handshake/contract.js'
import type { RouteSettings } from '../setup/options.js'
import { acceptedChannel, closedChannel, droppedChannel, type AcceptedMessage, type ClosedMessage, type CloseReason, type DroppedMessage, type StatsCounter } from '../stats.js'
import { errorIdentity } from '../serializers.js'
import { TimerWheel, type WheelEntry } from '../timer-wheel.js'
import { watchSocket, type SocketEvents } from './guarded-socket.js'
import { judgeMessage, UserBuckets, type MessageBucket } from './message-guards.js'

const settled = Promise.resolve()

/** Where the tracker finds a request's connection, for `wsRefresh`. */
const kConnection = Symbol('fastify-ws-guard.connection')

type TrackedSocket = WebSocket & { _socket?: { bytesWritten: number, writableLength: number } }

/**
 * One accepted, guarded connection: its deadlines and why it ended. Kept small: 10k+ live at
 * once. Every time field starts as a number: a field V8 first sees `undefined` in holds each
 * later value in a fresh heap number, and these change on every ping and every frame.
 */
export class Connection implements WheelEntry, SocketEvents {
  due = 0
  slot = -1
  wheelPrev: WheelEntry | undefined = undefined
  wheelNext: WheelEntry | undefined = undefined
  /** `performance.now()` at the upgrade. */
  readonly openedAt: number = performance.now()
  /** Last time any frame arrived (wheel clock). */
  lastSeen = 0
  nextPing = Infinity
  /** When the outgoing buffer was last seen stuck (0: empty or draining), and how far it had flushed. */
  stuckSince = 0
  flushedMark = 0
  /** Epoch ms at which the token expires (with the clock tolerance); Infinity without one. */
  expiresAt = Infinity
  /** Epoch ms of the app's expiry notice, of the next recheck, of a graceful close (age or shutdown). */
  noticeAt = Infinity
  recheckAt = Infinity
  leaveAt = Infinity
  /** Names the connection in `sessions()`, with the instance's id. */
  readonly id: number
  /** The message-rate bucket, with `messageRate`. */
  bucket: MessageBucket | undefined = undefined
  closeReason: CloseReason | undefined
  sawError = false
  /** The last `wsRefresh()` of this connection, settled: the next one applies after it. */
  refreshed: Promise<void> = settled

  constructor (
    readonly tracker: ConnectionTracker,
    readonly socket: TrackedSocket,
    readonly state: HandshakeState,
    now: number,
    id: number
  ) {
    this.lastSeen = now
    this.id = id
  }

  // What the socket reports (see guarded-socket.ts).
  frameArrived (): void {
    this.lastSeen = this.tracker.wheel.now
  }

  messageArrived (data: unknown): boolean {
    this.lastSeen = this.tracker.wheel.now
    const guards = this.state.settings.messages
    if (guards === undefined) return true
    // Closing for a message already: what follows it in the same read goes nowhere.
    if (!this.isOpen) return false
    switch (judgeMessage(guards, this.bucket, data, Date.now())) {
      case 'deliver':
        return true
      case 'drop':
        this.tracker.dropped(this)
        return false
      case 'tooBig':
        this.close('messageTooBig', 1009, 'message too big')
        return false
      case 'tooFast':
        this.close('messageRate', 1008, 'message rate exceeded')
        return false
    }
  }

  sent (): void {
    this.tracker.afterSend(this)
  }

  errored (): void {
    this.sawError = true
  }

  closed (code: number): void {
    this.tracker.closed(this, code)
  }

  ending (reason: CloseReason): void {
    this.closeReason ??= reason
  }

  listenerFailed (err: unknown): void {
    // Its identity only: the message may quote what the client sent.
    this.state.request.log.error({ wsGuard: { err: errorIdentity(err), route: this.state.route } }, 'websocket listener failed')
    this.sawError = true
    if (this.isOpen) this.close('error', 1011, 'internal error')
  }

  get isOpen (): boolean {
    return this.socket.readyState === WebSocket.OPEN
  }

  /** Ends the connection with a close frame, recording why. */
  close (reason: CloseReason, code: number, text: string): void {
    this.closeReason ??= reason
    this.socket.close(code, text)
  }

  /** Ends the connection at once: the peer is dead or not reading, a close handshake would hang. */
  terminate (reason: CloseReason): void {
    this.closeReason ??= reason
    this.socket.terminate()
  }
}

/**
 * Keeps every guarded connection honest with one shared timer wheel per plugin instance:
 * pings and read deadlines, write deadlines, token expiry and its notice, rechecks, age and
 * shutdown; counts and reports how each ended.
 */
export class ConnectionTracker {
  readonly open = new Set<Connection>()
  /** True from the moment `app.close()` starts. */
  draining = false
  readonly #stats: StatsCounter
  #wheel: TimerWheel<Connection> | undefined
  /** The shortest interval any route uses, to size the wheel's tick. */
  #shortestInterval = Infinity
  #drained: (() => void) | undefined
  #nextId = 0
  #drainSpread = 0
  readonly #userBuckets = new UserBuckets()

  constructor (stats: StatsCounter) {
    this.#stats = stats
  }

  get wheel (): TimerWheel<Connection> {
    // A hundred ticks per shortest interval: each tick handles a hundredth of the
    // connections, so 10k pings a second never stall the event loop. 5 to 250 ms keeps it sane.
    this.#wheel ??= new TimerWheel(Math.min(250, Math.max(5, Math.floor(this.#shortestInterval / 100))), 4096, (connection, now) => this.#visit(connection, now))
    return this.#wheel
  }

  /** Called for each guarded route at declaration: the wheel ticks fast enough for the shortest interval. */
  noteIntervals (settings: RouteSettings): void {
    const { heartbeat, writeDeadline } = settings
    this.#shortestInterval = Math.min(this.#shortestInterval, heartbeat?.pingInterval ?? Infinity, writeDeadline ?? Infinity)
  }

  /** Starts guarding a socket the guard's chain let through. */
  track (socket: WebSocket, state: HandshakeState): Connection {
    const now = Date.now()
    const connection = new Connection(this, socket, state, now, ++this.#nextId)
    const { heartbeat, messages, maxConnectionAge, auth } = state.settings
    watchSocket(socket, connection, heartbeat !== undefined || messages !== undefined)
    ;(state.request.raw as RawWithConnection)[kConnection] = connection
    this.open.add(connection)
    this.#stats.accepted++
    // The first ping lands anywhere in the interval, so a burst of connections does not
    // ping in one tick forever after; rechecks are spread the same way.
    if (heartbeat !== undefined) connection.nextPing = now + Math.ceil(Math.random() * heartbeat.pingInterval)
    if (auth?.recheck !== undefined) connection.recheckAt = now + Math.ceil(Math.random() * auth.recheck)
    // ±10%: connections opened together after a scale-out do not all leave together.
    if (maxConnectionAge !== undefined) connection.leaveAt = now + Math.round(maxConnectionAge * (0.9 + Math.random() * 0.2))
    if (messages?.rate !== undefined) connection.bucket = this.#userBuckets.take(messages.rate, state.route, state.user?.sub, now)
    this.setExpiry(connection, state.user?.exp)
    if (acceptedChannel.hasSubscribers) {
      acceptedChannel.publish({
        requestId: state.request.id,
        route: state.route,
        protocol: state.protocol,
        sub: state.user?.sub,
        handshakeMs: performance.now() - state.startedAt
      } satisfies AcceptedMessage)
    }
    return connection
  }

  /** The open connection of a request this tracker guards, if any. */
  connectionOf (request: FastifyRequest): Connection | undefined {
    return (request.raw as RawWithConnection)[kConnection]
  }

  /** Moves the token-expiry deadline and its notice (after a refresh, too). */
  setExpiry (connection: Connection, exp: unknown): void {
    const auth = connection.state.settings.auth
    connection.expiresAt = auth?.closeOnExpiry === true && typeof exp === 'number'
      ? (exp + auth.clockTolerance) * 1000
      : Infinity
    connection.noticeAt = auth?.expiryNotice !== undefined && typeof exp === 'number'
      ? exp * 1000 - auth.expiryNotice.before
      : Infinity
    this.#reschedule(connection, Date.now())
  }

  /**
   * Closes every connection with 1001, spread over `spread` ms so that their clients do not
   * all come back in the same instant; each close names a retry delay, different for each.
   * Resolves once all are gone.
   */
  async closeAll (spread: number): Promise<void> {
    this.draining = true
    this.#drainSpread = spread
    if (this.open.size === 0) return
    const drained = new Promise<void>((resolve) => { this.#drained = resolve })
    const now = Date.now()
    for (const connection of this.open) {
      if (spread === 0) {
        this.#leave(connection)
      } else {
        connection.leaveAt = now + Math.floor(Math.random() * spread)
        this.#reschedule(connection, now)
      }
    }
    await drained
  }

  /** Ends the connections still open when the shutdown grace is over: their peers did not answer the 1001. */
  terminateAll (): void {
    for (const connection of this.open) connection.terminate('shutdown')
  }

  /** A message `messageRate` dropped. */
  dropped (connection: Connection): void {
    this.#stats.dropped++
    if (droppedChannel.hasSubscribers) {
      const { state } = connection
      droppedChannel.publish({ requestId: state.request.id, route: state.route, sub: state.user?.sub } satisfies DroppedMessage)
    }
  }

  #visit (connection: Connection, now: number): void {
    if (connection.socket.readyState !== WebSocket.OPEN) return
    const { heartbeat, writeDeadline, maxBufferedBytes } = connection.state.settings
    if (heartbeat !== undefined && now - connection.lastSeen >= heartbeat.readDeadline) {
      return connection.terminate('heartbeatTimeout')
    }
    if (checkWrites(connection, now, writeDeadline, maxBufferedBytes)) return
    if (now >= connection.expiresAt) {
      return connection.close('tokenExpired', 4401, 'token expired')
    }
    if (now >= connection.leaveAt) return this.#leave(connection)
    if (now >= connection.noticeAt) {
      connection.noticeAt = Infinity
      notifyExpiry(connection)
    }
    if (now >= connection.recheckAt) {
      // Not again until this one has settled.
      connection.recheckAt = Infinity
      this.#recheck(connection)
    }
    if (heartbeat !== undefined && now >= connection.nextPing) {
      connection.socket.ping()
      // From the previous ping, not from this tick: the rate holds and pings stay spread,
      // each connection keeping its phase even after an event-loop stall.
      const interval = heartbeat.pingInterval
      connection.nextPing += (Math.floor((now - connection.nextPing) / interval) + 1) * interval
    }
    this.#reschedule(connection, now)
  }

  /**
   * A graceful 1001 for a connection whose time is up: the app is closing, or the connection
   * reached `maxConnectionAge`. The retry hint spreads the clients' return.
   */
  #leave (connection: Connection): void {
    if (this.draining) {
      // Clients that come back on the hint land over another window as wide as the drain's.
      connection.close('shutdown', 1001, `server shutting down; retry-after=${Math.floor(Math.random() * Math.max(1000, this.#drainSpread))}`)
    } else {
      connection.close('maxAge', 1001, `connection max age; retry-after=${Math.floor(Math.random() * 1000)}`)
    }
  }

  /**
   * `auth.recheck`: the app's checks again, as at the handshake. (The revocations of
   * `revoke()` need no recheck: they close the matching connections as they arrive.)
   */
  #recheck (connection: Connection): void {
    const { state } = connection
    const auth = state.settings.auth!
    checkUser(auth, state.user!, state.request).then((error) => {
      if (!connection.isOpen) return
      if (error === undefined) {
        connection.recheckAt = Date.now() + auth.recheck!
        return this.#reschedule(connection, Date.now())
      }
      const forbidden = error.closeCode === 4403
      connection.close(forbidden ? 'forbidden' : 'revoked', error.closeCode, error.closeReason)
    }, (err: unknown) => {
      // The app's check failed, not the user: the connection stays, and the next interval asks again.
      state.request.log.error({ wsGuard: { err: errorIdentity(err), route: state.route } }, 'websocket recheck failed')
      connection.recheckAt = Date.now() + auth.recheck!
      if (connection.isOpen) this.#reschedule(connection, Date.now())
    })
  }

  #reschedule (connection: Connection, now: number): void {
    const { heartbeat, writeDeadline } = connection.state.settings
    let due = Math.min(connection.expiresAt, connection.noticeAt, connection.recheckAt, connection.leaveAt)
    if (heartbeat !== undefined) due = Math.min(due, connection.nextPing, connection.lastSeen + heartbeat.readDeadline)
    if (writeDeadline !== undefined && connection.stuckSince !== 0) due = Math.min(due, connection.stuckSince + writeDeadline)
    if (due === Infinity) this.wheel.remove(connection)
    else this.wheel.schedule(connection, Math.max(due, now))
  }

  /** After a send: a buffer over the limit ends the connection; a buffer that fills starts the write deadline. */
  afterSend (connection: Connection): void {
    const socket = connection.socket
    const buffered = socket.bufferedAmount
    if (buffered === 0) return
    const { maxBufferedBytes, writeDeadline } = connection.state.settings
    if (buffered > maxBufferedBytes) return connection.terminate('limit')
    if (writeDeadline === undefined || connection.stuckSince !== 0) return
    connection.stuckSince = Date.now()
    connection.flushedMark = flushed(socket)
    const deadline = connection.stuckSince + writeDeadline
    if (connection.slot < 0 || connection.due > deadline) this.wheel.schedule(connection, deadline)
  }

  closed (connection: Connection, code: number): void {
    this.wheel.remove(connection)
    this.open.delete(connection)
    const { state } = connection
    const rate = state.settings.messages?.rate
    if (rate !== undefined) this.#userBuckets.leave(rate, state.route, state.user?.sub, connection.bucket!)
    // 1006: the peer went without a close frame (a reset, a vanished client).
    const reason = connection.closeReason ?? (connection.sawError ? 'error' : code === 1006 ? 'abnormal' : 'normal')
    this.#stats.closed[reason]++
    if (closedChannel.hasSubscribers) {
      closedChannel.publish({
        requestId: state.request.id,
        route: state.route,
        reason,
        code,
        sub: state.user?.sub,
        durationMs: performance.now() - connection.openedAt
      } satisfies ClosedMessage)
    }
    if (this.open.size === 0 && this.#drained !== undefined) this.#drained()
  }
}

/** `auth.expiryNotice`: the app hears ahead of `exp`, and may refresh; its failure is logged, never thrown. */
function notifyExpiry (connection: Connection): void {
  const { state } = connection
  const onError = (err: unknown): void => {
    state.request.log.error({ wsGuard: { err: errorIdentity(err), route: state.route } }, 'websocket expiryNotice failed')
  }
  try {
    const pending = state.settings.auth!.expiryNotice!.notify(connection.socket, state.request, (state.user!.exp as number) * 1000)
    if (pending !== undefined) Promise.resolve(pending).catch(onError)
  } catch (err) {
    onError(err)
  }
}

/** Returns true when it ended the connection. */
function checkWrites (connection: Connection, now: number, writeDeadline: number | undefined, maxBufferedBytes: number): boolean {
  const socket = connection.socket
  const buffered = socket.bufferedAmount
  if (buffered > maxBufferedBytes) {
    connection.terminate('limit')
    return true
  }
  if (buffered === 0 || writeDeadline === undefined) {
    connection.stuckSince = 0
    return false
  }
  const mark = flushed(socket)
  if (connection.stuckSince === 0 || mark > connection.flushedMark) {
    // Still draining, if slowly: the deadline starts again from here.
    connection.stuckSince = now
    connection.flushedMark = mark
    return false
  }
  if (now - connection.stuckSince >= writeDeadline) {
    connection.terminate('writeDeadline')
    return true
  }
  return false
}

/** Bytes the socket has handed to the kernel so far. */
function flushed (socket: TrackedSocket): number {
  const raw = socket._socket!
  return raw.bytesWritten - raw.writableLength
}

type RawWithConnection = FastifyRequest['raw'] & { [kConnection]?: Connection }
