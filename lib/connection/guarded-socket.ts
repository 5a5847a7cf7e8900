import WebSocket from 'ws'

/** What a guarded socket tells its connection record: frames, sends, errors and its close. */
export interface SocketEvents {
  frameArrived (): void
  sent (): void
  errored (): void
  closed (code: number): void
}

const kEvents = Symbol('fastify-ws-guard.events')
const originalSend = WebSocket.prototype.send

type WatchedSocket = WebSocket & { [kEvents]?: SocketEvents }

/**
 * The socket class of a ws server the guard registers itself. `emit()` and `send()` report
 * what would otherwise take five listeners and an own `send` property on every socket:
 * memory and setup time at 10k+ connections, and an array copy on every message emitted to
 * more than one listener.
 */
export class GuardedWebSocket extends WebSocket {
  override emit (event: string | symbol, ...args: unknown[]): boolean {
    const events = (this as WatchedSocket)[kEvents]
    if (events !== undefined) {
      switch (event) {
        case 'message':
        case 'ping':
        case 'pong':
          events.frameArrived()
          break
        case 'close':
          events.closed(args[0] as number)
          break
        case 'error':
          events.errored()
          break
      }
    }
    return super.emit(event, ...args)
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
export function watchSocket (socket: WebSocket, events: SocketEvents, watchFrames: boolean): void {
  const watched = socket as WatchedSocket
  watched[kEvents] = events
  if (socket instanceof GuardedWebSocket) return
  socket.on('close', onClose)
  socket.on('error', onError)
  if (watchFrames) {
    socket.on('message', onFrame)
    socket.on('ping', onFrame)
    socket.on('pong', onFrame)
  }
  watched.send = guardedSend as WebSocket['send']
}

/** Records that a connection ends on an error (its handler threw). */
export function markError (socket: WebSocket): void {
  (socket as WatchedSocket)[kEvents]?.errored()
}

// Shared listeners (`this` is the socket): no closure per connection.
function onClose (this: WatchedSocket, code: number): void {
  this[kEvents]!.closed(code)
}

function onError (this: WatchedSocket): void {
  this[kEvents]!.errored()
}

function onFrame (this: WatchedSocket): void {
  this[kEvents]!.frameArrived()
}

function guardedSend (this: WatchedSocket, ...args: unknown[]): void {
  (originalSend as (...args: unknown[]) => void).apply(this, args)
  this[kEvents]!.sent()
}
