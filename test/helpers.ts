import { once } from 'node:events'
import { connect as tcpConnect } from 'node:net'
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import WebSocket, { type ClientOptions } from 'ws'
import type { Test } from 'tap'
import wsGuard, { type WsGuardOptions } from '../index.js'

/** Log lines an app wrote, parsed. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = []
  readonly raw: string[] = []
  override _write (chunk: Buffer, _encoding: string, callback: () => void): void {
    const text = chunk.toString()
    this.raw.push(text)
    for (const line of text.split('\n')) {
      if (line !== '') this.lines.push(JSON.parse(line))
    }
    callback()
  }

  get text (): string {
    return this.raw.join('')
  }
}

export interface StartedApp {
  app: FastifyInstance
  port: number
  logs: LogCapture
  url: (path: string) => string
}

/** Builds an app, lets `setup` register plugins and routes, listens on 127.0.0.1:0, closes in teardown. */
export async function startApp (t: Test, setup: (app: FastifyInstance) => void | Promise<void>, options: FastifyServerOptions = {}): Promise<StartedApp> {
  const logs = new LogCapture()
  const app = Fastify({ logger: { level: 'info', stream: logs }, ...options })
  t.teardown(() => app.close())
  await setup(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return { app, port, logs, url: (path) => `ws://127.0.0.1:${port}${path}` }
}

export interface RawResponse {
  status: number
  headers: Record<string, string>
  body: string
  text: string
}

/** Writes raw bytes to the server and reads until it closes the connection. */
export async function rawExchange (port: number, request: string, host = '127.0.0.1'): Promise<RawResponse> {
  const socket = tcpConnect({ port, host })
  const chunks: Buffer[] = []
  socket.on('data', (chunk) => chunks.push(chunk))
  await once(socket, 'connect')
  socket.write(request)
  // The guard must close the connection itself: waiting for 'close' proves it.
  await once(socket, 'close')
  const text = Buffer.concat(chunks).toString()
  const [head = '', body = ''] = text.split('\r\n\r\n')
  const [statusLine = '', ...headerLines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of headerLines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body, text }
}

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

/** Opens a client that must succeed; closed in teardown. */
export async function openClient (t: Test, url: string, protocols: string | string[] = [], options: ClientOptions = {}): Promise<WebSocket> {
  const outcome = await tryConnect(url, protocols, options)
  if (outcome.kind !== 'open') throw new Error(`expected the connection to open, got ${JSON.stringify(outcome)}`)
  t.teardown(() => outcome.socket.terminate())
  return outcome.socket
}

/** An echo handler that counts its calls. */
export function countingEcho (): { handler: (socket: WebSocket) => void, calls: number } {
  const counter = {
    calls: 0,
    handler: (socket: WebSocket) => {
      counter.calls++
      socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    }
  }
  return counter
}

export async function nextMessage (socket: WebSocket): Promise<string> {
  const [data] = await once(socket, 'message')
  return String(data)
}

/** The lines the guard itself wrote: those with a `wsGuard` key. */
export function guardLines (logs: LogCapture): Array<Record<string, unknown> & { wsGuard: Record<string, unknown> }> {
  return logs.lines.filter((line): line is Record<string, unknown> & { wsGuard: Record<string, unknown> } =>
    typeof line.wsGuard === 'object' && line.wsGuard !== null)
}

/** The JSON body every guard refusal carries. */
export interface RefusalBody {
  statusCode: number
  code: string
  error: string
  message: string
}

/**
 * Asserts a guard refusal, from a raw exchange or a ws client outcome: the status, `Connection: close`,
 * a JSON body `{ statusCode, code, error, message }` with exactly those keys. Returns the body.
 */
export function assertRefusal (t: Test, response: RawResponse | Outcome | { kind: 'timeout' }, status: number, code: string): RefusalBody {
  if ('kind' in response && response.kind !== 'refused') {
    t.fail(`expected an HTTP refusal, got ${JSON.stringify(response.kind === 'open' ? { kind: 'open', protocol: response.protocol } : response)}`)
    if (response.kind === 'open') response.socket.terminate()
    return { statusCode: 0, code: '', error: '', message: '' }
  }
  const { status: actual, headers, body } = response as { status: number, headers: Record<string, unknown>, body: string }
  t.equal(actual, status, 'status')
  t.match(String(headers.connection), /\bclose\b/i, 'Connection: close')
  t.match(String(headers['content-type']), /^application\/json/, 'JSON body')
  let parsed: RefusalBody
  try {
    parsed = JSON.parse(body)
  } catch {
    t.fail(`body is not JSON: ${body}`)
    return { statusCode: 0, code: '', error: '', message: '' }
  }
  t.same(Object.keys(parsed).sort(), ['code', 'error', 'message', 'statusCode'], 'body keys')
  t.equal(parsed.statusCode, status, 'body.statusCode')
  t.equal(parsed.code, code, 'body.code')
  t.equal(typeof parsed.error, 'string', 'body.error')
  t.equal(typeof parsed.message, 'string', 'body.message')
  return parsed
}

/**
 * Sends raw bytes and reads until `complete(received)` is true, the server closes, or `ms`
 * passed; then destroys the socket. For exchanges the server does not end itself.
 */
export async function rawRead (port: number, request: string, complete: (received: Buffer) => boolean, ms = 1000): Promise<Buffer> {
  const socket = tcpConnect({ port, host: '127.0.0.1' })
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
export async function rawHead (port: number, request: string, ms = 1000): Promise<{ status: number, headers: Record<string, string>, rest: Buffer }> {
  const received = await rawRead(port, request, (bytes) => bytes.includes('\r\n\r\n'), ms)
  const end = received.indexOf('\r\n\r\n')
  if (end === -1) return { status: 0, headers: {}, rest: Buffer.alloc(0) }
  const [statusLine = '', ...headerLines] = received.subarray(0, end).toString('latin1').split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of headerLines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers, rest: received.subarray(end + 4) }
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

/** A promise with its resolve function, for async origin functions the test settles. */
export function deferred<T> (): { promise: Promise<T>, resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((_resolve) => { resolve = _resolve })
  return { promise, resolve }
}

/** How many TCP connections the app's server still holds (upgraded ones included). */
export async function openConnections (app: FastifyInstance): Promise<number> {
  return await new Promise((resolve, reject) => {
    app.server.getConnections((err, count) => err ? reject(err) : resolve(count))
  })
}

/** Waits for a socket's close event and returns its code and reason. */
export async function closeOf (socket: WebSocket): Promise<{ code: number, reason: string }> {
  if (socket.readyState === WebSocket.CLOSED) throw new Error('the socket is already closed')
  const [code, reason] = await once(socket, 'close') as [number, Buffer]
  return { code, reason: reason.toString() }
}

/**
 * `startApp` for tests that may leave a connection hanging (a bug they demonstrate): the
 * teardown gives `app.close()` at most `ms`, so one hanging test cannot stall the file.
 */
export async function startAppClosingWithin (t: Test, ms: number, setup: (app: FastifyInstance) => void | Promise<void>, options: FastifyServerOptions = {}): Promise<StartedApp> {
  const logs = new LogCapture()
  const app = Fastify({ logger: { level: 'info', stream: logs }, ...options })
  const sockets = new Set<ReturnType<typeof tcpConnect>>()
  t.teardown(async () => {
    let timer: NodeJS.Timeout | undefined
    const closed = await Promise.race([
      app.close().then(() => true),
      new Promise<false>((resolve) => { timer = setTimeout(resolve, ms, false) })
    ])
    clearTimeout(timer)
    if (!closed) {
      // Whatever held the server open: end it, so the process can go on to the next test.
      for (const socket of sockets) socket.destroy()
      t.fail(`app.close() did not finish within ${ms} ms: a connection was left open`)
    }
  })
  await setup(app)
  app.server.on('connection', (socket: ReturnType<typeof tcpConnect>) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return { app, port, logs, url: (path) => `ws://127.0.0.1:${port}${path}` }
}

/** An app with the guard registered with `options` and one counting echo route at /ws. */
export async function guardedApp (t: Test, options: WsGuardOptions = {}, serverOptions: FastifyServerOptions = {}): Promise<StartedApp & { echo: ReturnType<typeof countingEcho> }> {
  const echo = countingEcho()
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, options)
    app.wsRoute('/ws', echo.handler)
  }, serverOptions)
  return { ...started, echo }
}
