/**
 * Client helpers for fastify-ws-guard, safe in browsers and Node (no dependencies):
 * `bearerProtocols` for one socket, `connect` for a connection that reconnects. One file with
 * no imports on purpose: a page can load it as a module as it is, with no bundler.
 * @module fastify-ws-guard/client
 */

/**
 * The subprotocol list that carries a bearer token through the WebSocket handshake, for
 * clients that cannot set headers (browsers). The server selects one of `appProtocols` (or
 * the marker `bearer` when there are none) and never echoes the token.
 * @example
 * ```js
 * const socket = new WebSocket(url, bearerProtocols(token, 'chat.v1'))
 * ```
 */
export function bearerProtocols (token: string, ...appProtocols: string[]): string[] {
  // Subprotocols are RFC 7230 tokens: a JWT's base64url segments and dots are fine.
  if (typeof token !== 'string' || !/^[A-Za-z0-9._~-]+$/.test(token)) {
    throw new TypeError('bearerProtocols: the token must be a non-empty JWT string')
  }
  return [...(appProtocols.length > 0 ? appProtocols : ['bearer']), 'bearer.' + token]
}

/**
 * What `connect()` needs of a socket: the part the WHATWG `WebSocket` (browsers, Node 22+)
 * and the `ws` package share.
 */
export interface WebSocketLike {
  readonly readyState: number
  addEventListener (type: 'open' | 'message' | 'close' | 'error', listener: (event: any) => void): void
  send (data: any): void
  close (code?: number, reason?: string): void
}

/** Whether a reconnect follows, and after how many ms. */
export type RetryOutcome = { willRetry: true, delay: number } | { willRetry: false }

/** A socket closed: its code and reason, and what the client does next. */
export type CloseReport = { code: number, reason: string } & RetryOutcome

/** No socket could be opened: `token()` threw or rejected, or the `WebSocket` constructor threw. */
export type FailureReport = { error: unknown } & RetryOutcome

/**
 * `connecting` (getting a token, opening, or closing), `open`, `waiting` (before a reconnect),
 * `closed` (stopped for good).
 */
export type ConnectionState = 'connecting' | 'open' | 'waiting' | 'closed'

/** Options of `connect()`; `S` is the socket class, inferred from the `WebSocket` option. */
export interface ConnectOptions<S extends WebSocketLike = WebSocketLike> {
  /** Called before every connection; its token is sent with `bearerProtocols`. Default: no token. */
  token?: () => string | Promise<string>
  /** The app's subprotocols, by preference. Default `[]`. */
  protocols?: string[]
  /**
   * The `WebSocket` class: `WebSocket` from the `ws` package on Node 20, or a subclass that
   * adds headers. Default: the global `WebSocket`.
   */
  WebSocket?: new (url: string, protocols: string[]) => S
  /** Base of the backoff in ms, and the shortest wait a retry hint can ask for. Default `500`. */
  minDelay?: number
  /** The longest any wait can be, in ms. Default `30000`. */
  maxDelay?: number
  /** A connection open this long (ms) counts as stable: the backoff and the retry count start over. Default `5000`. */
  stableAfter?: number
  /** Reconnects in a row without a stable connection, after which a close stops. Default `Infinity`. */
  maxRetries?: number
  /** The source of the jitter, returning a number in [0, 1). Default `Math.random`; tests pin it. */
  random?: () => number
  /** Each socket that opens; `send()` works from here on. */
  onOpen?: (socket: S) => void
  /** The socket's own message event: `event.data` is a string for a text frame. */
  onMessage?: (event: { readonly data: any }) => void
  /** Each socket that closes, with what happens next. */
  onClose?: (report: CloseReport) => void
  /** Each attempt that could not open a socket, with what happens next. */
  onFailure?: (report: FailureReport) => void
}

/** The handle `connect()` returns: it outlives each socket. */
export interface ReconnectingSocket<S extends WebSocketLike = WebSocketLike> {
  /** Where the handle is now; see {@link ConnectionState}. */
  readonly state: ConnectionState
  /** The current socket; `undefined` while getting a token or waiting to reconnect. */
  readonly socket: S | undefined
  /**
   * Sends on the open socket and returns `true`; returns `false` (dropped, never queued) when
   * there is none: send again after `onOpen`.
   */
  send (data: Parameters<S['send']>[0]): boolean
  /**
   * Stops reconnecting for good and closes the current socket, if any (default code 1000);
   * `onClose` reports that socket's close with `willRetry: false`.
   */
  close (code?: number, reason?: string): void
}

