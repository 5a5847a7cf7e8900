import { EventEmitter } from 'node:events'
import WebSocket from 'ws'
import type { CloseReason } from '../stats.js'

/** What a guarded socket tells its connection record: frames, sends, errors and its close. */
export interface SocketEvents {
  /** A ping or pong arrived. */
  frameArrived (): void
  /** A message arrived: whether it goes on to the app's listeners (the message guards may drop it). */
  messageArrived (data: unknown): boolean
  sent (): void
  errored (): void
  closed (code: number): void
  /** A listener the app added threw or rejected. */
  listenerFailed (err: unknown): void
  /** Why the connection is ending, when something other than the socket knows it first. */
  ending (reason: CloseReason): void
}

const kEvents = Symbol('fastify-ws-guard.events')
const originalSend = WebSocket.prototype.send

type WatchedSocket = WebSocket & { [kEvents]?: SocketEvents }

/**
 * The socket class of a ws server the guard registers itself. `emit()` and `send()` report
 * what would otherwise take five listeners and an own `send` property on every socket:
 * memory and setup time at 10k+ connections, and an array copy on every message emitted to
 * more than one listener. A listener of the app that throws, or returns a promise that
 * rejects, ends its own connection, never the process.
 */
export class GuardedWebSocket extends WebSocket {
  constructor (...args: ConstructorParameters<typeof WebSocket>) {
    // Node's documented switch for rejections of async listeners, read once per emitter at
    // construction: on for this socket only, whatever the app set globally.
    const appSetting = EventEmitter.captureRejections
    EventEmitter.captureRejections = true
    try {
      super(...args)
    } finally {
      EventEmitter.captureRejections = appSetting
    }
  }

  override emit (event: string | symbol, ...args: unknown[]): boolean {
    const events = (this as WatchedSocket)[kEvents]
    if (events === undefined) return super.emit(event, ...args)
    switch (event) {
      case 'message':
        if (!events.messageArrived(args[0])) return false
        break
      case 'ping':
      case 'pong':
        events.frameArrived()
        break
      case 'error':
        events.errored()
        // Counted; without a listener EventEmitter would throw it out of ws's parser.
        if (this.listenerCount('error') === 0) return false
        break
    }
    let handled: boolean
    try {
      handled = super.emit(event, ...args)
    } catch (err) {
      events.listenerFailed(err)
      handled = true
    }
    // After the app's close listeners: one that throws makes it an `error` close.
    if (event === 'close') events.closed(args[0] as number)
    return handled
  }

  /** Where EventEmitter sends the rejection of an async listener. */
  override [EventEmitter.captureRejectionSymbol] (err: unknown): void {
    const events = (this as WatchedSocket)[kEvents]
    // A route outside the guard: what EventEmitter does without this method.
    if (events === undefined) super.emit('error', err)
    else events.listenerFailed(err)
  }

  override send (...args: unknown[]): void {
    (originalSend as (...args: unknown[]) => void).apply(this, args)
    ;(this as WatchedSocket)[kEvents]?.sent()
  }
}

/**
 * Ties a socket to its connection record. Sockets of the guard's own ws server report through
 * their class; those of an app's own ws server get shared listeners and an own `send()`.
 */
export function watchSocket (socket: WebSocket, events: SocketEvents, watchInbound: boolean): void {
  // Listeners cannot hold a message back from the app's own: with a socket of another class,
  // a message guard can close the connection but not drop a message.
  const watched = socket as WatchedSocket
  watched[kEvents] = events
  if (socket instanceof GuardedWebSocket) return
  socket.on('close', onClose)
  socket.on('error', onError)
  if (watchInbound) {
    socket.on('message', onMessage)
    socket.on('ping', onFrame)
    socket.on('pong', onFrame)
  }
  watched.send = guardedSend as WebSocket['send']
}

/** Records why a connection ends: its handler failed, or the client broke the protocol. */
export function markEnding (socket: WebSocket, reason: CloseReason): void {
  (socket as WatchedSocket)[kEvents]?.ending(reason)
}

// Shared listeners (`this` is the socket): no closure per connection.
function onClose (this: WatchedSocket, code: number): void {
  this[kEvents]!.closed(code)
}

function onError (this: WatchedSocket): void {
  this[kEvents]!.errored()
}

function onMessage (this: WatchedSocket, data: unknown): void {
  this[kEvents]!.messageArrived(data)
}

function onFrame (this: WatchedSocket): void {
  this[kEvents]!.frameArrived()
}

function guardedSend (this: WatchedSocket, ...args: unknown[]): void {
  (originalSend as (...args: unknown[]) => void).apply(this, args)
  this[kEvents]!.sent()
}
