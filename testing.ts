/**
 * Test helpers for fastify-ws-guard: guarded handshakes without a server.
 * @module fastify-ws-guard/testing
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { WebSocket } from '@fastify/websocket'
import type { FastifyInstance } from 'fastify'
import type { GuardErrorCode } from './lib/errors.js'
import { kHandshake, type GuardedIncomingMessage } from './lib/handshake/contract.js'
import { channels, type RejectedMessage } from './lib/stats.js'

/** What the handshake sends; every field is optional. */
export interface InjectGuardedOptions {
  /**
   * Sent as `Authorization: Bearer <token>`. A route that reads its token elsewhere gets it
   * through the other options: `headers: { cookie: 'access_token=…' }`, the query string of
   * `path`, or `protocols: bearerProtocols(token, 'chat.v1')` from `fastify-ws-guard/client`.
   */
  token?: string | undefined
  /** The `Origin` header. */
  origin?: string | undefined
  /** The subprotocols offered, in `Sec-WebSocket-Protocol`. */
  protocols?: readonly string[] | undefined
  /**
   * More request headers. `token`, `origin` and `protocols` win over them; the handshake's
   * own (`Upgrade`, `Connection`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`) are always
   * injectWS's.
   */
  headers?: Readonly<Record<string, string>> | undefined
  /**
   * How long to wait for an answer (ms) before rejecting: a hook of the app that never
   * answers fails the test instead of hanging it. Default 15000, past the guard's default
   * `handshakeTimeout`; raise it with yours.
   */
  timeout?: number | undefined
}

/** The handshake went through: the route's handler has the other end of `socket`. */
export interface InjectedAcceptance {
  readonly accepted: true
  /**
   * The open client socket. End it with `socket.close()` or `socket.terminate()` before
   * `app.close()` (which otherwise closes it with 1001).
   */
  readonly socket: WebSocket
  /**
   * The subprotocol the server selected, `''` for none. Read it here: under injectWS the
   * client never parses the 101, so `socket.protocol` stays `''`.
   */
  readonly protocol: string
}

/** The handshake was refused, over HTTP or, with `rejectWith: 'close'`, with a close frame. */
export interface InjectedRefusal {
  readonly accepted: false
  /** The HTTP status; with `rejectWith: 'close'`, the status the same refusal has over HTTP. */
  readonly statusCode: number
  /**
   * The guard's error code; `undefined` when something else answered (a hook of the app that
   * replied itself, Fastify's 400 for a malformed URL).
   */
  readonly code: GuardErrorCode | undefined
  /** With `rejectWith: 'close'`: the close code (`4401`, `4403`, `1013`...). */
  readonly closeCode?: number
  /** With `rejectWith: 'close'`: the close reason (`'invalid token'`...). */
  readonly closeReason?: string
}

/** Narrows on `accepted`. */
export type InjectGuardedResult = InjectedAcceptance | InjectedRefusal

/**
 * Runs a WebSocket handshake through the app, its guard included, without `listen()`, on
 * @fastify/websocket's `injectWS`: resolves with the acceptance (an open socket) or the
 * refusal, whichever `rejectWith` mode the route uses. Readies the app first, as
 * `app.inject()` does. Concurrent calls on one app are told apart.
 *
 * @example
 * ```ts
 * import { test } from 'node:test'
 * import assert from 'node:assert/strict'
 * import { injectGuarded } from 'fastify-ws-guard/testing'
 *
 * test('a token is required', async (t) => {
 *   const app = buildApp()
 *   t.after(() => app.close())
 *   const refused = await injectGuarded(app, '/chat')
 *   assert.ok(!refused.accepted)
 *   assert.equal(refused.code, 'FST_WS_GUARD_TOKEN_MISSING')
 *
 *   const result = await injectGuarded(app, '/chat', { token, protocols: ['chat.v1'] })
 *   assert.ok(result.accepted)
 *   t.after(() => result.socket.terminate())
 *   assert.equal(result.protocol, 'chat.v1')
 * })
 * ```
 */
export async function injectGuarded (app: FastifyInstance, path: string, options: InjectGuardedOptions = {}): Promise<InjectGuardedResult> {
  await app.ready()
  if (!app.hasDecorator('injectWS')) {
    throw new TypeError('injectGuarded: the app has no injectWS: register fastify-ws-guard (or @fastify/websocket) on it')
  }
  const timeout = options.timeout ?? defaultTimeout
  const injection = new Injection(app)
  // injectWS holds no handle and the guard's timers are unref'd: this timer keeps the process
  // alive while a handshake waits on one of them, and bounds the wait.
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      injection.abandon()
      reject(new Error(`injectGuarded: no answer to the handshake on ${path.split('?', 1)[0]} within ${timeout} ms`))
    }, timeout)
  })
  try {
    return await Promise.race([injection.run(path, options), expired])
  } finally {
    clearTimeout(timer)
    injection.detach()
  }
}

/** Longer than the guard's default `handshakeTimeout` (10 s): the guard answers first. */
const defaultTimeout = 15_000

