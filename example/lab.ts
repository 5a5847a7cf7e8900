import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { SignJWT } from 'jose'
import type { WebSocket } from 'ws'
import type { LogLine, LogRing } from './log-ring.js'
import { clientScript, foreignPage } from './page.js'
import { replayHandshake, silentClient } from './raw-client.js'

/** The lab routes' application protocol: JSON events from the server, fresh tokens (text) from the client. */
export const labProtocol = 'lab.v1'

/** The kinds of token a scenario sends; `none` sends none. */
export type TokenKind = 'valid' | 'expired' | 'badSignature' | 'wrongAudience' | 'short' | 'none'

/** One card of the lab. */
export interface Scenario {
  id: string
  title: string
  /** What the scenario does, one or two sentences. */
  blurb: string
  /** Which pair of lab routes: `/lab/close/<variant>` and its twin `/lab/http/<variant>`. */
  variant: 'handshake' | 'silent' | 'refresh'
  token: TokenKind
  /** The subprotocols offered: `bearerProtocols(token, 'lab.v1')`, `lab.v1` alone, or `bearer.<token>` alone. */
  offer: 'bearerProtocols' | 'appOnly' | 'tokenOnly'
  /** Who connects: the lab page, a page on the demo's second port, or the demo server itself. */
  client: 'page' | 'foreign' | 'server'
}

export const scenarios: readonly Scenario[] = [
  { id: 'valid', title: 'Valid token', blurb: 'bearerProtocols(token, \'lab.v1\'): the guard verifies the token before the upgrade and selects lab.v1, never the token.', variant: 'handshake', token: 'valid', offer: 'bearerProtocols', client: 'page' },
  { id: 'expired', title: 'Expired token', blurb: 'Signed by the demo, but its exp passed two minutes ago: far beyond the 5 s clock tolerance.', variant: 'handshake', token: 'expired', offer: 'bearerProtocols', client: 'page' },
  { id: 'bad-signature', title: 'Bad signature', blurb: 'The right claims, signed with a key the server does not know.', variant: 'handshake', token: 'badSignature', offer: 'bearerProtocols', client: 'page' },
  { id: 'wrong-audience', title: 'Wrong audience', blurb: 'aud is "billing"; the lab routes accept "lab" only.', variant: 'handshake', token: 'wrongAudience', offer: 'bearerProtocols', client: 'page' },
  { id: 'no-token', title: 'No token', blurb: 'Only lab.v1 is offered: there is nothing to verify.', variant: 'handshake', token: 'none', offer: 'appOnly', client: 'page' },
  { id: 'foreign-origin', title: 'Foreign Origin', blurb: 'A page the demo serves on its second port (PORT+1) connects with a valid token: another origin, refused by the same-origin default (cross-site WebSocket hijacking).', variant: 'handshake', token: 'valid', offer: 'bearerProtocols', client: 'foreign' },
  { id: 'bearer-only', title: 'Only bearer.<token>', blurb: 'No app protocol offered. A 101 must name an offered subprotocol and the guard never echoes the token, so even this close route answers over HTTP: the page gets 1006, the twin and the log say why.', variant: 'handshake', token: 'valid', offer: 'tokenOnly', client: 'page' },
  { id: 'silent', title: 'Silent client', blurb: 'Browsers answer pings by themselves, so this client is a raw TCP socket in the demo server: it completes the handshake, then never sends a byte. Route heartbeat: ping every 300 ms, read deadline 1 s.', variant: 'silent', token: 'valid', offer: 'bearerProtocols', client: 'server' },
  { id: 'refresh', title: 'Refresh before expiry', blurb: 'A token that expires in about 2 s. The page sends a fresh one over lab.v1 and the route calls request.wsRefresh(); a second socket with the same token and no refresh shows what that avoided.', variant: 'refresh', token: 'short', offer: 'bearerProtocols', client: 'page' }
]

/** Per variant, the guard settings of both twins (they differ only in `rejectWith`). */
const variants = {
  handshake: { auth: { audience: 'lab' } },
  silent: { auth: { audience: 'lab' }, heartbeat: { pingInterval: 300, readDeadline: 1000 } },
  // No clock tolerance: the short token's expiry shows within the scenario.
  refresh: { auth: { audience: 'lab', clockTolerance: 0 } }
} as const

