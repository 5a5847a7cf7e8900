/** What a bench server process runs, passed in the `WS_GUARD_BENCH_SERVER` environment variable as JSON. */
export interface ServerConfig {
  /** Shown in logs and file names. */
  readonly name: string
  /**
   * `bare`: @fastify/websocket alone; `guard`: the built plugin; `timer`: bare plus the naive
   * heartbeat (one `setInterval` per connection), the reference the timer wheel is held against;
   * `jose`: bare plus a naive async `onRequest` hook that reads the Bearer header and awaits
   * `jose.jwtVerify`, the floor any jose-based guard stands on. The peers, what an app would use
   * instead: `fastify-jwt` is bare plus @fastify/jwt and an `onRequest` hook awaiting
   * `request.jwtVerify()`; `socketio` is a socket.io server on the same Fastify server, its
   * `io.use` middleware verifying `socket.handshake.auth.token` with jose.
   */
  readonly kind: 'bare' | 'guard' | 'timer' | 'jose' | 'fastify-jwt' | 'socketio'
  /** Guard only: the allowed origins. */
  readonly origins?: readonly string[]
  /** Guard, jose and the peers: how tokens are verified; none for the origin-only guard. */
  readonly auth?: { readonly secret: string } | { readonly publicKey: string } | { readonly jwksUrl: string }
  /**
   * Guard only: the heartbeat option (`undefined` keeps the plugin's default, 30 s pings). The
   * 1 s case sets readDeadline 2000, the same one-interval slack for a late pong as the
   * per-connection reference (the default, 1.5 x pingInterval, allows only 500 ms).
   */
  readonly heartbeat?: { readonly pingInterval: number, readonly readDeadline?: number } | false
  /** Timer only: ms between pings of the per-connection `setInterval`. */
  readonly timerInterval?: number
  /** Guard only: a `RedisStore` on a node-redis client of this URL; the default `MemoryStore` without. */
  readonly store?: { readonly redisUrl: string }
  /** Guard only: the per-user limit, counted in the store. */
  readonly maxConnectionsPerUser?: number
  /** Guard only: the message guards (`maxMessageBytes` and `messageRate`); none by default. */
  readonly messageGuards?: { readonly maxMessageBytes: number, readonly messageRate: { readonly messages: number, readonly interval: number } }
}

/** A request from the load generator to a server, over the IPC channel. */
export type ServerRequest =
  | { id: number, op: 'sample' }
  | { id: number, op: 'memory' }
  | { id: number, op: 'loopStart' }
  | { id: number, op: 'loopStop' }
  | { id: number, op: 'heapSnapshot', dir: string }
  | { id: number, op: 'revoke', sub: string }
  | { id: number, op: 'exit' }

/**
 * CPU time of one process, µs. Node 20 names none of its threads, so /proc can only tell the
 * main (JavaScript) thread from the others: the libuv threadpool (WebCrypto jobs) and V8's
 * platform workers (concurrent GC and compilation).
 */
export interface CpuSample {
  /** `process.cpuUsage()` user + system: every thread of the process. */
  total: number
  /** The main thread, from /proc/self/task/<pid>/stat (10 ms ticks); `undefined` off Linux. */
  main: number | undefined
}

export interface SampleReply {
  cpu: CpuSample
  /** `process.hrtime()` in µs: the clock `--cpu-prof` timestamps use. */
  hrtimeUs: number
  /** Open WebSocket connections (the ws server's client set). */
  open: number
}

export interface MemoryReply {
  rss: number
  heapUsed: number
  heapTotal: number
  external: number
  arrayBuffers: number
  open: number
}

export interface LoopReply {
  wallMs: number
  cpu: CpuSample
  /** Event-loop delay, ms. */
  delayMaxMs: number
  delayP99Ms: number
  delayP50Ms: number
  /**
   * The same delays, each capped by the CPU the process used meanwhile (a 5 ms timer chain):
   * stalls the server's own work explains. Time it spent descheduled, because another process
   * had the CPU, does not count.
   */
  ownDelayMaxMs: number
  ownDelayP99Ms: number
  open: number
  /** Garbage collections over the window, and the time they took. */
  gcCount: number
  gcMs: number
  /** Guard only: its counters, to see that the heartbeat ended no healthy connection. */
  guardStats: unknown
}

export interface HeapReply { file: string, open: number }

/** `app.wsGuard.revoke({ sub })` on this instance. */
export interface RevokeReply {
  /** When revoke() was called and when it resolved: `performance.timeOrigin + performance.now()`, ms (a clock every process shares). */
  calledAt: number
  resolvedAt: number
  /** Connections it closed on this instance. */
  closedHere: number
}

/** First message of a server: it listens. */
export interface ReadyMessage { ready: true, port: number, pid: number }

/** `after - before`, thread by thread. */
export function cpuDelta (after: CpuSample, before: CpuSample): CpuSample {
  const minus = (a: number | undefined, b: number | undefined): number | undefined => a === undefined || b === undefined ? undefined : a - b
  return { total: after.total - before.total, main: minus(after.main, before.main) }
}
