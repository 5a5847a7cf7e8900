import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { request } from 'node:http'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import WebSocket from 'ws'
import type { SessionView, WsGuardOptions, WsGuardStats } from '../../index.js'
import { tryConnectWithin, type Outcome } from '../helpers/clients.js'
import { bearer, secret } from '../helpers/tokens.js'

/*
 * A fleet of real processes: each instance is `node fixtures/fleet-instance.mjs`, the built
 * package (dist/) behind Fastify on 127.0.0.1 port 0, sharing one Redis. The test talks to
 * each one over WebSocket and over its JSON admin routes, and can kill -9 it. Every child is
 * SIGKILLed in teardown, whatever the test did; an orphan also exits when its IPC channel to
 * the test process closes.
 */

export const fleetInstanceScript = fileURLToPath(new URL('fixtures/fleet-instance.mjs', import.meta.url))

/** A bound for a start that hangs, not a budget: on a loaded machine a start takes seconds. */
const startTimeout = 60_000
/** Bound on one admin request. */
const adminTimeout = 5000

export interface FleetOptions {
  /** `redis://127.0.0.1:<port>` from `startRedis`. */
  redisUrl: string
  /** Key prefix of the RedisStore: one per test, so that nothing is shared between tests. */
  prefix: string
  /** The RedisStore's `leaseTtl` in ms. */
  leaseTtl: number
  /** Plugin options beside `auth` and `store` (JSON only): `maxConnectionsPerUser`, `rejectWith`... */
  guard?: WsGuardOptions
}

export interface FleetInstance {
  /** `A`, `B`, `C`... in the order asked for. */
  readonly name: string
  readonly port: number
  readonly pid: number
  /** `ws://127.0.0.1:<port><path>`. */
  url: (path?: string) => string
  /** `app.wsGuard.disconnect(filter, options)` through `POST /admin/disconnect`. */
  disconnect: (filter: Record<string, string>, options?: { code?: number, reason?: string }) => Promise<{ closed: number }>
  /**
   * `app.wsGuard.revoke(target, options)` through `POST /admin/revoke`; `before` and `after`
   * are the epoch seconds around the call: the revocation's `issuedBefore` lies between them.
   */
  revoke: (target: Record<string, string | number>, options?: { until?: number }) => Promise<{ closed: number, before: number, after: number }>
  /** `app.wsGuard.count({ sub })`: the user's connections fleet-wide. */
  count: (sub: string) => Promise<number>
  stats: () => Promise<WsGuardStats>
  /** This instance's sessions, of `sub` when given. */
  sessions: (sub?: string) => Promise<SessionView[]>
  /** `kill -9`; resolves once the process is gone. */
  kill: () => Promise<void>
  /** What the instance wrote to stderr (its warnings), for failure messages. */
  stderr: () => string
}

/** Starts `count` instances at once, named A, B, C...; all are SIGKILLed in teardown. */
export async function startFleet (t: Test, count: number, options: FleetOptions): Promise<FleetInstance[]> {
  const names = Array.from({ length: count }, (_, i) => String.fromCharCode(65 + i))
  return await Promise.all(names.map(async (name) => await startInstance(t, name, options)))
}

/** Starts one instance and waits until it listens; SIGKILLed in teardown. */
export async function startInstance (t: Test, name: string, options: FleetOptions): Promise<FleetInstance> {
  const child = spawn(process.execPath, [fleetInstanceScript], {
    env: {
      ...withoutNodeOptions(process.env),
      FLEET_SECRET: secret,
      FLEET_INSTANCE: JSON.stringify({ redisUrl: options.redisUrl, prefix: options.prefix, leaseTtl: options.leaseTtl, guard: options.guard ?? {} })
    },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc']
  })
  // Registered before anything can fail: the child dies even when it never became ready.
  t.teardown(async () => await killHard(child))
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const port = await readyPort(child, name, () => stderr)
  const admin = adminClient(port)
  return {
    name,
    port,
    pid: child.pid!,
    url: (path = '/ws') => `ws://127.0.0.1:${port}${path}`,
    disconnect: async (filter, closeOptions) => await admin('POST', '/admin/disconnect', { filter, options: closeOptions }) as { closed: number },
    revoke: async (target, revokeOptions) => await admin('POST', '/admin/revoke', { target, options: revokeOptions }) as { closed: number, before: number, after: number },
    count: async (sub) => (await admin('GET', `/admin/count?sub=${encodeURIComponent(sub)}`) as { count: number }).count,
    stats: async () => await admin('GET', '/admin/stats') as WsGuardStats,
    sessions: async (sub) => await admin('GET', sub === undefined ? '/admin/sessions' : `/admin/sessions?sub=${encodeURIComponent(sub)}`) as SessionView[],
    kill: async () => await killHard(child),
    stderr: () => stderr
  }
}