/** Marks the raw request injectWS builds: it copies the upgrade context onto it, symbols included. */
const kInjection = Symbol('fastify-ws-guard.injection')

/** The async context of each call: what the guard does in the hooks that call started is that call's. */
const injections = new AsyncLocalStorage<Injection>()

type InjectedRequest = GuardedIncomingMessage & { [kInjection]?: Injection }

/** One call: the handshake, and what it learns of it from the server's side. */
class Injection {
  readonly app: FastifyInstance
  /** The raw request and upgrade socket of this handshake, once injectWS emitted them. */
  request: InjectedRequest | undefined
  upgradeSocket: Duplex | undefined
  refusal: RejectedMessage | undefined
  protocol = ''
  /** Set by `watch()`, which injectWS calls before it emits the upgrade. */
  closed!: Promise<{ code: number, reason: string }>

  constructor (app: FastifyInstance) {
    this.app = app
  }

  async run (path: string, options: InjectGuardedOptions): Promise<InjectGuardedResult> {
    subscribe(channels.rejected, this.onRejected)
    this.app.websocketServer.on('connection', this.onConnection)
    this.app.server.prependListener('upgrade', this.onUpgrade)
    let socket: WebSocket
    try {
      const headers = handshakeHeaders(options)
      // injectWS builds a plain object for a request, without the rawHeaders the guard reads
      // (to spot a second Authorization header): give it ours.
      const upgradeContext = { headers, rawHeaders: Object.entries(headers).flat(), [kInjection]: this } as Partial<IncomingMessage>
      const opened = injections.run(this, () => this.app.injectWS(path, upgradeContext, { onInit: (client) => this.watch(client) }))
      // injectWS emits the upgrade synchronously: the listener has seen it.
      this.app.server.removeListener('upgrade', this.onUpgrade)
      socket = await opened as unknown as WebSocket
    } catch (err) {
      const statusCode = answeredStatus(err)
      if (statusCode === undefined) throw err
      // The guard destroys the socket of its own refusals; one Fastify or a hook answered would
      // wait for an end that injectWS's pipe never carries, and hold app.close() for shutdownGrace.
      this.upgradeSocket?.destroy()
      // injectWS keeps the status line only; the guard published the code of its answer.
      return { accepted: false, statusCode, code: this.refusal?.code }
    }
    // A close refusal is published with its 101, before injectWS resolves.
    const refusal = this.refusal
    if (refusal === undefined) return { accepted: true, socket, protocol: this.protocol }
    const { code, reason } = await this.closed
    return { accepted: false, statusCode: refusal.statusCode, code: refusal.code, closeCode: code, closeReason: reason }
  }

  /** Nothing answered in time: end the handshake's connection. */
  abandon (): void {
    this.upgradeSocket?.destroy()
  }

  /** Stops listening; the channel and the servers are as they were. */
  detach (): void {
    this.app.server.removeListener('upgrade', this.onUpgrade)
    this.app.websocketServer.off('connection', this.onConnection)
    unsubscribe(channels.rejected, this.onRejected)
  }

  // Attached only while injectWS emits this call's upgrade, synchronously.
  readonly onUpgrade = (request: InjectedRequest, socket: Duplex): void => {
    this.request = request
    this.upgradeSocket = socket
  }

  readonly onConnection = (socket: WebSocket, request: InjectedRequest): void => {
    if (request[kInjection] === this) this.protocol = socket.protocol
  }

  readonly onRejected = (message: unknown): void => {
    const rejected = message as RejectedMessage
    // Once the guard's chain runs, the raw request holds its Fastify request, whose id names
    // the refusal exactly (a handshake timeout fires on a timer shared by all handshakes).
    // Refusals before the chain (a malformed offer, no such route) run in the hooks this call started.
    const handshake = this.request?.[kHandshake]
    const ours = handshake === undefined ? injections.getStore() === this : handshake.request.id === rejected.requestId
    if (ours) this.refusal = rejected
  }

  /** Listens from the start: with a close refusal, the close may come before injectWS resolves. */
  watch (client: WebSocket): void {
    this.closed = new Promise((resolve) => {
      client.once('close', (code, reason) => {
        // injectWS's in-memory pipe never carries the end of a close handshake, so the server's
        // socket would wait 30 s for it: end it, as the client's TCP FIN would.
        this.upgradeSocket?.destroy()
        resolve({ code, reason: String(reason) })
      })
    })
  }
}

/** Header names in lower case, as Node's parser gives them to Fastify. */
function handshakeHeaders (options: InjectGuardedOptions): Record<string, string> {
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(options.headers ?? {})) headers[name.toLowerCase()] = value
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
  if (options.origin !== undefined) headers.origin = options.origin
  if (options.protocols !== undefined && options.protocols.length > 0) headers['sec-websocket-protocol'] = options.protocols.join(', ')
  return headers
}

/** The status of an HTTP answer, from injectWS's rejection `Unexpected server response: 401`. */
function answeredStatus (err: unknown): number | undefined {
  const match = err instanceof Error ? /^Unexpected server response: (\d{3})$/.exec(err.message) : null
  return match === null ? undefined : Number(match[1])
}
