import type { Socket } from 'node:net'
import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import type WebSocket from 'ws'
import type { Test } from 'tap'
import wsGuard, { type WsGuardAuthOptions, type WsGuardOptions, type WsRouteOptions } from '../../index.js'
import { LogCapture } from './logs.js'
import { keyPair } from './tokens.js'

export interface StartedApp {
  app: FastifyInstance
  port: number
  logs: LogCapture
  url: (path: string) => string
}

/** Registers plugins and routes on the app before it listens. */
export type Setup = (app: FastifyInstance) => void | Promise<void>

/** Builds an app, lets `setup` register plugins and routes, listens on 127.0.0.1:0, closes in teardown. */
export async function startApp (t: Test, setup: Setup, options: FastifyServerOptions = {}): Promise<StartedApp> {
  return await listen(t, setup, options, undefined)
}

/**
 * `startApp` for a test that may leave a connection hanging (a bug it demonstrates): the
 * teardown gives `app.close()` at most `ms`, then fails the test and ends whatever held the
 * server open, so one hanging test cannot stall the file.
 */
export async function startAppBounded (t: Test, ms: number, setup: Setup, options: FastifyServerOptions = {}): Promise<StartedApp> {
  return await listen(t, setup, options, ms)
}

async function listen (t: Test, setup: Setup, options: FastifyServerOptions, closeWithin: number | undefined): Promise<StartedApp> {
  const logs = new LogCapture()
  const app = Fastify({ logger: { level: 'info', stream: logs }, ...options })
  const sockets = new Set<Socket>()
  t.teardown(async () => {
    if (closeWithin === undefined) return await app.close()
    let timer: NodeJS.Timeout | undefined
    const closed = await Promise.race([
      app.close().then(() => true),
      new Promise<false>((resolve) => { timer = setTimeout(resolve, closeWithin, false) })
    ])
    clearTimeout(timer)
    if (closed) return
    t.fail(`app.close() did not finish within ${closeWithin} ms: a connection was left open`)
    // Whatever held the server open: end it, so the file goes on to the next test.
    app.server.close()
    for (const socket of sockets) socket.destroy()
  })
  await setup(app)
  if (closeWithin !== undefined) {
    app.server.on('connection', (socket: Socket) => {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
    })
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return { app, port, logs, url: (path) => `ws://127.0.0.1:${port}${path}` }
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

/**
 * A handler that answers every message with the request's `wsUser` and its subprotocol (a
 * handler that speaks on open could race the client's listener); see `askUser`.
 */
export function userEcho (onCall: () => void = () => {}) {
  return (socket: WebSocket, request: FastifyRequest): void => {
    onCall()
    socket.on('message', () => socket.send(JSON.stringify({ user: request.wsUser, protocol: socket.protocol })))
  }
}

export interface GuardedAppOptions {
  /** Options of the `/ws` route, `config.wsGuard` included. */
  route?: WsRouteOptions
  /** Fastify options (trustProxy, logger serializers, http.maxHeaderSize...). */
  server?: FastifyServerOptions
  /** More routes and plugins, registered after the guard. */
  setup?: Setup
  /** Gives `app.close()` at most this many ms in teardown, as `startAppBounded` does. */
  closeWithin?: number
}

/** An app with the guard registered with `options` and one counting echo route at /ws. */
export async function guardedApp (t: Test, options: WsGuardOptions = {}, more: GuardedAppOptions = {}): Promise<StartedApp & { echo: ReturnType<typeof countingEcho> }> {
  const echo = countingEcho()
  const started = await withGuard(t, options, more, echo.handler)
  return { ...started, echo }
}

export interface AuthApp extends StartedApp {
  /** How many times the route handler ran. */
  readonly calls: number
}

export interface AuthAppOptions extends Omit<GuardedAppOptions, 'closeWithin'> {
  /** Other plugin options (`auth` comes from the first argument). */
  plugin?: Omit<WsGuardOptions, 'auth'>
}

/** An app guarded with `auth` and one route `/ws` whose handler is a {@link userEcho}. */
export async function authApp (t: Test, auth: WsGuardAuthOptions | undefined, options: AuthAppOptions = {}): Promise<AuthApp> {
  let calls = 0
  const { plugin, ...more } = options
  const started = await withGuard(t, { ...plugin, ...(auth === undefined ? {} : { auth }) }, more, userEcho(() => { calls++ }))
  return Object.defineProperty(started as AuthApp, 'calls', { get: () => calls, enumerable: true })
}

/**
 * An {@link authApp} that verifies ES256 tokens signed with `keyPair('ES256')`, through a key
 * resolver that counts how often jose asked for the key: once per signature check.
 */
export async function spiedApp (t: Test, auth: Partial<WsGuardAuthOptions> = {}, options: AuthAppOptions = {}): Promise<AuthApp & { keyLookups: () => number }> {
  const pair = await keyPair('ES256')
  let lookups = 0
  const app = await authApp(t, { getKey: () => { lookups++; return pair.publicKey }, ...auth }, options)
  return Object.assign(app, { keyLookups: () => lookups })
}

async function withGuard (t: Test, options: WsGuardOptions, more: GuardedAppOptions, handler: (socket: WebSocket, request: FastifyRequest) => void): Promise<StartedApp> {
  return await listen(t, async (app) => {
    await app.register(wsGuard, options)
    app.wsRoute('/ws', more.route ?? {}, handler)
    await more.setup?.(app)
  }, more.server ?? {}, more.closeWithin)
}

/**
 * Registers the guard with `options` on an app that never listens, lets `declare` add routes,
 * and returns the error `ready()` fails with; `undefined` when the app starts.
 */
export async function registrationError (t: Test, options: unknown, declare: Setup = () => {}): Promise<(Error & { code?: string }) | undefined> {
  const app = Fastify()
  t.teardown(() => app.close())
  try {
    await app.register(wsGuard, options as WsGuardOptions)
    await declare(app)
    await app.ready()
  } catch (err) {
    return err as Error & { code?: string }
  }
  return undefined
}

/** How many TCP connections the app's server still holds (upgraded ones included). */
export async function openConnections (app: FastifyInstance): Promise<number> {
  return await new Promise((resolve, reject) => {
    app.server.getConnections((err, count) => err ? reject(err) : resolve(count))
  })
}
