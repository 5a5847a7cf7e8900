import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import type { Test } from 'tap'

/*
 * Raw TCP exchanges, for what a WebSocket client cannot send or would hide: malformed or
 * duplicated headers, pipelined requests, the bytes after a 101, a client that reads slowly.
 */

/** A handshake request, with `headers` added (or removed when given as null). */
export function handshake (path: string, headers: Record<string, string | null> = {}): string {
  const base: Record<string, string | null> = {
    Host: '127.0.0.1',
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    ...headers
  }
  const lines = Object.entries(base).filter(([, value]) => value !== null).map(([name, value]) => `${name}: ${value}`)
  return `GET ${path} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`
}

/** A plain HTTP/1.1 request (no upgrade) with the given extra header lines. */
export function plainRequest (path: string, lines: string[] = [], method = 'GET'): string {
  return [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', ...lines].join('\r\n') + '\r\n\r\n'
}

/** A port nothing listens on (it was free a moment ago). */
export async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

export interface RawHead {
  status: number
  /** Lowercased names, trimmed values. */
  headers: Record<string, string>
}

export interface RawResponse extends RawHead {
  body: string
  /** Everything received. */
  text: string
}

/** Parses a response head (status line and headers, without the blank line). */
function parseHead (head: string): RawHead {
  const [statusLine = '', ...headerLines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of headerLines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers }
}

export interface ExchangeOptions {
  /**
   * End the request with a FIN and expect a reset: for requests the server may refuse before
   * it read them whole (a 431), where the status line is what counts.
   */
  end?: boolean
}

/** Writes raw bytes to the server and reads until it closes the connection. */
export async function rawExchange (port: number, request: string, options: ExchangeOptions = {}): Promise<RawResponse> {
  const socket = connect({ port, host: '127.0.0.1' })
  const chunks: Buffer[] = []
  socket.on('data', (chunk) => chunks.push(chunk))
  if (options.end === true) socket.on('error', () => {})
  await once(socket, 'connect')
  if (options.end === true) {
    const closed = new Promise((resolve) => socket.once('close', resolve))
    socket.end(request)
    await closed
  } else {
    socket.write(request)
    // The guard must close the connection itself: waiting for 'close' proves it.
    await once(socket, 'close')
  }
  const text = Buffer.concat(chunks).toString()
  const end = text.indexOf('\r\n\r\n')
  return { ...parseHead(end === -1 ? text : text.slice(0, end)), body: end === -1 ? '' : text.slice(end + 4), text }
}

/**
 * Sends raw bytes and reads until `complete(received)` is true, the server closes, or `ms`
 * passed; then destroys the socket. For exchanges the server does not end itself.
 */
export async function rawRead (port: number, request: string, complete: (received: Buffer) => boolean, ms = 1000): Promise<Buffer> {
  const socket = connect({ port, host: '127.0.0.1' })
  const chunks: Buffer[] = []
  const timer = setTimeout(() => socket.destroy(), ms)
  try {
    await once(socket, 'connect')
    socket.write(request)
    while (!complete(Buffer.concat(chunks))) {
      const [chunk] = await Promise.race([once(socket, 'data'), once(socket, 'close')]) as [Buffer | boolean]
      if (!Buffer.isBuffer(chunk)) break
      chunks.push(chunk)
    }
  } finally {
    clearTimeout(timer)
    socket.destroy()
  }
  return Buffer.concat(chunks)
}

/**
 * Sends a raw request and reads only the response head: for handshakes that are accepted and
 * stay open. Gives up after `ms` with status 0, so a server that never answers fails the test.
 */
export async function rawHead (port: number, request: string, ms = 1000): Promise<RawHead & { rest: Buffer }> {
  const received = await rawRead(port, request, (bytes) => bytes.includes('\r\n\r\n'), ms)
  const end = received.indexOf('\r\n\r\n')
  if (end === -1) return { status: 0, headers: {}, rest: Buffer.alloc(0) }
  return { ...parseHead(received.subarray(0, end).toString('latin1')), rest: received.subarray(end + 4) }
}

/**
 * Opens a TCP connection and writes `request`, for a test that then drives the socket itself
 * (leaves, resets, writes more). Destroyed in teardown.
 */
export async function rawConnect (t: Pick<Test, 'teardown'>, port: number, request: string): Promise<Socket> {
  const socket = connect({ port, host: '127.0.0.1' })
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.write(request)
  return socket
}

/**
 * Reads from `socket` until the response head has arrived and returns it (latin1, without the
 * blank line). The socket is left paused, with what followed the head put back.
 */
export async function readHead (socket: Socket): Promise<string> {
  let received = Buffer.alloc(0)
  return await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk])
      const end = received.indexOf('\r\n\r\n')
      if (end === -1) return
      stop()
      socket.pause()
      if (received.length > end + 4) socket.unshift(received.subarray(end + 4))
      resolve(received.subarray(0, end).toString('latin1'))
    }
    const onClose = (): void => { stop(); reject(new Error('the server closed the connection during the handshake')) }
    const onError = (err: Error): void => { stop(); reject(err) }
    const stop = (): void => {
      socket.off('data', onData)
      socket.off('close', onClose)
      socket.off('error', onError)
    }
    socket.on('data', onData)
    socket.once('close', onClose)
    socket.once('error', onError)
  })
}

/**
 * A WebSocket client on a bare TCP socket: it completes the handshake, then reads nothing
 * unless the test calls `socket.read()` or resumes it, so the test decides how fast it drains.
 * Destroyed in teardown.
 */
export async function rawUpgrade (t: Pick<Test, 'teardown'>, port: number, path: string, headers: Record<string, string | null> = {}): Promise<Socket> {
  const socket = await rawConnect(t, port, handshake(path, headers))
  const head = await readHead(socket)
  if (!head.startsWith('HTTP/1.1 101')) throw new Error(`expected a 101, got ${head.split('\r\n')[0]}`)
  return socket
}
