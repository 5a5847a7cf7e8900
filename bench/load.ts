/*
 * The load generator's client side. A `ws` client spends more CPU on a handshake than the
 * server does, so it could not saturate one: this one writes the handshake bytes itself over
 * node:net, checks the 101 and Sec-WebSocket-Accept, and answers with a masked close frame.
 */
import { createHash, randomFillSync } from 'node:crypto'
import { connect, type Socket } from 'node:net'

const acceptGuid = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const host = '127.0.0.1'

/**
 * Source addresses for the client's sockets, used only once ephemeral ports run short: an
 * explicit `localAddress` means bind() before connect(), and bind(0) searches the port space
 * the slow way (it made opening 10,000 connections take 20 s instead of 3).
 */
const sourceAddresses = [undefined, '127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7', '127.0.0.8']
let sourceIndex = 0

function nextSourceAddress (): void {
  sourceIndex = (sourceIndex + 1) % sourceAddresses.length
}

function connectOptions (port: number): { host: string, port: number, localAddress?: string, noDelay: true } {
  const localAddress = sourceAddresses[sourceIndex]
  return localAddress === undefined ? { host, port, noDelay: true } : { host, port, localAddress, noDelay: true }
}

/** Random bytes drawn from a pool refilled 64 KiB at a time: cheap fresh keys and masks. */
let pool = Buffer.alloc(0)
let poolOffset = 0
function randomBytesFromPool (count: number): Buffer {
  if (poolOffset + count > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(64 * 1024))
    poolOffset = 0
  }
  const bytes = pool.subarray(poolOffset, poolOffset + count)
  poolOffset += count
  return bytes
}

/** A masked close frame with code 1000, as a client must send it (RFC 6455 §5.3). */
function closeFrame (): Buffer {
  const mask = randomBytesFromPool(4)
  return Buffer.from([0x88, 0x82, mask[0]!, mask[1]!, mask[2]!, mask[3]!, 0x03 ^ mask[0]!, 0xe8 ^ mask[1]!])
}

/** A masked text frame (the load generator's socket.io packets). */
function maskedText (text: string): Buffer {
  const payload = Buffer.from(text)
  const mask = randomBytesFromPool(4)
  const extended = payload.length < 126 ? 0 : 2
  const frame = Buffer.allocUnsafe(6 + extended + payload.length)
  frame[0] = 0x81
  if (extended === 0) frame[1] = 0x80 | payload.length
  else {
    frame[1] = 0x80 | 126
    frame.writeUInt16BE(payload.length, 2)
  }
  mask.copy(frame, 2 + extended)
  for (let i = 0; i < payload.length; i++) frame[6 + extended + i] = payload[i]! ^ mask[i & 3]!
  return frame
}

/** The head of the (unmasked) frame at `offset`, or `undefined` while the frame is incomplete. */
function frameAt (data: Buffer, offset: number): { opcode: number, headLength: number, length: number } | undefined {
  if (data.length - offset < 2) return undefined
  let length = data[offset + 1]! & 0x7f
  let headLength = 2
  if (length === 126) {
    if (data.length - offset < 4) return undefined
    length = data.readUInt16BE(offset + 2)
    headLength = 4
  } else if (length === 127) {
    if (data.length - offset < 10) return undefined
    length = Number(data.readBigUInt64BE(offset + 2))
    headLength = 10
  }
  if (data.length - offset < headLength + length) return undefined
  return { opcode: data[offset]! & 0x0f, headLength, length }
}

/** The complete text frames at the start of `data` (the server's frames are unmasked), and the bytes after them. */
function textFramesIn (data: Buffer): { texts: string[], rest: Buffer } {
  const texts: string[] = []
  let offset = 0
  while (data.length - offset >= 2) {
    const frame = frameAt(data, offset)
    if (frame === undefined) break
    const { opcode, headLength, length } = frame
    texts.push(opcode === 0x1 ? data.toString('utf8', offset + headLength, offset + headLength + length) : `(opcode ${opcode})`)
    offset += headLength + length
  }
  return { texts, rest: data.subarray(offset) }
}

/** A masked pong echoing a ping's payload. */
function pongFrame (payload: Buffer): Buffer {
  const mask = randomBytesFromPool(4)
  const frame = Buffer.allocUnsafe(6 + payload.length)
  frame[0] = 0x8a
  frame[1] = 0x80 | payload.length
  mask.copy(frame, 2)
  for (let i = 0; i < payload.length; i++) frame[6 + i] = payload[i]! ^ mask[i & 3]!
  return frame
}

