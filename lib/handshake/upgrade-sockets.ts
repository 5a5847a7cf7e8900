import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { Server as TlsServer } from 'node:tls'
import type { Duplex } from 'node:stream'
import type { WebSocket, WebSocketServer } from 'ws'

// Beyond a route's own handshakeTimeout: the guard answers first, this only catches the rest.
const margin = 2000

type UpgradeSocket = Duplex & { _httpMessage?: ServerResponse | null }

/**
 * Every socket of the server from its accept until its first request head says what it is:
 * a plain request (Node's HTTP server owns it from there), or an upgrade, followed until it is
 * a WebSocket or closed. Node hands upgrade sockets to the app for good: one that Fastify
 * answers itself (a bad URL, a 404, a 414, its 503 while closing) or that nobody answers (a
 * request pipelined before the upgrade) would otherwise stay open after the answer, holding a
 * descriptor for ever. So each is closed once an answer is written, whoever wrote it, or after
 * the longest `handshakeTimeout` of the guarded routes when nobody does. `destroyAll()` ends
 * what is left when the app closes, heads still arriving included: once the server closes,
 * Node stops enforcing `headersTimeout`, and one of them would hold `app.close()` for ever.
 */
export class UpgradeSockets {
  /** Accepted, first request head not complete yet. */
  readonly #heads = new Set<Duplex>()
  /** Upgrade requests that are not WebSockets yet, each with the epoch ms it is destroyed at. */
  readonly #upgrades = new Map<Duplex, number>()
  /** Sweeps `#upgrades` for sockets past their deadline; runs only while there are some. */
  #sweeper: NodeJS.Timeout | undefined
  /** A 'close' listener shared by every socket (`this` is the socket): no closure per socket. */
  readonly #forget: (this: Duplex) => void
  /** A 'finish' listener shared by every response Fastify writes to an upgrade itself. */
  readonly #onAnswered: (this: ServerResponse) => void
  #onSettled: (() => void) | undefined
  /** Before any guarded route is declared: the plugin's own `handshakeTimeout`. */
  readonly #defaultDeadline: number
  #deadline = 0

  /** `answered(status)` learns of every upgrade Fastify answered itself: the guard's hooks never saw it. */
  constructor (server: Server, wss: WebSocketServer, headDeadline: number, answered: (statusCode: number) => void) {
    const heads = this.#heads
    const upgrades = this.#upgrades
    const settle = (): void => { if (upgrades.size === 0) this.#onSettled?.() }
    this.#forget = function (this: Duplex) {
      heads.delete(this)
      if (upgrades.delete(this)) settle()
    }
    this.#onAnswered = function (this: ServerResponse) {
      answered(this.statusCode)
      closeAfterAnswer(this.socket!)
    }
    this.#defaultDeadline = headDeadline + margin
    boundRequestHeads(server, headDeadline)
    // A TLS server's requests come on the TLS socket, not on the TCP one it accepted.
    server.on(server instanceof TlsServer ? 'secureConnection' : 'connection', this.#onConnection)
    server.on('request', this.#onRequest)
    // Before @fastify/websocket's own listener, which may complete the upgrade at once...
    server.prependListener('upgrade', this.#onUpgrade)
    // ...and after it, when Fastify has routed the request: who answers, if anyone.
    server.on('upgrade', this.#onRouted)
    wss.on('connection', (websocket: WebSocket) => {
      // ws sets its socket before it emits 'connection'.
      const socket = (websocket as WebSocket & { _socket: Duplex })._socket
      upgrades.delete(socket)
      socket.off('close', this.#forget)
      settle()
    })
  }

  /** Called for each guarded route at declaration: the deadline outlasts its handshake checks. */
  noteHandshakeTimeout (ms: number): void {
    this.#deadline = Math.max(this.#deadline, ms + margin)
  }

  /** Resolves once no upgrade is in flight: each became a WebSocket, was refused or closed. */
  async settled (): Promise<void> {
    while (this.#upgrades.size > 0) await new Promise<void>((resolve) => { this.#onSettled = resolve })
  }

  /** Ends every socket whose head is still arriving or that is not a WebSocket yet: the shutdown grace is over. */
  destroyAll (): void {
    for (const socket of this.#heads) socket.destroy()
    for (const socket of this.#upgrades.keys()) socket.destroy()
  }

  readonly #onConnection = (socket: Duplex): void => {
    this.#heads.add(socket)
    socket.on('close', this.#forget)
  }

  readonly #onRequest = (request: IncomingMessage): void => {
    // A plain request: Node's HTTP server owns the socket from here.
    if (this.#heads.delete(request.socket)) request.socket.off('close', this.#forget)
  }

  readonly #onUpgrade = (_request: IncomingMessage, socket: UpgradeSocket): void => {
    // injectWS emits upgrades without a connection.
    if (!this.#heads.delete(socket)) socket.on('close', this.#forget)
    // Not socket.setTimeout(): ws clears that timer at the upgrade, but the socket keeps the
    // cleared Timeout for the rest of its life, some 170 bytes on every open connection.
    this.#upgrades.set(socket, Date.now() + (this.#deadline === 0 ? this.#defaultDeadline : this.#deadline))
    if (this.#sweeper === undefined) {
      this.#sweeper = setInterval(this.#sweep, sweepInterval)
      this.#sweeper.unref()
    }
  }

  readonly #sweep = (): void => {
    if (this.#upgrades.size === 0) {
      clearInterval(this.#sweeper)
      this.#sweeper = undefined
      return
    }
    const now = Date.now()
    for (const [socket, deadline] of this.#upgrades) {
      if (deadline <= now) socket.destroy()
    }
  }

  readonly #onRouted = (request: IncomingMessage, socket: UpgradeSocket): void => {
    // Upgraded, refused and closed by the guard, or gone: nothing left to do.
    if (!this.#upgrades.has(socket) || socket.destroyed) return
    const response = socket._httpMessage
    if (response == null) {
      // No listener routed it (@fastify/websocket lets go of upgrades when the app closes):
      // nobody will ever answer.
      socket.destroy()
      return
    }
    if (response.req === request) {
      response.on('finish', this.#onAnswered)
    } else {
      // A plain request was pipelined before the upgrade, which will never be answered: the
      // socket closes after that request's answer (the HTTP server detaches it from that one).
      response.once('finish', () => closeAfterAnswer(socket))
    }
  }
}

/**
 * A handshake whose head arrives a byte at a time (slowloris) never reaches the guard: Node's
 * parser holds it until `headersTimeout` (60 s), checked every `connectionsCheckingInterval`
 * (30 s), so up to 90 s. Both are read when the server starts listening: lowered here, an
 * incomplete head is cut within `ms` plus a second. Lower settings of the app's are kept.
 */
function boundRequestHeads (server: Server, ms: number): void {
  const tuned = server as Server & { connectionsCheckingInterval?: number }
  if (server.headersTimeout === 0 || server.headersTimeout > ms) server.headersTimeout = ms
  if (tuned.connectionsCheckingInterval === undefined || tuned.connectionsCheckingInterval > headCheckInterval) tuned.connectionsCheckingInterval = headCheckInterval
}

const headCheckInterval = 1000

// Deadlines are seconds long (handshakeTimeout plus 2 s): half a second late is on time.
const sweepInterval = 500

/** Closes an upgrade socket once its answer is written: the HTTP server never will. */
function closeAfterAnswer (socket: Duplex): void {
  socket.end()
  socket.once('finish', () => socket.destroy())
}