/** One click of a scenario, kept a few minutes for its replay and its log lines. */
interface Run {
  id: string
  scenario: Scenario
  /** The first handshake of the run as it reached the server: replayed against the http twin. */
  handshake?: Record<string, string>
}

const runLifetime = 5 * 60_000

let requests = 0

/**
 * Fastify's `genReqId` for the demo. Lab connections name their run and role in the query
 * (`?run=<id>&as=page`), never anything secret: their log lines are found by `<run>.<role>`.
 */
export function labRequestId (raw: { url?: string }): string {
  const match = /[?&]run=([0-9a-f]{8})&as=([a-z]{1,12})$/.exec(raw.url!)
  return match === null ? `req-${(++requests).toString(36)}` : `${match[1]}.${match[2]}`
}

/**
 * The handshake lab: twin WebSocket routes per variant (`rejectWith: 'close'` under
 * `/lab/close/`, `'http'` under `/lab/http/`), the endpoints the lab page drives, and a second
 * Fastify instance serving the foreign-origin page. Returns that instance, to listen on the
 * demo's second port; it closes with `app`.
 */
export async function registerLab (app: FastifyInstance, options: { secret: Uint8Array, logs: LogRing }): Promise<FastifyInstance> {
  const mint = labTokens(options.secret)
  const runs = new Map<string, Run>()
  const foreign = foreignServer(app, mint)
  app.addHook('onClose', async () => await foreign.close())

  await app.register(async (lab) => {
    // Before the guard's own hook (instance hooks run before route hooks): the browser's
    // handshake as it arrived, token and all, kept in memory only, for the http twin.
    lab.addHook('onRequest', async (request) => {
      const run = runs.get(String((request.query as { run?: string }).run))
      if (run !== undefined && request.headers.upgrade !== undefined) run.handshake ??= pick(request.headers, ['host', 'origin', 'sec-websocket-protocol'])
    })

    for (const [variant, settings] of Object.entries(variants)) {
      for (const rejectWith of ['close', 'http'] as const) {
        lab.wsRoute(`/lab/${rejectWith}/${variant}`, { config: { wsGuard: { ...settings, protocols: [labProtocol], rejectWith } } }, labConnection)
      }
    }

    lab.post<{ Body: { scenario: string } }>('/lab/runs', {
      schema: { body: { type: 'object', required: ['scenario'], properties: { scenario: { enum: scenarios.map((scenario) => scenario.id) } } } }
    }, async (request, reply) => {
      const scenario = scenarios.find((candidate) => candidate.id === request.body.scenario)!
      const id = randomBytes(4).toString('hex')
      runs.set(id, { id, scenario })
      setTimeout(runs.delete.bind(runs, id), runLifetime).unref()
      // Development only, like /dev-token: the page needs the token to offer it.
      return await reply.code(201).send({ id, token: await mint(scenario.token) })
    })

    const withRun = (handler: (run: Run, request: FastifyRequest, reply: FastifyReply) => Promise<unknown>) =>
      async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
        const run = runs.get((request.params as { id: string }).id)
        return run === undefined ? await reply.code(404).send({ message: 'unknown or expired run' }) : await handler(run, request, reply)
      }

    // A fresh token for the refresh scenario, delivered over lab.v1 by the page.
    lab.post('/lab/runs/:id/token', withRun(async () => ({ token: await mint('valid') })))

    // The same handshake, against the twin that answers refusals over HTTP.
    lab.post('/lab/runs/:id/replay', withRun(async (run, _request, reply) => {
      if (run.handshake === undefined) return await reply.code(409).send({ message: 'no handshake of this run has reached the server' })
      return await replayHandshake({ ...ownAddress(app), path: `/lab/http/${run.scenario.variant}?run=${run.id}&as=twin`, headers: run.handshake })
    }))

    // Browsers answer every ping themselves: page JavaScript cannot make a silent client. The
    // demo server plays one over raw TCP instead (see silentClient) and reports what it saw.
    lab.post('/lab/runs/:id/silent', withRun(async (run, request) => await silentClient({
      ...ownAddress(app),
      path: `/lab/close/silent?run=${run.id}&as=silent`,
      headers: { host: request.host, authorization: `Bearer ${await mint('valid')}`, 'sec-websocket-protocol': labProtocol }
    })))

    lab.get('/lab/runs/:id/logs', withRun(async (run) => ({ lines: options.logs.linesOf(`${run.id}.`).map(shown) })))

    lab.get('/lab/stats', async () => app.wsGuard.stats())

    // The page on the second port, for the foreign-origin scenario (query passed on).
    lab.get('/lab/foreign', async (request, reply) => {
      const query = request.url.slice('/lab/foreign'.length)
      return await reply.redirect(`http://${request.hostname}:${(foreign.server.address() as AddressInfo).port}/${query}`)
    })
  })
  return foreign
}