/** The part of a close the reconnect policy reads. */
interface CloseFrame {
  readonly code: number
  readonly reason: string
}

/** The limits `connect()` was given, defaults applied. */
interface ReconnectLimits {
  readonly minDelay: number
  readonly maxDelay: number
  readonly maxRetries: number
}

// The guard's refusals a new attempt cannot fix: a bad request, a missing route, a forbidden
// origin or user, a token that is missing, invalid or revoked (4401 'token expired' aside).
const stopCodes = [4400, 4401, 4403, 4404]
// Going away, try again later, too many connections: the server may say when to come back.
const hintCodes = [1001, 1013, 4429]
// `<text>; retry-after=<ms>`, the guard's way of putting a hint in a close reason.
const retryAfter = /retry-after=(\d+)/

/** The server's retry hint in a close reason, in ms, if it gave one. */
function hintOf (close: CloseFrame | undefined): number | undefined {
  const hint = close !== undefined && hintCodes.includes(close.code) ? retryAfter.exec(close.reason) : null
  return hint === null ? undefined : Number(hint[1])
}

/**
 * The reconnect policy, pure: the ms to wait before reconnect number `attempt + 1`, or
 * `undefined` to stop. `close` is `undefined` when no socket could be opened at all;
 * `failures` counts the reconnects the server did not ask for, the exponent of the backoff.
 */
function reconnectDelay (close: CloseFrame | undefined, attempt: number, failures: number, limits: ReconnectLimits, random: () => number): number | undefined {
  if (attempt >= limits.maxRetries) return undefined
  if (close !== undefined) {
    // An expired token is routine: a fresh one fixes it, so reconnect at once. Only once in a
    // row, though: a token source that keeps handing out expired tokens must not spin.
    if (close.code === 4401 && close.reason === 'token expired') {
      if (attempt === 0) return 0
    } else if (stopCodes.includes(close.code)) {
      return undefined
    }
    const hint = hintOf(close)
    if (hint !== undefined) {
      // Never sooner than minDelay (a hint of 0 must not spin), never so late that the jitter
      // could pass maxDelay; up to half the hint on top spreads out clients told the same hint.
      const wait = Math.min(Math.max(hint, limits.minDelay), limits.maxDelay / 1.5)
      return wait + random() * wait / 2
    }
  }
  // Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): anywhere between 0
  // and the capped exponential, so that clients dropped together do not return together.
  return random() * Math.min(limits.maxDelay, limits.minDelay * 2 ** failures)
}

/**
 * Opens a WebSocket to a guarded route and keeps it open: a fresh token before every
 * connection, reconnects with jittered backoff, and the guard's close codes obeyed.
 *
 * Before each connection `token()` is called and the socket offers
 * `bearerProtocols(token, ...protocols)`; without `token` it offers `protocols`. After each
 * close, by the server's close code:
 *
 * | Close | Next |
 * | --- | --- |
 * | 4401 `token expired` | reconnects at once (delay 0) with a fresh token if this is the first reconnect since the last stable connection; else backs off (a token just fetched was refused as expired: the token source is broken) |
 * | 4401 any other reason (`authentication required`, `invalid token`, `token revoked`), 4400, 4403, 4404 | stops: another try cannot fix it |
 * | 1001, 1013, 4429 whose reason carries a hint, `<text>; retry-after=<ms>` | waits a random delay in [hint, 1.5 × hint], the hint first clamped to [minDelay, maxDelay / 1.5] |
 * | 1001, 1013, 4429 without a hint; 1006 (no close frame, a refused HTTP handshake); 1000 from the server; any other code | backs off |
 *
 * Backoff is full jitter: a random delay in [0, min(maxDelay, minDelay × 2^n)], `n` counting
 * the reconnects since the last stable connection (one open for `stableAfter` ms) that no
 * retry hint asked for. After
 * `maxRetries` such reconnects, the next close stops. The clamp keeps every wait within
 * `maxDelay`: hints up to maxDelay / 1.5 (20 s by default) are honoured as given, and a hint
 * of 0 cannot make a client spin. A server's 1000 is backed off, not final: a client that
 * reconnects means to stay connected; a server ends a session for good with 4403 or 4401.
 *
 * When no socket can be opened (`token()` throws or rejects, returns a string that is not a
 * JWT, or the `WebSocket` constructor throws), `onFailure` reports it and the client backs
 * off as for a 1006. `close()` stops for good. Routes that browsers reach through `connect()`
 * want `rejectWith: 'close'`: an HTTP refusal reaches a page as a bare 1006, which is retried.
 *
 * @example
 * ```js
 * import { connect } from 'fastify-ws-guard/client'
 *
 * const chat = connect('wss://example.com/chat', {
 *   token: () => fetch('/token').then((response) => response.text()),
 *   protocols: ['chat.v1'],
 *   onOpen: () => chat.send('hello'),
 *   onMessage: (event) => console.log(event.data),
 *   onClose: (report) => {
 *     if (!report.willRetry) console.log('disconnected for good:', report.code, report.reason)
 *   }
 * })
 * // Node 20: connect(url, { WebSocket, ...options }), with `import { WebSocket } from 'ws'`
 * ```
 */
