import { randomBytes } from 'node:crypto'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { EventEmitter } from 'node:events'
import type { AddressInfo } from 'node:net'
import Fastify, { LogController, type FastifyInstance } from 'fastify'
import { SignJWT } from 'jose'
import type { WebSocket } from 'ws'
import wsGuard, { channels, requestSerializer } from '../index.js'
import { labRequestId, registerLab, scenarios } from './lab.js'
import { LogRing, type LogOutput } from './log-ring.js'
import { clientScript, demoPage } from './page.js'

/** A chat room behind the guard, with the handshake lab beside it. */
export interface Demo {
  app: FastifyInstance
  /** The foreign-origin page of the lab, to listen on a second port; it closes with `app`. */
  foreign: FastifyInstance
  /** Mints a development token for `name`, valid 15 minutes. */
  mint: (name: string) => Promise<string>
  /** The last log lines, parsed: what the lab shows per scenario. */
  logs: LogRing
}

export interface DemoOptions {
  logLevel: string
  /** Where log lines go besides the lab's ring. Default: stdout. */
  logOutput?: LogOutput
}

export async function buildDemo (options: DemoOptions): Promise<Demo> {
  // A development key minted at start: nothing to configure, nothing to leak.
  const secret = randomBytes(32)
  const mint = async (name: string): Promise<string> => await new SignJWT({ name })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(name)
    .setIssuedAt()
    .setExpirationTime('15m')
    .sign(secret)

  const logs = new LogRing(options.logOutput ?? process.stdout)
  const app = Fastify({
    logger: { level: options.logLevel, stream: logs, serializers: { req: requestSerializer } },
    genReqId: labRequestId,
    logController: new LogController({
      // Handshakes are logged by the guard (refusals) and by logConnections (accepted, closed);
      // the lab page polls and reports its own errors. Everything else gets Fastify's lines.
      disableRequestLogging: (request) => request.headers.upgrade !== undefined || request.url.startsWith('/lab/')
    })
  })
  // Before the guard's own preClose, which waits for the connections it closes.
  app.addHook('preClose', async () => {
    if (app.server.listening) app.log.info('closing: every open WebSocket gets 1001 server shutting down')
  })
  await app.register(wsGuard, {
    auth: { secret },
    protocols: ['chat.v1']
  })
  logConnections(app)

  const room = new Set<WebSocket>()
  app.wsRoute('/chat', (socket, request) => {
    const name = String(request.wsUser?.sub)
    room.add(socket)
    socket.on('close', () => room.delete(socket))
    socket.on('message', (data) => {
      const line = JSON.stringify({ from: name, text: String(data).slice(0, 500) })
      for (const peer of room) peer.send(line)
    })
    socket.send(JSON.stringify({ from: 'server', text: `welcome, ${name}` }))
  })

  // Development only: hands out tokens to anyone. A real app gets them from its login.
  app.get<{ Querystring: { name?: string } }>('/dev-token', async (request) => {
    const { name = 'guest' } = request.query
    return { token: await mint(/^[a-z0-9-]{1,20}$/i.test(name) ? name : 'guest') }
  })

  const foreign = await registerLab(app, { secret, logs })

  // The page imports the same helper the package exports as fastify-ws-guard/client.
  const page = demoPage(scenarios)
  app.get('/client.js', async (_request, reply) => reply.type('text/javascript; charset=utf-8').send(clientScript))
  app.get('/favicon.ico', async (_request, reply) => reply.code(204).send())
  app.get('/', async (_request, reply) => reply.type('text/html; charset=utf-8').send(page))
  return { app, foreign, mint, logs }
}

/**
 * One line per accepted and per closed connection, from the guard's diagnostics channels
 * (refusals are logged by the guard itself). The channels are process-wide: one demo per process.
 */
function logConnections (app: FastifyInstance): void {
  const onAccepted = (message: unknown): void => {
    const { requestId, route, protocol, sub, handshakeMs } = message as { requestId: string, route: string, protocol: string | false, sub?: string, handshakeMs: number }
    app.log.info({ reqId: requestId, wsDemo: { event: 'accepted', route, protocol, sub, handshakeMs: Math.round(handshakeMs * 10) / 10 } }, 'websocket accepted')
  }
  const onClosed = (message: unknown): void => {
    const { requestId, route, reason, code, durationMs } = message as { requestId: string, route: string, reason: string, code: number, durationMs: number }
    app.log.info({ reqId: requestId, wsDemo: { event: 'closed', route, reason, code, durationMs: Math.round(durationMs) } }, `websocket closed: ${reason} (${code})`)
  }
  subscribe(channels.accepted, onAccepted)
  subscribe(channels.closed, onClosed)
  app.addHook('onClose', async () => {
    unsubscribe(channels.accepted, onAccepted)
    unsubscribe(channels.closed, onClosed)
  })
}

export interface StartOptions extends DemoOptions {
  host: string
  port: number
  /** The foreign-origin page's port: `npm run demo` uses PORT+1. */
  foreignPort: number
}

export interface StartedDemo extends Demo {
  url: string
  foreignUrl: string
}

/**
 * Builds the demo and listens on both ports. A port that cannot be had rejects with one
 * sentence that says which and what to do, and nothing is left listening.
 */
export async function startDemo (options: StartOptions): Promise<StartedDemo> {
  const demo = await buildDemo(options)
  try {
    // The foreign page first: it logs nothing, so a port in use leaves one line, the error's.
    await listen(demo.foreign, options.host, options.foreignPort)
    await listen(demo.app, options.host, options.port)
  } catch (err) {
    await demo.app.close()
    throw err
  }
  const url = (app: FastifyInstance): string => `http://${options.host}:${(app.server.address() as AddressInfo).port}/`
  return { ...demo, url: url(demo.app), foreignUrl: url(demo.foreign) }
}

async function listen (app: FastifyInstance, host: string, port: number): Promise<void> {
  try {
    await app.listen({ host, port })
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException
    throw new Error(`cannot listen on ${host}:${port}: ${code === 'EADDRINUSE' ? 'the port is in use; set PORT to another one (the demo uses PORT and PORT+1)' : message}`)
  }
}

/**
 * Waits for SIGINT or SIGTERM on `target` (the process), then runs `close` (`app.close()`:
 * open WebSockets get 1001 `server shutting down`) and resolves with the signal. The
 * listeners are gone by then: a second Ctrl-C ends the process at once.
 */
export async function closeOnSignals (target: EventEmitter, close: () => Promise<unknown>): Promise<string> {
  let received!: (signal: string) => void
  const signalled = new Promise<string>((resolve) => { received = resolve })
  target.once('SIGINT', received)
  target.once('SIGTERM', received)
  const signal = await signalled
  target.off('SIGINT', received)
  target.off('SIGTERM', received)
  await close()
  return signal
}
