import { readdirSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import { SignJWT } from 'jose'
import wsGuard, { redactQueryTokens, requestSerializer } from '../../index.js'
import { fuzzCases, type FuzzCase } from './handshakes.js'

/*
 * A fuzz campaign: a guarded app with auth from three token sources, an Origin allowlist, a
 * close-mode route and a plain route, hit over real sockets by mutated handshakes; then the
 * figures that must stay zero.
 */

const secret = new TextEncoder().encode('fuzz-secret-0123456789-abcdefghijklmnopqrstuvwxyz')
const origin = 'https://app.example.com'

export interface FuzzApp {
  readonly app: FastifyInstance
  readonly port: number
  readonly token: string
  readonly logs: string[]
  handlerCalls: number
}

export async function startFuzzApp (): Promise<FuzzApp> {
  const logs: string[] = []
  const stream = new Writable({
    write (chunk, _encoding, callback) {
      logs.push(String(chunk))
      callback()
    }
  })
  const app = Fastify({
    logger: { level: 'info', stream, serializers: { req: requestSerializer }, hooks: { logMethod: redactQueryTokens() } },
    routerOptions: { maxParamLength: 50 }
  })
  await app.register(wsGuard, {
    origins: [origin],
    handshakeTimeout: 1000,
    heartbeat: false,
    protocols: ['chat.v1'],
    auth: { secret, tokenSources: ['header', 'protocol', 'query'], audience: 'fuzz' }
  })
  const target: FuzzApp = { app, port: 0, token: '', logs, handlerCalls: 0 }
  const handler = (socket: { on: (event: 'message', listener: (data: unknown) => void) => void, send: (data: string) => void }): void => {
    target.handlerCalls++
    socket.on('message', (data) => { socket.send(String(data)) })
  }
  app.wsRoute('/ws', handler)
  app.wsRoute('/ws/:id', handler)
  app.wsRoute('/close/:id', { config: { wsGuard: { rejectWith: 'close' } } }, handler)
  app.get('/plain', async () => 'plain')
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  return Object.assign(target, {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    token: await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('fuzz').setAudience('fuzz').setIssuedAt().setExpirationTime('1h').sign(secret)
  })
}

export interface CampaignResult {
  readonly requests: number
  /** Upgrades answered with 101 (accepted, or refused with a close frame). */
  readonly switched: number
  /** Status lines seen, by status. */
  readonly statuses: Readonly<Record<string, number>>
  readonly tokensInResponses: number
  readonly tokensInLogs: number
  readonly durationMs: number
}

export interface CampaignOptions {
  readonly seed: number
  readonly count: number
  /** Sockets in flight at once. */
  readonly concurrency: number
  /** How long a client waits for an answer before it hangs up itself. */
  readonly patience: number
}

/** Sends every case over its own socket, `concurrency` at a time; resolves when all are done. */
export async function runCampaign (target: FuzzApp, options: CampaignOptions): Promise<CampaignResult> {
  const started = Date.now()
  const cases = fuzzCases({ host: `127.0.0.1:${target.port}`, token: target.token, origin }, options.seed, options.count)
  const statuses: Record<string, number> = {}
  let switched = 0
  let tokensInResponses = 0
  const worker = async (): Promise<void> => {
    for (const fuzzCase of cases) {
      const answer = await send(target.port, fuzzCase, options.patience)
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1] ?? 'none'
      statuses[status] = (statuses[status] ?? 0) + 1
      switched += Number(status === '101')
      tokensInResponses += Number(answer.includes(target.token))
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, worker))
  return {
    requests: options.count,
    switched,
    statuses,
    tokensInResponses,
    tokensInLogs: target.logs.filter((line) => line.includes(target.token)).length,
    durationMs: Date.now() - started
  }
}

/** What the server answered one case with, until it closed or the client lost patience. */
async function send (port: number, fuzzCase: FuzzCase, patience: number): Promise<string> {
  const socket = connect(port, '127.0.0.1')
  let answer = ''
  socket.on('data', (chunk: Buffer) => {
    if (answer.length < 4096) answer += chunk.toString('latin1')
    // An upgraded client has what it came for: hang up, as a tab that closes would.
    if (answer.startsWith('HTTP/1.1 101')) socket.destroy()
  })
  socket.on('error', () => {})
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  await write(socket, fuzzCase)
  await Promise.race([closed, sleep(patience)])
  socket.destroy()
  await closed
  return answer
}

async function write (socket: Socket, fuzzCase: FuzzCase): Promise<void> {
  const { bytes } = fuzzCase
  if (fuzzCase.delivery === 'whole') {
    socket.write(bytes)
    return
  }
  const pieces = fuzzCase.delivery === 'split' ? 3 : 8
  const size = Math.ceil(bytes.length / pieces)
  for (let at = 0; at < bytes.length && !socket.destroyed; at += size) {
    socket.write(bytes.subarray(at, at + size))
    await sleep(fuzzCase.delivery === 'split' ? 1 : 20)
  }
}

/** Open file descriptors of this process (Linux). */
export function openDescriptors (): number {
  return readdirSync('/proc/self/fd').length
}

/** The server's open connections, once they have settled back to `baseline` or after `ms`. */
export async function connectionsSettle (app: FastifyInstance, baseline: number, ms: number): Promise<number> {
  const count = async (): Promise<number> => await new Promise((resolve, reject) => app.server.getConnections((err, n) => err === null ? resolve(n) : reject(err)))
  const deadline = Date.now() + ms
  let open = await count()
  while (open > baseline && Date.now() < deadline) {
    await sleep(50)
    open = await count()
  }
  return open
}
