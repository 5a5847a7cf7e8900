/*
 * One bench server: bare @fastify/websocket, the built guard (imported from dist/ through the
 * package's own name), or bare plus a per-connection setInterval heartbeat. It listens on
 * 127.0.0.1, answers the load generator's requests over the IPC channel, and exits when the
 * channel closes: it never outlives the bench.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks'
import { writeHeapSnapshot } from 'node:v8'
import fastifyJwt from '@fastify/jwt'
import websocket from '@fastify/websocket'
import Fastify, { type FastifyInstance } from 'fastify'
import wsGuard, { type WsGuardOptions } from 'fastify-ws-guard'
import { RedisStore } from 'fastify-ws-guard/redis'
import { importSPKI, jwtVerify, type JWTPayload } from 'jose'
import { createClient } from 'redis'
import { Server as SocketIoServer } from 'socket.io'
import type { WebSocket } from 'ws'
import { cpuDelta, type CpuSample, type HeapReply, type LoopReply, type MemoryReply, type ReadyMessage, type RevokeReply, type SampleReply, type ServerConfig, type ServerRequest } from './protocol.js'

const config = JSON.parse(process.env.WS_GUARD_BENCH_SERVER ?? '{}') as ServerConfig
const gc = (globalThis as { gc?: () => void }).gc

function echo (socket: WebSocket): void {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
}

/** The naive heartbeat of the ws README: one timer and two closures per connection. */
function perConnectionTimer (socket: WebSocket, interval: number): void {
  let alive = true
  socket.on('pong', () => { alive = true })
  const timer = setInterval(() => {
    if (!alive) return socket.terminate()
    alive = false
    socket.ping()
  }, interval)
  socket.on('close', () => clearInterval(timer))
}

/** The reference: what a hand-written jose check in an async onRequest hook costs. */
async function addNaiveJoseHook (app: FastifyInstance): Promise<void> {
  const key = await joseKey()
  app.decorateRequest('claims', null)
  app.addHook('onRequest', async (request, reply) => {
    const token = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1]
    try {
      request.claims = (await jwtVerify(token ?? '', key)).payload
    } catch {
      return reply.code(401).send()
    }
  })
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The naive hook's verified claims. */
    claims: JWTPayload | null
  }
}

/** The key jose verifies with: the HMAC secret's bytes, or the imported ES256 public key. */
async function joseKey (): Promise<Uint8Array | CryptoKey> {
  const auth = config.auth
  if (auth !== undefined && 'secret' in auth) return new TextEncoder().encode(auth.secret)
  if (auth !== undefined && 'publicKey' in auth) return await importSPKI(auth.publicKey, 'ES256')
  throw new Error(`${config.kind} takes a secret or a public key`)
}

/** A peer: @fastify/jwt, verifying the Bearer header in an onRequest hook. */
async function addFastifyJwt (app: FastifyInstance): Promise<void> {
  const auth = config.auth
  if (auth !== undefined && 'secret' in auth) await app.register(fastifyJwt, { secret: auth.secret })
  else if (auth !== undefined && 'publicKey' in auth) await app.register(fastifyJwt, { secret: { public: auth.publicKey }, verify: { algorithms: ['ES256'] } })
  else throw new Error('fastify-jwt takes a secret or a public key')
  // A rejection is @fastify/jwt's own 401 (FST_JWT_AUTHORIZATION_TOKEN_INVALID and kin).
  app.addHook('onRequest', async (request) => { await request.jwtVerify() })
}

/** A peer: socket.io on the app's server, websocket transport only, jose in an io.use middleware. */
async function addSocketIo (app: FastifyInstance): Promise<SocketIoServer> {
  const key = await joseKey()
  const io = new SocketIoServer(app.server, { transports: ['websocket'], serveClient: false })
  io.use((socket, next) => {
    const token: unknown = socket.handshake.auth.token
    jwtVerify(typeof token === 'string' ? token : '', key).then(() => next(), () => next(new Error('unauthorized')))
  })
  io.on('connection', (socket) => {
    socket.on('message', (data: unknown) => socket.emit('message', data))
  })
  return io
}

let io: SocketIoServer | undefined

async function build (): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  if (config.kind === 'socketio') {
    io = await addSocketIo(app)
  } else if (config.kind === 'guard') {
    const options: WsGuardOptions = { origins: config.origins ?? ['https://app.example.com'] }
    if (config.auth !== undefined) options.auth = { ...config.auth }
    if (config.heartbeat !== undefined) options.heartbeat = config.heartbeat
    if (config.maxConnectionsPerUser !== undefined) options.maxConnectionsPerUser = config.maxConnectionsPerUser
    if (config.store !== undefined) {
      // The app owns the client; this process exits with the bench, the client with it.
      const client = createClient({ url: config.store.redisUrl })
      client.on('error', () => {})
      await client.connect()
      options.store = new RedisStore({ client })
    }
    if (config.messageGuards !== undefined) {
      options.maxMessageBytes = config.messageGuards.maxMessageBytes
      options.messageRate = { ...config.messageGuards.messageRate }
    }
    await app.register(wsGuard, options)
    app.wsRoute('/ws', (socket) => echo(socket))
  } else {
    await app.register(websocket)
    if (config.kind === 'jose') await addNaiveJoseHook(app)
    if (config.kind === 'fastify-jwt') await addFastifyJwt(app)
    const interval = config.timerInterval
    app.get('/ws', { websocket: true }, (socket, request) => {
      echo(socket)
      // As an app would: the claims stay at hand for the connection's life.
      if (config.kind === 'jose') socket.once('close', () => request.claims)
      if (config.kind === 'timer' && interval !== undefined) perConnectionTimer(socket, interval)
    })
  }
  return app
}