/**
 * Every lab connection: a welcome with the token's subject and expiry, then lab.v1's one
 * client message, a fresh token, handed to `request.wsRefresh()`.
 */
function labConnection (socket: WebSocket, request: FastifyRequest): void {
  const user = request.wsUser!
  socket.send(JSON.stringify({ type: 'welcome', sub: user.sub, exp: user.exp }))
  socket.on('message', async (data) => {
    try {
      await request.wsRefresh(String(data))
    } catch {
      // The guard refused the token, closed the connection (4401 or 4403) and counted it.
      return
    }
    const { exp } = request.wsUser!
    request.log.info({ wsDemo: { event: 'refreshed', exp } }, 'websocket token refreshed')
    socket.send(JSON.stringify({ type: 'refreshed', exp }))
  })
}

/** Mints the lab's tokens: subject `lab-user`, audience `lab` unless the kind says otherwise. */
function labTokens (secret: Uint8Array): (kind: TokenKind) => Promise<string | null> {
  const stranger = randomBytes(32)
  const shapes = {
    valid: { audience: 'lab', issued: 0, expires: 900, key: secret },
    expired: { audience: 'lab', issued: -180, expires: -120, key: secret },
    badSignature: { audience: 'lab', issued: 0, expires: 900, key: stranger },
    wrongAudience: { audience: 'billing', issued: 0, expires: 900, key: secret },
    short: { audience: 'lab', issued: 0, expires: 2, key: secret }
  }
  return async (kind) => {
    if (kind === 'none') return null
    const { audience, issued, expires, key } = shapes[kind]
    const now = Math.floor(Date.now() / 1000)
    return await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('lab-user')
      .setAudience(audience)
      .setIssuedAt(now + issued)
      .setExpirationTime(now + expires)
      .sign(key)
  }
}

/** The second origin: a page that tries the lab route with a valid token, and its helpers. */
function foreignServer (main: FastifyInstance, mint: (kind: TokenKind) => Promise<string | null>): FastifyInstance {
  const foreign = Fastify()
  foreign.get('/', async (request, reply) => {
    const mainOrigin = `http://${request.hostname}:${ownAddress(main).port}`
    return await reply.type('text/html; charset=utf-8').send(foreignPage(mainOrigin))
  })
  foreign.get('/token', async () => ({ token: await mint('valid') }))
  foreign.get('/client.js', async (_request, reply) => await reply.type('text/javascript; charset=utf-8').send(clientScript))
  foreign.get('/favicon.ico', async (_request, reply) => await reply.code(204).send())
  return foreign
}

function ownAddress (app: FastifyInstance): { address: string, port: number } {
  const { address, port } = app.server.address() as AddressInfo
  return { address, port }
}

function pick (headers: FastifyRequest['headers'], names: readonly string[]): Record<string, string> {
  return Object.fromEntries(names.filter((name) => headers[name] !== undefined).map((name) => [name, String(headers[name])]))
}

/** What the page shows of a log line: no pid, no hostname. */
function shown (line: LogLine): Record<string, unknown> {
  return { level: line.level, time: line.time, reqId: line.reqId, msg: line.msg, wsGuard: line.wsGuard, wsDemo: line.wsDemo }
}
