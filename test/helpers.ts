import { once } from 'node:events'
import { connect as tcpConnect } from 'node:net'
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import WebSocket, { type ClientOptions } from 'ws'
import type { Test } from 'tap'

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