/** tap's loader flags are for the test files, not for the plain-JS instances. */
function withoutNodeOptions (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _ignored, ...rest } = env
  return rest
}

async function readyPort (child: ChildProcess, name: string, stderr: () => string): Promise<number> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('message', (message: { port?: unknown }) => {
        if (typeof message?.port === 'number') resolve(message.port)
        else reject(new Error(`instance ${name} sent ${JSON.stringify(message)} instead of its port`))
      })
      child.once('exit', (code, signal) => reject(new Error(`instance ${name} exited (${signal ?? code}) before listening (it runs dist/: npm run build first): ${stderr()}`)))
      timer = setTimeout(() => reject(new Error(`instance ${name} did not listen within ${startTimeout} ms: ${stderr()}`)), startTimeout)
    })
  } finally {
    clearTimeout(timer)
  }
}

async function killHard (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGKILL')
  await exited
}

/** JSON over a fresh loopback connection per request (no keep-alive pool to outlive a killed child). */
function adminClient (port: number): (method: string, path: string, body?: unknown) => Promise<unknown> {
  return async (method, path, body) => await new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const req = request({
      host: '127.0.0.1',
      port,
      method,
      path,
      agent: false,
      timeout: adminTimeout,
      headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
    }, (response) => {
      let text = ''
      response.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
      response.on('end', () => {
        if (response.statusCode !== 200) reject(new Error(`${method} ${path} on port ${port}: ${response.statusCode} ${text}`))
        else resolve(JSON.parse(text))
      })
    })
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} on port ${port}: no answer within ${adminTimeout} ms`)))
    req.on('error', reject)
    req.end(payload)
  })
}

/** The outcome of a handshake with a bearer token, or `{ kind: 'timeout' }` after `ms`. */
export async function connectAs (url: string, token: string, ms = 5000): Promise<Outcome | { kind: 'timeout' }> {
  return await tryConnectWithin(ms, url, [], bearer(token))
}

/** Opens a socket that must open, terminated in teardown. */
export async function openAs (t: Test, url: string, token: string, what: string): Promise<WebSocket> {
  const outcome = await connectAs(url, token)
  if (outcome.kind !== 'open') throw new Error(`${what}: expected the connection to open, got ${describeOutcome(outcome)}`)
  t.teardown(() => outcome.socket.terminate())
  return outcome.socket
}

/** An outcome in a line, without the socket. */
export function describeOutcome (outcome: Outcome | { kind: 'timeout' }): string {
  if (outcome.kind === 'open') return 'open'
  if (outcome.kind === 'error') return `error: ${outcome.error.message}`
  return JSON.stringify(outcome)
}

export interface CloseSeen {
  code: number
  reason: string
  /** `Date.now()` when the client saw the close. */
  at: number
}

/** The close `socket` sees, or `null` when it is still open after `ms`. */
export async function closeWithin (socket: WebSocket, ms: number): Promise<CloseSeen | null> {
  if (socket.readyState === WebSocket.CLOSED) throw new Error('the socket is already closed')
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      new Promise<CloseSeen>((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: String(reason), at: Date.now() }))),
      new Promise<null>((resolve) => { timer = setTimeout(resolve, ms, null) })
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** Sends `text` and waits for its echo, at most `ms`; `null` when none came. */
export async function echoWithin (socket: WebSocket, text: string, ms = 2000): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      new Promise<string>((resolve) => {
        socket.once('message', (data) => resolve(String(data)))
        socket.send(text)
      }),
      new Promise<null>((resolve) => { timer = setTimeout(resolve, ms, null) })
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** A prefix no other test uses: `fleet-<label>-<random>:`. */
export function testPrefix (label: string): string {
  return `fleet-${label}-${Math.random().toString(36).slice(2, 8)}:`
}