const app = await build()
await app.listen({ host: '127.0.0.1', port: 0 })
const address = app.server.address()
const ready: ReadyMessage = { ready: true, port: typeof address === 'object' && address !== null ? address.port : 0, pid: process.pid }
process.send!(ready)
process.on('disconnect', () => process.exit(0))
process.on('message', (message: ServerRequest) => {
  handle(message).then(
    (reply) => process.send!({ id: message.id, reply }, () => { if (message.op === 'exit') process.exit(0) }),
    (err: unknown) => process.send!({ id: message.id, error: String(err) })
  )
})

let snapshots = 0
// Garbage collections during a loop window: what the code under test allocates shows here.
const gcs = { count: 0, ms: 0 }
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gcs.count++
    gcs.ms += entry.duration
  }
}).observe({ entryTypes: ['gc'] })
let loop: { histogram: ReturnType<typeof monitorEventLoopDelay>, cpu: CpuSample, startedAt: number, own: OwnDelay, gcCount: number, gcMs: number } | undefined

/** Event-loop delays of a 5 ms timer chain, each capped by the process CPU time spent meanwhile. */
class OwnDelay {
  readonly samples: number[] = []
  #timer: NodeJS.Timeout | undefined
  #expected = 0
  #cpu = 0

  start (): void {
    this.#arm()
  }

  stop (): void {
    clearTimeout(this.#timer)
  }

  #arm (): void {
    this.#expected = performance.now() + 5
    const { user, system } = process.cpuUsage()
    this.#cpu = user + system
    this.#timer = setTimeout(() => {
      const late = performance.now() - this.#expected
      const { user, system } = process.cpuUsage()
      this.samples.push(Math.max(0, Math.min(late, (user + system - this.#cpu) / 1000)))
      this.#arm()
    }, 5)
  }
}

async function handle (message: ServerRequest): Promise<unknown> {
  switch (message.op) {
    case 'sample': return { cpu: cpuSample(), hrtimeUs: hrtimeUs(), open: openCount() } satisfies SampleReply
    case 'memory': return await memory()
    case 'loopStart': {
      const histogram = monitorEventLoopDelay({ resolution: 10 })
      histogram.enable()
      const own = new OwnDelay()
      own.start()
      loop = { histogram, cpu: cpuSample(), startedAt: performance.now(), own, gcCount: gcs.count, gcMs: gcs.ms }
      return {}
    }
    case 'loopStop': {
      if (loop === undefined) throw new Error('loopStop without loopStart')
      const { histogram, cpu, startedAt, own, gcCount, gcMs } = loop
      histogram.disable()
      own.stop()
      const ownSorted = own.samples.sort((a, b) => a - b)
      loop = undefined
      const now = cpuSample()
      return {
        wallMs: performance.now() - startedAt,
        cpu: cpuDelta(now, cpu),
        delayMaxMs: histogram.max / 1e6,
        delayP99Ms: histogram.percentile(99) / 1e6,
        delayP50Ms: histogram.percentile(50) / 1e6,
        ownDelayMaxMs: ownSorted.at(-1) ?? 0,
        ownDelayP99Ms: ownSorted[Math.max(0, Math.ceil(ownSorted.length * 0.99) - 1)] ?? 0,
        open: openCount(),
        gcCount: gcs.count - gcCount,
        gcMs: gcs.ms - gcMs,
        guardStats: config.kind === 'guard' ? app.wsGuard.stats() : undefined
      } satisfies LoopReply
    }
    case 'heapSnapshot': {
      await collect()
      return { file: writeHeapSnapshot(join(message.dir, `${config.name}-${process.pid}-${++snapshots}.heapsnapshot`)), open: openCount() } satisfies HeapReply
    }
    case 'revoke': {
      const calledAt = performance.timeOrigin + performance.now()
      const closedHere = await app.wsGuard.revoke({ sub: message.sub })
      return { calledAt, resolvedAt: performance.timeOrigin + performance.now(), closedHere } satisfies RevokeReply
    }
    case 'exit': return {}
  }
}

function openCount (): number {
  return io === undefined ? app.websocketServer.clients.size : io.engine.clientsCount
}

async function collect (): Promise<void> {
  if (gc === undefined) throw new Error('run the server with --expose-gc')
  // Several rounds: weak callbacks and finalizers free more on the next one.
  for (let i = 0; i < 4; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
}

async function memory (): Promise<MemoryReply> {
  await collect()
  const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage()
  return { rss, heapUsed, heapTotal, external, arrayBuffers, open: openCount() }
}

function hrtimeUs (): number {
  return Number(process.hrtime.bigint() / 1000n)
}

// /proc/<pid>/task/<tid>/stat counts in clock ticks: 100 per second on every common Linux.
const usPerTick = 10_000

/** Process CPU, and where /proc has it, the main thread's. */
function cpuSample (): CpuSample {
  const { user, system } = process.cpuUsage()
  let main: number | undefined
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'latin1')
    // Fields after the command's closing parenthesis start at field 3; utime is 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    main = (Number(fields[11]) + Number(fields[12])) * usPerTick
  } catch {
    // Not Linux: the total is all there is.
  }
  return { total: user + system, main }
}