/** What one handshake sends besides the fixed WebSocket headers, and the status it expects. */
export interface HandshakeRequest {
  /** Extra header lines, each ending in CRLF. */
  readonly headers: string
  /** 101, or the refusal's status (403 bad origin, 401 token missing or invalid). */
  readonly expectStatus: number
  /** The request target; `/ws` by default. */
  readonly path?: string
  /**
   * A socket.io connection: after the 101, engine.io's open packet, then the client's CONNECT
   * packet (`40` and the auth object) and the server's answer, `40` (connected) or `44`
   * (CONNECT_ERROR, what an `io.use` middleware's refusal sends).
   */
  readonly socketIo?: { readonly token: string, readonly expect: 'connect' | 'refuse' }
}

/** The engine.io WebSocket endpoint of a socket.io server (protocol 4, websocket transport only). */
export const socketIoPath = '/socket.io/?EIO=4&transport=websocket'

function requestText (port: number, key: string, extra: string, path = '/ws'): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`
}

const acceptHeader = /\r\nsec-websocket-accept:[ \t]*([^\r\n]*)/i

type HeadVerdict = { status: number, error?: string }

/** Checks the response head: the expected status and, on a 101, the Sec-WebSocket-Accept for this key. */
function checkHead (head: string, key: string, expectStatus: number): HeadVerdict {
  const status = Number(head.slice(9, 12))
  if (status !== expectStatus) return { status, error: `status ${status}, expected ${expectStatus}` }
  if (status === 101) {
    const accept = acceptHeader.exec(head)?.[1]
    const expected = createHash('sha1').update(key + acceptGuid).digest('base64')
    if (accept !== expected) return { status, error: 'wrong Sec-WebSocket-Accept' }
  }
  return { status }
}

export interface BatchResult {
  readonly count: number
  readonly ok: number
  readonly errors: number
  /** Up to five distinct error messages. */
  readonly errorSamples: string[]
  /** First connect to last close. */
  readonly wallMs: number
  /** Connect to response head, ms, of the successful handshakes. */
  readonly latencies: Float64Array
}

/**
 * `count` handshakes with at most `concurrency` in flight, each connect → response head →
 * (on a 101) masked close frame → the server's close, until its socket closes.
 */
export async function runHandshakes (port: number, count: number, concurrency: number, requestFor: (index: number) => HandshakeRequest, timeoutMs = 10_000): Promise<BatchResult> {
  const latencies = new Float64Array(count)
  let ok = 0
  let errors = 0
  const errorSamples = new Set<string>()
  let started = 0
  const begin = performance.now()

  await new Promise<void>((resolve) => {
    let finished = 0
    const launch = (): void => {
      const index = started++
      handshake(port, requestFor(index), timeoutMs, (latency, error) => {
        if (error === undefined) latencies[ok++] = latency
        else {
          errors++
          if (errorSamples.size < 5) errorSamples.add(error)
        }
        if (++finished === count) resolve()
        else if (started < count) launch()
      })
    }
    if (count === 0) resolve()
    for (let i = 0; i < Math.min(concurrency, count); i++) launch()
  })
  return { count, ok, errors, errorSamples: [...errorSamples], wallMs: performance.now() - begin, latencies: latencies.subarray(0, ok) }
}

function handshake (port: number, request: HandshakeRequest, timeoutMs: number, done: (latencyMs: number, error?: string) => void): void {
  const key = randomBytesFromPool(16).toString('base64')
  const startedAt = performance.now()
  const socket = connect(connectOptions(port))
  let head = ''
  let latency = -1
  let error: string | undefined
  // socket.io only: the frames after the 101, until the answer to CONNECT.
  let frames: Buffer | undefined
  socket.setTimeout(timeoutMs)
  socket.on('connect', () => socket.write(requestText(port, key, request.headers, request.path)))
  socket.on('data', (chunk: Buffer) => {
    if (frames !== undefined) return readSocketIo(chunk)
    // After the head: the server's close frame, or a refusal's body. Both just wait for the close.
    if (latency >= 0) return
    head += chunk.toString('latin1')
    const end = head.indexOf('\r\n\r\n')
    if (end === -1) return
    const verdict = checkHead(head.slice(0, end + 2), key, request.expectStatus)
    if (verdict.error !== undefined) {
      latency = performance.now() - startedAt
      error = verdict.error
      socket.destroy()
    } else if (verdict.status === 101 && request.socketIo !== undefined) {
      frames = Buffer.alloc(0)
      readSocketIo(Buffer.from(head.slice(end + 4), 'latin1'))
    } else {
      latency = performance.now() - startedAt
      if (verdict.status === 101) socket.write(closeFrame())
    }
  })
  /** engine.io open (`0{...}`) → CONNECT with the token → `40` or `44`, then the close handshake. */
  const readSocketIo = (chunk: Buffer): void => {
    if (latency >= 0) return
    const { texts, rest } = textFramesIn(frames!.length === 0 ? chunk : Buffer.concat([frames!, chunk]))
    frames = rest
    for (const text of texts) {
      if (text.startsWith('0{')) {
        socket.write(maskedText('40' + JSON.stringify({ token: request.socketIo!.token })))
      } else if (text.startsWith('40') || text.startsWith('44')) {
        latency = performance.now() - startedAt
        const got = text.startsWith('40') ? 'connect' : 'refuse'
        if (got !== request.socketIo!.expect) error = `socket.io ${got === 'connect' ? 'connected' : `refused: ${text.slice(2, 120)}`}, expected ${request.socketIo!.expect}`
        socket.write(closeFrame())
        return
      } else {
        error = `unexpected socket.io packet ${text.slice(0, 40)}`
        socket.destroy()
        return
      }
    }
  }
  socket.on('timeout', () => {
    error ??= latency < 0 ? 'timeout waiting for the response' : 'timeout waiting for the server to close'
    socket.destroy()
  })
  socket.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EADDRNOTAVAIL') nextSourceAddress()
    error ??= err.code ?? err.message
  })
  socket.on('close', () => {
    if (error === undefined && latency < 0) error = 'closed before the response'
    done(latency, error)
  })
}

/** A masked close frame echoing the server's code, as the answer to its close. */
function closeReply (code: number): Buffer {
  const mask = randomBytesFromPool(4)
  return Buffer.from([0x88, 0x82, mask[0]!, mask[1]!, mask[2]!, mask[3]!, (code >> 8) ^ mask[0]!, (code & 0xff) ^ mask[1]!])
}

/** Open connections that stay idle: they answer pings with pongs and count them, and a close frame with one. */
export class IdlePool {
  readonly sockets = new Set<Socket>()
  pings = 0
  /** Called with the code of every close frame the server sends, as it is read. */
  onCloseFrame: ((code: number) => void) | undefined = undefined
  errors = 0
  readonly errorSamples = new Set<string>()
  closedByServer = 0
  #destroyed = false

  /** Opens `count` connections, `concurrency` at a time; resolves when all are open or failed. */
  async open (port: number, count: number, concurrency: number, headersFor: (index: number) => string, timeoutMs = 10_000): Promise<void> {
    let started = 0
    await new Promise<void>((resolve) => {
      let finished = 0
      const launch = (): void => {
        const index = started++
        this.#openOne(port, headersFor(index), timeoutMs, 3, () => {
          if (++finished === count) resolve()
          else if (started < count) launch()
        })
      }
      if (count === 0) resolve()
      for (let i = 0; i < Math.min(concurrency, count); i++) launch()
    })
  }

  #openOne (port: number, headers: string, timeoutMs: number, retries: number, done: () => void): void {
    const key = randomBytesFromPool(16).toString('base64')
    const socket = connect(connectOptions(port))
    let head = ''
    let open = false
    let settled = false
    let rest: Buffer | undefined
    const settle = (): void => {
      if (settled) return
      settled = true
      socket.setTimeout(0)
      done()
    }
    const fail = (message: string): void => {
      if (settled) return
      this.errors++
      if (this.errorSamples.size < 5) this.errorSamples.add(message)
      socket.destroy()
      settle()
    }
    socket.setTimeout(timeoutMs)
    socket.on('connect', () => socket.write(requestText(port, key, headers)))
    socket.on('timeout', () => fail('timeout opening'))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!open && err.code === 'EADDRNOTAVAIL' && retries > 0 && !settled) {
        settled = true
        nextSourceAddress()
        this.#openOne(port, headers, timeoutMs, retries - 1, done)
        return
      }
      fail(err.code ?? err.message)
    })
    socket.on('close', () => {
      if (open && !this.#destroyed) {
        this.sockets.delete(socket)
        this.closedByServer++
      }
      fail('closed while opening')
    })
    socket.on('data', (chunk: Buffer) => {
      if (!open) {
        head += chunk.toString('latin1')
        const end = head.indexOf('\r\n\r\n')
        if (end === -1) return
        const verdict = checkHead(head.slice(0, end + 2), key, 101)
        if (verdict.error !== undefined) return fail(verdict.error)
        open = true
        this.sockets.add(socket)
        settle()
        const after = Buffer.from(head.slice(end + 4), 'latin1')
        head = ''
        if (after.length === 0) return
        chunk = after
      }
      rest = this.#frames(socket, rest === undefined ? chunk : Buffer.concat([rest, chunk]))
    })
  }

  /** Parses the server's (unmasked) frames; answers pings. Returns an incomplete tail. */
  #frames (socket: Socket, data: Buffer): Buffer | undefined {
    let offset = 0
    while (data.length - offset >= 2) {
      const frame = frameAt(data, offset)
      if (frame === undefined) break
      const { opcode, headLength, length } = frame
      if (opcode === 0x9) {
        this.pings++
        socket.write(pongFrame(data.subarray(offset + headLength, offset + headLength + length)))
      } else if (opcode === 0x8) {
        const code = length >= 2 ? data.readUInt16BE(offset + headLength) : 1005
        this.onCloseFrame?.(code)
        // The server closes the TCP connection once it has the answer.
        socket.write(closeReply(code === 1005 ? 1000 : code))
      }
      offset += headLength + length
    }
    return offset === data.length ? undefined : data.subarray(offset)
  }

  /** Drops every connection at once. */
  destroy (): void {
    this.#destroyed = true
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
  }
}

/** Opens one WebSocket over node:net: resolves with the socket once the 101 is checked, and any bytes after it. */
export function openRaw (port: number, headers: string, timeoutMs = 10_000): Promise<{ socket: Socket, rest: Buffer }> {
  const key = randomBytesFromPool(16).toString('base64')
  const socket = connect(connectOptions(port))
  let head = ''
  return new Promise((resolve, reject) => {
    const fail = (message: string): void => {
      socket.destroy()
      reject(new Error(message))
    }
    const onTimeout = (): void => fail('timeout opening')
    const onError = (err: NodeJS.ErrnoException): void => fail(err.code ?? err.message)
    const onClose = (): void => fail('closed while opening')
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1')
      const end = head.indexOf('\r\n\r\n')
      if (end === -1) return
      const verdict = checkHead(head.slice(0, end + 2), key, 101)
      if (verdict.error !== undefined) return fail(verdict.error)
      socket.setTimeout(0)
      socket.off('timeout', onTimeout).off('close', onClose).off('data', onData).off('error', onError)
      // The owner listens to 'close'; a reset must not throw meanwhile.
      socket.on('error', () => {})
      resolve({ socket, rest: Buffer.from(head.slice(end + 4), 'latin1') })
    }
    socket.setTimeout(timeoutMs)
    socket.once('connect', () => socket.write(requestText(port, key, headers)))
    socket.on('timeout', onTimeout).on('error', onError).on('close', onClose).on('data', onData)
  })
}

/**
 * `count` masked text frames of `size` bytes (`size` < 126), back to back: the message clients
 * write slices of it and never build a frame while they measure. One mask for all: the server
 * unmasks every frame all the same.
 */
function textFrames (count: number, size: number): Buffer {
  const mask = randomBytesFromPool(4)
  const payload = Buffer.from('{"type":"chat","room":"lobby","text":"' + 'x'.repeat(Math.max(0, size - 40)) + '"}')
  const frame = Buffer.allocUnsafe(6 + payload.length)
  frame[0] = 0x81
  frame[1] = 0x80 | payload.length
  mask.copy(frame, 2)
  for (let i = 0; i < payload.length; i++) frame[6 + i] = payload[i]! ^ mask[i & 3]!
  return Buffer.concat(Array.from({ length: count }, () => frame))
}

export interface EchoBatch {
  /** Echoes received, all clients together. */
  readonly echoes: number
  /** First write to the last echo (or to the timeout). */
  readonly wallMs: number
  readonly error: string | undefined
}

/** One echo connection: its counters for the batch under way. */
interface EchoConnection {
  readonly socket: Socket
  tail: Buffer | undefined
  sent: number
  echoed: number
  target: number
  onEcho: (count: number) => void
  onEnd: (message: string) => void
}

/**
 * A few WebSocket connections that pipeline small text messages to an echo route and count
 * the echoes: at most `window` messages in flight per connection, each echo answered with the
 * next message (one write per read, whatever the count). Frames are parsed by their headers only.
 */
export class EchoClients {
  readonly #connections: EchoConnection[]
  readonly #frames: Buffer
  readonly #frameLength: number
  #broken = false

  private constructor (sockets: ReadonlyArray<{ socket: Socket, rest: Buffer }>, window: number, size: number) {
    this.#frames = textFrames(window, size)
    this.#frameLength = this.#frames.length / window
    this.#connections = sockets.map(({ socket, rest }) => {
      const connection: EchoConnection = { socket, tail: rest.length > 0 ? rest : undefined, sent: 0, echoed: 0, target: 0, onEcho: () => {}, onEnd: () => {} }
      socket.on('data', (chunk: Buffer) => this.#read(connection, chunk))
      socket.on('close', () => {
        this.#broken = true
        connection.onEnd('the server closed a connection')
      })
      return connection
    })
  }

  /** `clients` connections to `port`, each sending `headers` in its handshake. */
  static async open (port: number, clients: number, headers: string, window: number, size: number): Promise<EchoClients> {
    const opened = await Promise.allSettled(Array.from({ length: clients }, async () => await openRaw(port, headers)))
    const failed = opened.find((result) => result.status === 'rejected')
    if (failed !== undefined) {
      for (const result of opened) if (result.status === 'fulfilled') result.value.socket.destroy()
      throw new Error(`could not open the echo connections: ${String(failed.reason)}`)
    }
    return new EchoClients(opened.map((result) => (result as PromiseFulfilledResult<{ socket: Socket, rest: Buffer }>).value), window, size)
  }

  /** False once a connection closed or a batch timed out: open new clients. */
  get usable (): boolean {
    return !this.#broken
  }

  /** Every connection sends `perClient` messages and waits for their echoes, for `timeoutMs` at most. */
  async run (perClient: number, timeoutMs: number): Promise<EchoBatch> {
    const window = this.#frames.length / this.#frameLength
    const begin = performance.now()
    let echoes = 0
    let finished = 0
    return await new Promise<EchoBatch>((resolve) => {
      let settled = false
      const finish = (error?: string): void => {
        if (settled) return
        settled = true
        const wallMs = performance.now() - begin
        clearTimeout(timer)
        for (const connection of this.#connections) {
          connection.onEcho = () => {}
          connection.onEnd = () => {}
        }
        // Echoes still in flight would land in the next batch: these clients are done.
        if (error !== undefined) this.#broken = true
        resolve({ echoes, wallMs, error })
      }
      const timer = setTimeout(() => finish(`timeout: ${echoes} of ${perClient * this.#connections.length} echoes in ${timeoutMs} ms`), timeoutMs)
      for (const connection of this.#connections) {
        connection.sent = Math.min(window, perClient)
        connection.echoed = 0
        connection.target = perClient
        connection.onEcho = (count) => {
          echoes += count
          if (connection.echoed >= connection.target && ++finished === this.#connections.length) finish()
        }
        connection.onEnd = (message) => finish(message)
        connection.socket.write(this.#frames.subarray(0, connection.sent * this.#frameLength))
      }
    })
  }

  #read (connection: EchoConnection, chunk: Buffer): void {
    const data = connection.tail === undefined ? chunk : Buffer.concat([connection.tail, chunk])
    let offset = 0
    let messages = 0
    while (data.length - offset >= 2) {
      const frame = frameAt(data, offset)
      if (frame === undefined) break
      const { opcode, headLength, length } = frame
      if (opcode === 0x1 || opcode === 0x2) messages++
      else if (opcode === 0x9) connection.socket.write(pongFrame(data.subarray(offset + headLength, offset + headLength + length)))
      else if (opcode === 0x8) connection.onEnd(`the server sent close code ${length >= 2 ? data.readUInt16BE(offset + headLength) : 'none'}`)
      offset += headLength + length
    }
    connection.tail = offset === data.length ? undefined : data.subarray(offset)
    if (messages === 0) return
    connection.echoed += messages
    const more = Math.min(messages, connection.target - connection.sent)
    if (more > 0) {
      connection.sent += more
      connection.socket.write(this.#frames.subarray(0, more * this.#frameLength))
    }
    connection.onEcho(messages)
  }

  close (): void {
    this.#broken = true
    for (const connection of this.#connections) connection.socket.destroy()
  }
}
