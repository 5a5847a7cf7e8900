import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import WebSocket from 'ws'
import { connect, type CloseReport, type ConnectOptions, type FailureReport, type ReconnectingSocket } from '../../client.js'
import wsGuard, { type WsGuardOptions } from '../../index.js'
import { startApp, type StartedApp } from '../helpers/app.js'
import { mint, secretBytes } from '../helpers/tokens.js'

/** An upgrade request as the app saw it, before the guard. */
export interface Handshake {
  at: number
  url: string
  /** The token of a `bearer.<token>` subprotocol, if one was offered. */
  token: string | undefined
}

export interface RecordingApp extends StartedApp {
  handshakes: Handshake[]
}

/** An app with the guard registered with `plugin`, recording every upgrade request; `routes` adds the routes. */
export async function recordingApp (t: Test, plugin: WsGuardOptions, routes: (app: FastifyInstance) => void): Promise<RecordingApp> {
  const handshakes: Handshake[] = []
  const started = await startApp(t, async (app) => {
    app.addHook('onRequest', (request, _reply, done) => {
      if (request.headers.upgrade !== undefined) {
        const offered = String(request.headers['sec-websocket-protocol'] ?? '').split(',').map((item) => item.trim())
        const token = offered.find((item) => item.startsWith('bearer.'))?.slice('bearer.'.length)
        handshakes.push({ at: Date.now(), url: request.url, token })
      }
      done()
    })
    await app.register(wsGuard, plugin)
    routes(app)
  })
  return { ...started, handshakes }
}

export type ClientEvent =
  | { type: 'open', at: number }
  | { type: 'message', at: number, data: string }
  | { type: 'close', at: number, report: CloseReport }
  | { type: 'failure', at: number, report: FailureReport }

export interface TrackedClient {
  handle: ReconnectingSocket<WebSocket>
  events: ClientEvent[]
  /** `Date.now()` of each `token()` call. */
  tokenCalls: number[]
  closes: () => CloseReport[]
  failures: () => FailureReport[]
  /** `Date.now()` of each event of `type`. */
  times: (type: ClientEvent['type']) => number[]
}

export type TrackOptions = Omit<ConnectOptions<WebSocket>, 'onOpen' | 'onMessage' | 'onClose' | 'onFailure'>

/**
 * `connect()` with `WebSocket` from ws (Node 20 has no global one), every callback recorded
 * and every `token()` call timed; closed in teardown so no reconnect outlives the test.
 */
export function track (t: Test, url: string, options: TrackOptions = {}): TrackedClient {
  const events: ClientEvent[] = []
  const tokenCalls: number[] = []
  const { token } = options
  const handle = connect(url, {
    WebSocket,
    ...options,
    ...(token === undefined
      ? {}
      : {
          token: () => {
            tokenCalls.push(Date.now())
            return token()
          }
        }),
    onOpen: () => events.push({ type: 'open', at: Date.now() }),
    onMessage: (event) => events.push({ type: 'message', at: Date.now(), data: String(event.data) }),
    onClose: (report) => events.push({ type: 'close', at: Date.now(), report }),
    onFailure: (report) => events.push({ type: 'failure', at: Date.now(), report })
  })
  t.teardown(() => handle.close())
  return {
    handle,
    events,
    tokenCalls,
    closes: () => events.flatMap((event) => event.type === 'close' ? [event.report] : []),
    failures: () => events.flatMap((event) => event.type === 'failure' ? [event.report] : []),
    times: (type) => events.filter((event) => event.type === type).map((event) => event.at)
  }
}

/** A token source handing out a numbered token per call (claim `n`), expired when `expired(n)` says so. */
export function numberedTokens (expired: (n: number) => boolean = () => false): { token: () => Promise<string>, minted: string[] } {
  const minted: string[] = []
  return {
    minted,
    token: async () => {
      const n = minted.length + 1
      // Expired a minute ago: well past the guard's default 5 s clock tolerance.
      const token = await mint(secretBytes, { sub: 'alice', n }, { exp: expired(n) ? Math.floor(Date.now() / 1000) - 60 : '10m' })
      minted.push(token)
      return token
    }
  }
}
