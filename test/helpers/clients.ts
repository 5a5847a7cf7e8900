import { once } from 'node:events'
import type { Socket } from 'node:net'
import type { JWTPayload } from 'jose'
import WebSocket, { type ClientOptions } from 'ws'
import type { Test } from 'tap'

export type Outcome =
  | { kind: 'open', socket: WebSocket, protocol: string, headers: Record<string, string | string[] | undefined> }
  | { kind: 'refused', status: number, headers: Record<string, string | string[] | undefined>, body: string }
  | { kind: 'closed', code: number, reason: string }
  | { kind: 'error', error: Error }

/**
 * Opens a real ws client and reports what happened: open (the caller closes), an HTTP refusal,
 * a close right after the upgrade, or a client error.
 */
export async function tryConnect (url: string, protocols: string | string[] = [], options: ClientOptions = {}): Promise<Outcome> {
  const socket = new WebSocket(url, protocols, options)
  return await new Promise<Outcome>((resolve) => {
    let upgradeHeaders: Record<string, string | string[] | undefined> = {}
    socket.on('upgrade', (response) => { upgradeHeaders = response.headers })
    socket.on('unexpected-response', (_request, response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += chunk.toString() })
      response.on('end', () => resolve({ kind: 'refused', status: response.statusCode ?? 0, headers: response.headers, body }))
    })
    socket.on('open', () => {
      // A close frame may already be queued behind the 101: give it a moment to arrive.
      setImmediate(() => {
        if (socket.readyState === WebSocket.OPEN) resolve({ kind: 'open', socket, protocol: socket.protocol, headers: upgradeHeaders })
      })
    })
    socket.on('close', (code, reason) => resolve({ kind: 'closed', code, reason: reason.toString() }))
    socket.on('error', (error) => resolve({ kind: 'error', error }))
  })
}

/**
 * `tryConnect` bounded in time: when nothing happened after `ms`, terminates the client and
 * reports `{ kind: 'timeout' }`, so a hanging server fails the test instead of stalling it.
 */
export async function tryConnectWithin (ms: number, url: string, protocols: string | string[] = [], options: ClientOptions = {}): Promise<Outcome | { kind: 'timeout' }> {
  let timer: NodeJS.Timeout | undefined
  const clients: WebSocket[] = []
  const timeout = new Promise<{ kind: 'timeout' }>((resolve) => {
    timer = setTimeout(() => {
      for (const client of clients) client.terminate()
      resolve({ kind: 'timeout' })
    }, ms)
  })
  const outcome = tryConnect(url, protocols, { ...options, finishRequest: (request, client) => { clients.push(client); request.end() } })
  try {
    return await Promise.race([outcome, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Opens a client that must succeed; terminated in teardown. */
export async function openClient (t: Test, url: string, protocols: string | string[] = [], options: ClientOptions = {}): Promise<WebSocket> {
  const outcome = await tryConnect(url, protocols, options)
  if (outcome.kind !== 'open') throw new Error(`expected the connection to open, got ${JSON.stringify(outcome)}`)
  t.teardown(() => outcome.socket.terminate())
  return outcome.socket
}

export interface Closed {
  code: number
  reason: string
  /** `Date.now()` when the client saw the close. */
  at: number
}

/** Resolves when `socket` closes, with the code and reason it saw; rejects if it is closed already. */
export async function whenClosed (socket: WebSocket): Promise<Closed> {
  if (socket.readyState === WebSocket.CLOSED) throw new Error('the socket is already closed')
  return await new Promise((resolve) => {
    socket.once('close', (code, reason) => resolve({ code, reason: String(reason), at: Date.now() }))
  })
}

export async function nextMessage (socket: WebSocket): Promise<string> {
  const [data] = await once(socket, 'message')
  return String(data)
}

/** Sends `message` and resolves with the next message that arrives. */
export async function ask (socket: WebSocket, message: string): Promise<string> {
  const answer = nextMessage(socket)
  socket.send(message)
  return await answer
}

/** Asks an open socket for the route's `wsUser` (see `userEcho`). */
export async function askUser (socket: WebSocket): Promise<{ user: JWTPayload | null, protocol: string }> {
  return JSON.parse(await ask(socket, 'who'))
}

/** Connects, expects the socket to open, answers with the user it was admitted as, and closes it. */
export async function expectOpen (t: Test, url: string, protocols: string | string[] = [], options: ClientOptions = {}): Promise<{ user: JWTPayload | null, protocol: string, headers: Record<string, string | string[] | undefined> }> {
  const outcome = await tryConnect(url, protocols, options)
  if (outcome.kind !== 'open') {
    t.fail(`expected the connection to open, got ${JSON.stringify(outcome)}`)
    return { user: null, protocol: '', headers: {} }
  }
  t.teardown(() => outcome.socket.terminate())
  const answer = await askUser(outcome.socket)
  outcome.socket.close()
  return { ...answer, headers: outcome.headers }
}

/** The TCP socket under a ws socket (ws keeps it as `_socket`). */
export function rawSocket (socket: WebSocket): Socket {
  return (socket as unknown as { _socket: Socket })._socket
}

/** Stops reading: the peer's kernel buffers fill and its writes back up. */
export function pauseReading (socket: WebSocket): void {
  rawSocket(socket).pause()
}

export function resumeReading (socket: WebSocket): void {
  rawSocket(socket).resume()
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
