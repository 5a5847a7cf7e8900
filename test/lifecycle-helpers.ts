import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { once } from 'node:events'
import { connect as tcpConnect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { SignJWT } from 'jose'
import type WebSocket from 'ws'
import type { ClientOptions } from 'ws'
import type { Test } from 'tap'
import { channels } from '../index.js'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { handshake, LogCapture, tryConnect, type StartedApp } from './helpers.js'

export { sleep }

/** A 40-byte HS256 secret. */
export const secret = new TextEncoder().encode('lifecycle-tests-secret-0123456789-abcdef')

/** Epoch seconds, `offset` seconds from now. */
export function epoch (offset = 0): number {
  return Math.floor(Date.now() / 1000) + offset
}

export interface Claims {
  sub?: string
  /** Absolute epoch seconds; `false` for none. Default: one hour ahead. */
  exp?: number | false
  jti?: string
}

/** An HS256 token signed with {@link secret}. */
export async function mintToken (claims: Claims = {}): Promise<string> {
  const jwt = new SignJWT(claims.jti === undefined ? {} : { jti: claims.jti }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt()
  if (claims.sub !== undefined) jwt.setSubject(claims.sub)
  if (claims.exp !== false) jwt.setExpirationTime(claims.exp ?? epoch(3600))
  return await jwt.sign(secret)
}

/** ws client options sending `Authorization: Bearer <token>`. */
export function bearer (token: string, options: ClientOptions = {}): ClientOptions {
  return { ...options, headers: { ...options.headers, authorization: `Bearer ${token}` } }
}

export interface Closed {
  code: number
  reason: string
  /** `Date.now()` when the client saw the close. */
  at: number
}

/** Resolves when `socket` closes, with the code and reason it saw. */
export function whenClosed (socket: WebSocket): Promise<Closed> {
  return new Promise((resolve) => {
    socket.once('close', (code, reason) => resolve({ code, reason: String(reason), at: Date.now() }))
  })
}

/** Polls `predicate` every few ms; throws (failing the test) when `timeout` ms pass first. */
export async function waitFor (predicate: () => boolean, what: string, timeout = 3000): Promise<void> {
  const until = Date.now() + timeout
  while (!predicate()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(5)
  }
}

/** Resolves with `true` when `promise` settles within `ms`, `false` otherwise. */
export async function settlesWithin (promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(resolve, ms, false) })
  const settled = promise.then(() => true, () => true)
  try {
    return await Promise.race([settled, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Stops reading: the peer's kernel buffers fill and its writes back up. */
export function pauseReading (socket: WebSocket): void {
  rawSocket(socket).pause()
}

export function resumeReading (socket: WebSocket): void {
  rawSocket(socket).resume()
}

/** The TCP socket under a ws socket (ws keeps it as `_socket`). */
export function rawSocket (socket: WebSocket): Socket {
  return (socket as unknown as { _socket: Socket })._socket
}

export interface ChannelRecord {
  accepted: Array<Record<string, unknown>>
  rejected: Array<Record<string, unknown>>
  closed: Array<Record<string, unknown>>
}

/** Subscribes to the guard's diagnostics channels until the test ends. */
export function recordChannels (t: Test): ChannelRecord {
  const record: ChannelRecord = { accepted: [], rejected: [], closed: [] }
  for (const kind of ['accepted', 'rejected', 'closed'] as const) {
    const listener = (message: unknown): void => { record[kind].push(message as Record<string, unknown>) }
    subscribe(channels[kind], listener)
    t.teardown(() => { unsubscribe(channels[kind], listener) })
  }
  return record
}

/** Opens `count` clients in batches; each is terminated in teardown. */
export async function openMany (t: Test, url: string, count: number, options: ClientOptions = {}): Promise<WebSocket[]> {
  const sockets: WebSocket[] = []
  while (sockets.length < count) {
    const batch = Math.min(50, count - sockets.length)
    const outcomes = await Promise.all(Array.from({ length: batch }, () => tryConnect(url, [], options)))
    for (const outcome of outcomes) {
      if (outcome.kind !== 'open') throw new Error(`expected the connection to open, got ${JSON.stringify(outcome)}`)
      t.teardown(() => outcome.socket.terminate())
      sockets.push(outcome.socket)
    }
  }
  return sockets
}

export interface Stream {
  /** Frames sent so far. */
  sent: number
  /** Largest `bufferedAmount` seen right after a send (while sending). */
  peakBuffered: number
  /** `Date.now()` of the first send after which bytes stayed buffered; 0 until then. */
  firstBufferedAt: number
  /** `Date.now()` when the kernel last accepted more bytes. */
  lastProgressAt: number
  /** `Date.now()` when the server socket closed; 0 while open. */
  closedAt: number
  /** Largest growth of `process.memoryUsage().arrayBuffers` over the start, sampled each round. */
  peakMemoryGrowth: number
  stop: () => void
}

export interface StreamOptions {
  chunkSize?: number
  /** Frames per round. */
  perRound?: number
  /** ms between rounds. */
  every?: number
  /** Stop sending after this many ms whatever happens (bounds the test). */
  maxMs?: number
  /** Skip a round while this much is buffered (a producer that heeds backpressure). */
  maxBuffered?: number
  /** A fresh buffer per frame (so buffered data costs memory), instead of one shared buffer. */
  fresh?: boolean
}

/** A server-side producer that keeps sending binary frames to `socket`, and what it saw. */
export function stream (socket: WebSocket, options: StreamOptions = {}): Stream {
  const { chunkSize = 64 * 1024, perRound = 1, every = 10, maxMs = 5000, maxBuffered = Infinity, fresh = false } = options
  const raw = rawSocket(socket)
  const shared = Buffer.alloc(chunkSize, 1)
  const start = Date.now()
  const memoryAtStart = process.memoryUsage().arrayBuffers
  let flushed = raw.bytesWritten - raw.writableLength
  const info: Stream = {
    sent: 0,
    peakBuffered: 0,
    firstBufferedAt: 0,
    lastProgressAt: start,
    closedAt: 0,
    peakMemoryGrowth: 0,
    stop: () => clearInterval(timer)
  }
  socket.once('close', () => {
    info.closedAt = Date.now()
    clearInterval(timer)
  })
  const timer = setInterval(() => {
    const now = Date.now()
    const mark = raw.bytesWritten - raw.writableLength
    if (mark > flushed) {
      flushed = mark
      info.lastProgressAt = now
    }
    info.peakMemoryGrowth = Math.max(info.peakMemoryGrowth, process.memoryUsage().arrayBuffers - memoryAtStart)
    if (now - start > maxMs) return clearInterval(timer)
    for (let i = 0; i < perRound && socket.readyState === socket.OPEN && socket.bufferedAmount < maxBuffered; i++) {
      socket.send(fresh ? Buffer.alloc(chunkSize, 1) : shared)
      info.sent++
      const buffered = socket.bufferedAmount
      info.peakBuffered = Math.max(info.peakBuffered, buffered)
      if (buffered > 0 && info.firstBufferedAt === 0) info.firstBufferedAt = Date.now()
    }
  }, every)
  return info
}

/**
 * `startApp` for a test that demonstrates a bug which can leave `app.close()` hanging: the
 * teardown waits at most `ms`, then fails the test and closes the listening socket, so the
 * file goes on instead of timing out.
 */
export async function startAppBounded (t: Test, ms: number, setup: (app: FastifyInstance) => void | Promise<void>, options: FastifyServerOptions = {}): Promise<StartedApp> {
  const logs = new LogCapture()
  const app = Fastify({ logger: { level: 'info', stream: logs }, ...options })
  const sockets = new Set<Socket>()
  t.teardown(async () => {
    if (!await settlesWithin(app.close(), ms)) {
      t.fail(`app.close() did not finish within ${ms} ms`)
      app.server.close()
      for (const socket of sockets) socket.destroy()
    }
  })
  await setup(app)
  app.server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return { app, port, logs, url: (path) => `ws://127.0.0.1:${port}${path}` }
}

/**
 * A WebSocket client on a bare TCP socket: it completes the handshake, then reads nothing
 * unless the test calls `socket.read()` (paused mode), so the test decides how fast it drains.
 * Destroyed in teardown.
 */
export async function rawUpgrade (t: Test, port: number, path: string): Promise<Socket> {
  const socket = tcpConnect({ port, host: '127.0.0.1' })
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.write(handshake(path))
  let head = ''
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      socket.off('data', onData)
      socket.pause()
      resolve()
    }
    socket.on('data', onData)
    socket.once('close', () => reject(new Error('the server closed the connection during the handshake')))
  })
  if (!head.startsWith('HTTP/1.1 101')) throw new Error(`expected a 101, got ${head.split('\r\n')[0]}`)
  return socket
}