export function connect<S extends WebSocketLike = WebSocketLike> (url: string | URL, options: ConnectOptions<S> = {}): ReconnectingSocket<S> {
  const { token, protocols = [], random = Math.random, onOpen, onMessage, onClose, onFailure } = options
  const stableAfter = options.stableAfter ?? 5000
  const limits = { minDelay: options.minDelay ?? 500, maxDelay: options.maxDelay ?? 30_000, maxRetries: options.maxRetries ?? Infinity }
  const Socket = options.WebSocket ?? (globalThis as unknown as { WebSocket: new (url: string, protocols: string[]) => S }).WebSocket
  if (typeof Socket !== 'function') {
    throw new TypeError('connect: there is no global WebSocket (Node < 22): pass options.WebSocket, such as WebSocket from the ws package')
  }
  if (!(limits.minDelay > 0 && limits.maxDelay >= limits.minDelay && limits.maxRetries >= 0 && stableAfter >= 0)) {
    throw new RangeError('connect: needs 0 < minDelay <= maxDelay, maxRetries >= 0 and stableAfter >= 0')
  }
  let socket: S | undefined
  let timer: ReturnType<typeof setTimeout> | undefined
  // Reconnects since the last stable connection: the retry count; and those of them the server
  // did not ask for with a hint, the backoff exponent. A client moved along by a rolling
  // deploy (1001 with a hint, three times in a row) is not backed off as if it had failed.
  let attempt = 0
  let failures = 0
  // Set by close() or by a close the policy will not retry; nothing reconnects after it.
  let stopped = false

  // After a close (or an attempt that opened no socket): schedule the reconnect, or stop.
  function next (close?: CloseFrame): RetryOutcome {
    const delay = stopped ? undefined : reconnectDelay(close, attempt, failures, limits, random)
    if (delay === undefined) {
      stopped = true
      return { willRetry: false }
    }
    attempt++
    if (hintOf(close) === undefined) failures++
    timer = setTimeout(open, delay)
    return { willRetry: true, delay }
  }

  async function open (): Promise<void> {
    timer = undefined
    let current: S
    try {
      const offered = token === undefined ? protocols : bearerProtocols(await token(), ...protocols)
      // close() was called while token() ran.
      if (stopped) return
      current = socket = new Socket(String(url), offered)
    } catch (error) {
      onFailure?.({ error, ...next() })
      return
    }
    let openedAt: number | undefined
    current.addEventListener('open', () => {
      openedAt = Date.now()
      onOpen?.(current)
    })
    if (onMessage !== undefined) current.addEventListener('message', onMessage)
    // ws throws an 'error' event nobody listens to; the close that follows tells what matters.
    current.addEventListener('error', () => {})
    current.addEventListener('close', ({ code, reason }: CloseFrame) => {
      socket = undefined
      // Measured at the close: a refusal with rejectWith: 'close' opens too, for a moment.
      if (openedAt !== undefined && Date.now() - openedAt >= stableAfter) attempt = failures = 0
      onClose?.({ code, reason, ...next({ code, reason }) })
    })
  }

  open()
  return {
    get state () {
      return stopped ? 'closed' : socket?.readyState === 1 ? 'open' : timer === undefined ? 'connecting' : 'waiting'
    },
    get socket () {
      return socket
    },
    send (data) {
      if (socket?.readyState !== 1) return false
      socket.send(data)
      return true
    },
    close (code = 1000, reason) {
      stopped = true
      clearTimeout(timer)
      socket?.close(code, reason)
    }
  }
}
