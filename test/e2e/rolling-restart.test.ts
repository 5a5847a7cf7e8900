import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { test, type Test } from 'tap'
import WebSocket from 'ws'
import { connect, type ReconnectingSocket } from '../../client.js'
import type { WsGuardStats } from '../../index.js'
import { freePort } from '../helpers/raw.js'
import { mint, secret, secretBytes } from '../helpers/tokens.js'
import { waitFor } from '../helpers/wait.js'
import { nginxPath } from './nginx.js'
import { requireBinary } from './system.js'

/*
 * A rolling deploy as users run one: instances of the built package (dist/) as child
 * processes, behind nginx's round-robin upstream, with ~1,000 clients using connect() from
 * fastify-ws-guard/client. The instances are restarted one at a time (SIGTERM: the app calls
 * app.close(), the guard drains and the process exits; its replacement, started ahead, then
 * listens on the same port), and the clients must all come back, none giving up, without a
 * reconnection stampede. A second subtest restarts with `drainSpread: 0` and shows the stampede
 * the first one's bound rules out.
 */

const instanceScript = fileURLToPath(new URL('fixtures/restart-instance.mjs', import.meta.url))
const builtPackage = fileURLToPath(new URL('../../dist/index.js', import.meta.url))

const drainSpread = 2000
const shutdownGrace = 4000
/** The guard's shutdown hints are drawn from [0, max(1000, drainSpread)). */
const maxHint = Math.max(1000, drainSpread)
const wantedClients = 1000
const bucketMs = 100

/*
 * The peak bound, from the design. A restart closes the n clients of one instance at moments
 * spread evenly over drainSpread (n / drainSpread per ms, in the guard's 250 ms timer-wheel
 * ticks); each client then waits a random delay of its own (its hint in [0, maxHint), raised to
 * connect()'s minDelay of 500 ms, plus up to half again: 500 to 3000 ms here) and reconnects.
 * So one restart's reconnections come at the rate n / drainSpread x P(delay in the last
 * drainSpread ms): at most the rate of the closes, ~17 per 100 ms for n = 333. Restarts overlap
 * (a wave lasts drainSpread + 1.5 x maxHint = 5 s), but each SIGTERM comes after the previous
 * instance drained, at least drainSpread later: the delay windows of overlapping waves are then
 * disjoint, their probabilities add up to at most 1, and the total expected rate stays under
 * max(n) / drainSpread. n grows from one restart to the next: 333 for the first, more for the
 * later ones, which also hold clients that came back from the earlier restarts (round-robin
 * sends them anywhere), so the bound takes the busiest drain's n, as the instances report it.
 *
 * The bound is three times that rate, 3 x n x 100 / drainSpread: 50 for n = 333. It leaves room
 * for the bucket counts' noise (near Poisson: 17 + 3 x sqrt(17) = 29), the wheel's ticks, the
 * 1006 retries (a reconnect that reaches an instance still draining gets its 503: about one in
 * four here, retried within a second), and a draining instance that stalls on a busy machine and
 * closes a few ticks' worth at once. A simulation of the model with n = 333 (no 1006s, no stalls)
 * gave peaks of 23 (median) and 36 (max) over 2,000 runs.
 *
 * Without the spread (drainSpread 0), all n closes come at once with hints in [0, 1000): half
 * are raised to minDelay, so n / 2 clients come back within the same 250 ms, and the expected
 * peak is ~85 per 100 ms for n = 333 (simulated: 85 median, 68 min), well over its bound of 50.
 * The second subtest measures it, so the assertion is shown to be able to fail.
 *
 * The peak is asserted on the attempts as scheduled: each 1001 timed by the server that sent it
 * (the instances list them), plus the delay the client chose. The opens as this process sees
 * them are asserted too when this process kept time; on a loaded machine it stalls, and a stall
 * lumps every open it held up into one bucket (see checkPeaks).
 */
function peakBound (clientsPerDrain: number): number {
  return Math.ceil(3 * clientsPerDrain * bucketMs / drainSpread)
}

/*
 * How long after the last SIGTERM every client must be back: the last drain, the longest hinted
 * wait, and 2 s for the handshakes and the process exit. To that the test adds the longest
 * backoff a client was handed after a refused reconnect (a 1006: it reached an instance still
 * draining), since that client waits it out. Refusals end with the last drain, and connect()
 * backs off exponentially from the reconnects since its last stable connection (5 s open):
 * a client moved from A to B to C within seconds can be handed several seconds. Plus the time
 * this process itself stalled, when it could not run the clients' timers.
 */
const backWindow = drainSpread + 1.5 * maxHint + 2000

interface InstanceProcess {
  readonly name: string
  /** Its port once it listens. */
  port: number
  readonly child: ChildProcess
  /** The guard's counters the instance sent after `app.close()`, once it was stopped. */
  closed: WsGuardStats | undefined
  /** With them: `[sub, epoch ms, code, reason]` of each close the app sent. */
  sent: Array<[string, number, number | null, string]> | undefined
  /** With them: the instance's longest event-loop stall while draining, in ms. */
  stalled: number | undefined
  stderr: () => string
  /** Listens on `port` (0: any) and resolves once it does. */
  listen: (port: number) => Promise<void>
}

interface CloseSeen {
  code: number
  reason: string
  /** ms since the first SIGTERM (negative: before the restart). */
  at: number
  willRetry: boolean
  /** The wait before the reconnect, when there is one. */
  delay: number | undefined
}

interface ClientRecord {
  /** The `sub` of its tokens. */
  sub: string
  handle: ReconnectingSocket<WebSocket>
  /** ms since the first SIGTERM of each open. */
  opens: number[]
  closes: CloseSeen[]
  /** Attempts that opened no socket (`code` 0, `reason` the error). */
  failures: CloseSeen[]
  echoed: boolean
}

interface RestartResult {
  clients: ClientRecord[]
  /** ms since the first SIGTERM of each SIGTERM. */
  sigterms: number[]
  /** `Date.now()` at the first SIGTERM: the instances' clocks are this machine's. */
  originEpoch: number
  /** ms since the first SIGTERM at which the last client was open again. */
  allBackAt: number
  /** The proxy's access log: responses by status. */
  statuses: Record<string, number>
  /** The instances the restart stopped, with the counters each sent after its `app.close()`. */
  stopped: InstanceProcess[]
  /** The test process's event-loop stalls over 50 ms during the restart: start and length. */
  stalls: Array<{ at: number, ms: number }>
}

/** The soft limit on open files, as a child of this process gets it. */
function openFileLimit (): number {
  const value = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).stdout.trim()
  return value === 'unlimited' ? Infinity : Number(value)
}

/** tap's loader flags and coverage are for the test files, not for the plain-JS instances. */
function withoutNodeOptions (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _options, NODE_V8_COVERAGE: _coverage, ...rest } = env
  return rest
}

async function killHard (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGKILL')
  await exited
}

/** Rejects with `what` after `ms`, unless `promise` settles first. */
async function within<T> (promise: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(what())), ms) })])
  } finally {
    clearTimeout(timer)
  }
}

/** Resolves with the first message of `child` that `pick` maps to a value; rejects when it exits first or `ms` pass. */
async function message<T> (instance: InstanceProcess, pick: (message: Record<string, unknown>) => T | undefined, what: string, ms: number): Promise<T> {
  const { child } = instance
  let onMessage: ((message: Record<string, unknown>) => void) | undefined
  let onExit: (() => void) | undefined
  try {
    return await within(new Promise<T>((resolve, reject) => {
      onMessage = (message) => {
        const value = pick(message)
        if (value !== undefined) resolve(value)
      }
      onExit = () => reject(new Error(`instance ${instance.name} exited (${child.signalCode ?? child.exitCode}) before ${what}: ${instance.stderr()}`))
      child.on('message', onMessage)
      child.once('exit', onExit)
    }), ms, () => `instance ${instance.name}: not ${what} within ${ms} ms: ${instance.stderr()}`)
  } finally {
    child.off('message', onMessage!)
    child.off('exit', onExit!)
  }
}

/**
 * Starts an instance and waits until its app is ready, not yet listening: a deploy's new
 * version, started ahead, binds its port only once its predecessor has let go of it. SIGKILLed
 * in teardown.
 */
async function startInstance (t: Test, name: string, guard: Record<string, unknown>): Promise<InstanceProcess> {
  const child = spawn(process.execPath, [instanceScript], {
    env: { ...withoutNodeOptions(process.env), RESTART_SECRET: secret, RESTART_GUARD: JSON.stringify(guard) },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc']
  })
  // Registered before anything can fail: the child dies even when it never listened.
  t.teardown(async () => await killHard(child))
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const instance: InstanceProcess = {
    name,
    port: 0,
    child,
    closed: undefined,
    sent: undefined,
    stalled: undefined,
    stderr: () => stderr,
    listen: async (port) => {
      child.send({ listen: port })
      instance.port = await message(instance, (reply) => typeof reply.port === 'number' ? reply.port : undefined, `listening on port ${port}`, 10_000)
    }
  }
  child.on('message', (reply: { closed?: WsGuardStats, sent?: Array<[string, number, number | null, string]>, stalled?: number }) => {
    if (reply.closed !== undefined) Object.assign(instance, { closed: reply.closed, sent: reply.sent, stalled: reply.stalled })
  })
  // Long: on a loaded machine, a few processes loading Fastify at once take a while.
  await message(instance, (reply) => reply.ready === true ? true : undefined, 'ready', 60_000)
  return instance
}

/** SIGTERM, as a deploy sends it: resolves once the instance has drained and exited. */
async function stopInstance (instance: InstanceProcess): Promise<void> {
  const exited = once(instance.child, 'exit')
  instance.child.kill('SIGTERM')
  const [code] = await within(exited, shutdownGrace + 4000, () => `instance ${instance.name} did not exit within shutdownGrace + 4 s after SIGTERM: ${instance.stderr()}`)
  if (code !== 0) throw new Error(`instance ${instance.name} exited with ${String(code)} after SIGTERM: ${instance.stderr()}`)
}

/** Polls until something accepts on 127.0.0.1:`port`; `false` if `child` exits or `ms` pass first. */
async function accepting (child: ChildProcess, port: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false
    const open = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect({ host: '127.0.0.1', port })
      socket.once('connect', () => { socket.destroy(); resolve(true) })
      socket.once('error', () => resolve(false))
    })
    if (open) return true
    await sleep(20)
  }
  return false
}

/**
 * nginx in the foreground on loopback, proxying WebSockets round-robin to `upstreams`, sized
 * for `clients` (two descriptors each). test/e2e/nginx.ts has no upstream blocks and sizes
 * nginx for a handful of connections, hence this config of its own. `max_fails=0`: a refused
 * connect to a restarting instance moves on to the next instance without taking the port out
 * of rotation for 10 s (nginx's default), so its replacement takes its share at once. Access
 * log: one status per request (101, or 503 from a draining instance, 502 with no upstream).
 */
async function startProxy (t: Test, upstreams: number[], clients: number): Promise<{ url: string, statuses: () => Promise<Record<string, number>> }> {
  const prefix = await mkdtemp(join(tmpdir(), 'ws-guard-rolling-'))
  t.teardown(async () => await rm(prefix, { recursive: true, force: true }))
  const path = (name: string): string => join(prefix, name)
  const port = await freePort()
  await writeFile(path('nginx.conf'), `daemon off;
master_process off;
worker_processes 1;
pid ${path('nginx.pid')};
error_log ${path('error.log')} warn;
events { worker_connections ${2 * clients + 256}; }
http {
  log_format statuses '$status';
  access_log ${path('access.log')} statuses;
  client_body_temp_path ${path('client_body')};
  proxy_temp_path ${path('proxy')};
  fastcgi_temp_path ${path('fastcgi')};
  uwsgi_temp_path ${path('uwsgi')};
  scgi_temp_path ${path('scgi')};
  upstream instances {
    ${upstreams.map((upstream) => `server 127.0.0.1:${upstream} max_fails=0;`).join('\n    ')}
  }
  server {
    listen 127.0.0.1:${port} backlog=2048;
    location /ws {
      proxy_pass http://instances;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 300s;
    }
  }
}
`)
  const child = spawn(nginxPath, ['-p', prefix, '-c', path('nginx.conf'), '-e', path('error.log')], { stdio: ['ignore', 'ignore', 'pipe'] })
  t.teardown(async () => await killHard(child))
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  if (!await accepting(child, port, 5000)) {
    throw new Error(`nginx did not start on 127.0.0.1:${port}:\n${stderr}${await readFile(path('error.log'), 'utf8').catch(() => '')}`)
  }
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    statuses: async () => {
      const counts: Record<string, number> = {}
      for (const status of (await readFile(path('access.log'), 'utf8').catch(() => '')).split('\n')) {
        if (status !== '') counts[status] = (counts[status] ?? 0) + 1
      }
      return counts
    }
  }
}

/**
 * Instances behind nginx, `clientsPerInstance` clients each through it, then a rolling restart
 * of the first `restart` instances, one at a time: SIGTERM, the instance drains and exits, its
 * replacement (started ahead) listens on the same port, next. Resolves once every client closed
 * by a restart is open again, and has had an echo through nginx.
 */
async function rollingRestart (t: Test, options: { instances: number, clientsPerInstance: number, restart: number, drainSpread: number }): Promise<RestartResult> {
  const guard = { drainSpread: options.drainSpread, shutdownGrace }
  const names = Array.from({ length: options.instances }, (_, i) => String.fromCharCode(65 + i))
  let origin = performance.now()
  // The new version starts with the old one, and binds each port once it is free.
  const [instances, replacements] = await Promise.all([
    Promise.all(names.map(async (name) => await startInstance(t, name, guard))),
    Promise.all(names.slice(0, options.restart).map(async (name) => await startInstance(t, `${name}'`, guard)))
  ])
  await Promise.all(instances.map(async (instance) => await instance.listen(0)))
  t.comment(`${instances.length + replacements.length} instances started, ${instances.length} listening, in ${Math.round(performance.now() - origin)} ms`)
  const total = options.clientsPerInstance * options.instances
  const proxy = await startProxy(t, instances.map((instance) => instance.port), total)

  // ms since the first SIGTERM (before it: since the clients started connecting, rebased below).
  origin = performance.now()
  const elapsed = (): number => performance.now() - origin
  let recording = true
  const clients: ClientRecord[] = []
  t.teardown(() => {
    recording = false
    for (const client of clients) {
      const socket = client.handle.socket
      client.handle.close()
      socket?.terminate()
    }
  })
  // In batches, each open before the next: a thousand handshakes at once would only test the
  // listen backlogs.
  for (let first = 0; first < total; first += 250) {
    for (let i = first; i < Math.min(total, first + 250); i++) {
      const record: Omit<ClientRecord, 'handle'> = { sub: `client-${i}`, opens: [], closes: [], failures: [], echoed: false }
      const handle = connect(proxy.url, {
        WebSocket,
        // A fresh token for every connection, as a page would fetch one.
        token: async () => await mint(secretBytes, {}, { sub: record.sub }),
        onOpen: () => { if (recording) record.opens.push(elapsed()) },
        onMessage: (event) => { if (event.data === 'echo check') record.echoed = true },
        onClose: (report) => {
          if (recording) record.closes.push({ code: report.code, reason: report.reason, at: elapsed(), willRetry: report.willRetry, delay: report.willRetry ? report.delay : undefined })
        },
        onFailure: (report) => {
          if (recording) record.failures.push({ code: 0, reason: String(report.error), at: elapsed(), willRetry: report.willRetry, delay: report.willRetry ? report.delay : undefined })
        }
      })
      clients.push(Object.assign(record, { handle }))
    }
    await waitFor(() => clients.every((client) => client.handle.state === 'open'), `clients ${first} to ${clients.length - 1} to open through nginx`, 20_000)
  }
  t.comment(`${total} clients open through nginx, round-robin over ${options.instances} instances, in ${Math.round(elapsed())} ms`)

  const restartAt = performance.now()
  const originEpoch = Date.now()
  for (const client of clients) {
    client.opens = client.opens.map((at) => at - (restartAt - origin))
    for (const seen of [...client.closes, ...client.failures]) seen.at -= restartAt - origin
  }
  origin = restartAt
  // The test process's own stalls (a busy machine): what happens during one is seen after it, together.
  const stalls: Array<{ at: number, ms: number }> = []
  let lastTick = performance.now()
  const ticker = setInterval(() => {
    const now = performance.now()
    if (now - lastTick > 60) stalls.push({ at: lastTick - origin, ms: now - lastTick - 10 })
    lastTick = now
  }, 10)
  t.teardown(() => clearInterval(ticker))

  const sigterms: number[] = []
  const stopped: InstanceProcess[] = []
  for (let i = 0; i < options.restart; i++) {
    const old = instances[i]!
    sigterms.push(elapsed())
    await stopInstance(old)
    const exitedAt = elapsed()
    stopped.push(old)
    // The same port: the proxy's upstream stays as it is.
    await replacements[i]!.listen(old.port)
    instances[i] = replacements[i]!
    t.comment(`${old.name}: SIGTERM at ${Math.round(sigterms[i]!)} ms, drained and exited at ${Math.round(exitedAt)} ms, replacement listening at ${Math.round(elapsed())} ms`)
  }
  const lastSigterm = sigterms.at(-1)!
  // With every instance restarted, every client must have been closed; otherwise, those that were.
  const closedOnes = new Set(clients.filter((client) => options.restart === options.instances || client.closes.length > 0))
  await waitFor(
    () => clients.every((client) => client.handle.state === 'open' && (!closedOnes.has(client) || (client.closes.length > 0 && client.opens.at(-1)! > client.closes.at(-1)!.at))),
    'every client closed by a restart to be open again',
    // Generous: the assertions hold it to the stated window.
    Math.max(1, lastSigterm + backWindow + 20_000 - elapsed())
  )
  const allBackAt = Math.max(...clients.map((client) => client.opens.at(-1)!))
  clearInterval(ticker)

  // Each is open for real: an echo through nginx from the instance it landed on.
  for (const client of clients) client.handle.send('echo check')
  await waitFor(() => clients.every((client) => client.echoed), 'every client to get its echo', 10_000)
  return { clients, sigterms, originEpoch, allBackAt, statuses: await proxy.statuses(), stopped, stalls }
}

/** Counts per 100 ms bucket since the first SIGTERM. */
function histogram (times: number[]): number[] {
  const buckets: number[] = []
  for (const at of times) {
    const bucket = Math.max(0, Math.floor(at / bucketMs))
    while (buckets.length <= bucket) buckets.push(0)
    buckets[bucket]!++
  }
  return buckets
}

/** When the reconnections opened: each open after a client's first. */
function reconnections (clients: ClientRecord[]): number[] {
  return clients.flatMap((client) => client.opens.slice(1))
}

/**
 * When the reconnect attempts were due: each close or failed attempt plus the delay the client
 * chose, a 1001 timed by the server that sent it. What the design spreads, unblurred by how late
 * this process got to see the closes and to run the timers. `unmatched`: 1001s no server listed.
 */
function attempts (result: RestartResult): { times: number[], unmatched: number } {
  const sentAt = new Map<string, number>()
  for (const instance of result.stopped) {
    for (const [sub, at, code, reason] of instance.sent ?? []) {
      if (code === 1001) sentAt.set(`${sub} ${reason}`, at - result.originEpoch)
    }
  }
  let unmatched = 0
  const times = result.clients.flatMap((client) => [...client.closes, ...client.failures].flatMap((seen) => {
    if (seen.delay === undefined) return []
    let at = seen.at
    if (seen.code === 1001) {
      const sent = sentAt.get(`${client.sub} ${seen.reason}`)
      if (sent === undefined) unmatched++
      else at = sent
    }
    return [at + seen.delay]
  }))
  return { times, unmatched }
}

function sum (values: number[]): number {
  return values.reduce((total, value) => total + value, 0)
}

/** The stall time after `from`: time this process could not run the clients' timers and events. */
function stalledSince (stalls: RestartResult['stalls'], from: number): number {
  return sum(stalls.filter((stall) => stall.at + stall.ms > from).map((stall) => stall.ms))
}

function longestStall (stalls: RestartResult['stalls']): number {
  return Math.round(Math.max(0, ...stalls.map((stall) => stall.ms)))
}

/**
 * Peaks of the reconnections per 100 ms: of the opens as this process saw them, and of the
 * attempts as the clients scheduled them. The opens are asserted only when this process kept
 * time (no stall longer than a bucket): a stall lumps the opens it held up into one bucket,
 * which measures the machine's load, not the design. The schedule is asserted always.
 */
function checkPeaks (t: Test, result: RestartResult, expect: 'within' | 'over'): void {
  const drained = result.stopped.map((instance) => (instance.sent ?? []).filter(([, , code]) => code === 1001).length)
  const bound = peakBound(Math.max(...drained))
  t.comment(`1001s sent by each drain: ${result.stopped.map((instance, i) => `${instance.name} ${drained[i]!}`).join(', ')}: the bound is 3 x ${Math.max(...drained)} x 100 / ${drainSpread} = ${bound} per 100 ms`)
  const opened = histogram(reconnections(result.clients))
  const { times, unmatched } = attempts(result)
  const scheduled = histogram(times)
  const [openPeak, scheduledPeak] = [Math.max(...opened), Math.max(...scheduled)]
  const stall = longestStall(result.stalls)
  const instanceStall = Math.max(0, ...result.stopped.map((instance) => instance.stalled ?? 0))
  t.comment(`reconnections: ${sum(opened)} opened, peak ${openPeak} per 100 ms; ${sum(scheduled)} attempts scheduled, peak ${scheduledPeak} per 100 ms; bound ${bound}`)
  t.comment(`longest stall of the test process ${stall} ms, of a draining instance ${instanceStall} ms`)
  t.comment(`opened per 100 ms: ${opened.join(' ')}`)
  t.comment(`scheduled per 100 ms: ${scheduled.join(' ')}`)
  t.equal(unmatched, 0, 'the server that sent each 1001 listed it (the schedule is timed by the servers)')
  const check = (peak: number): boolean => expect === 'within' ? peak <= bound : peak > bound
  const words = expect === 'within' ? `at most ${bound}` : `over the bound of ${bound}: the bound can fail`
  t.ok(check(scheduledPeak), `reconnect attempts as scheduled peak at ${scheduledPeak} per 100 ms, ${words}`)
  if (stall <= bucketMs) {
    t.ok(check(openPeak), `reconnections as opened peak at ${openPeak} per 100 ms, ${words}`)
  } else {
    const note = `the opens' peak (${openPeak}) is not asserted: the test process stalled for up to ${stall} ms (a busy machine), longer than a bucket`
    console.error(`\n*** ${note}\n`)
    t.comment(`NOT ASSERTED: ${note}`)
  }
}

test('a rolling restart behind nginx: every client comes back, none gives up, no reconnection stampede', { timeout: 90_000 }, async (t) => {
  if (!requireBinary(t, nginxPath, 'nginx')) return
  if (!existsSync(builtPackage)) throw new Error('dist/index.js is missing: build first (npm run build), the instances run the built package')

  // Descriptors: nginx holds two per client (client and upstream side), this process one per
  // client, each instance one per connection it holds; nginx's is the one that binds.
  const limit = openFileLimit()
  let clientsPerInstance = Math.round(wantedClients / 3)
  if (2 * 3 * clientsPerInstance + 512 > limit) {
    clientsPerInstance = Math.max(10, Math.floor((limit - 512) / 6))
    const warning = `ulimit -n is ${limit}: too low for ${wantedClients} clients behind nginx; running with ${3 * clientsPerInstance} instead (raise the limit to ${2 * wantedClients + 512} for the full run)`
    console.error(`\n*** ${warning}\n`)
    t.comment(`REDUCED: ${warning}`)
  }

  await t.test(`three instances, ${3 * clientsPerInstance} clients, drainSpread ${drainSpread}: restarted one at a time`, async (t) => {
    const started = performance.now()
    const result = await rollingRestart(t, { instances: 3, clientsPerInstance, restart: 3, drainSpread })
    const { clients } = result
    const lastSigterm = result.sigterms.at(-1)!
    const stalled = Math.round(stalledSince(result.stalls, lastSigterm))

    t.ok(clients.every((client) => client.handle.state === 'open'), 'every client is open again')
    t.ok(clients.every((client) => client.closes.length > 0), 'every client was closed by a restart (each instance was restarted)')
    const closes = clients.flatMap((client) => client.closes)
    const refusedBackoff = Math.round(Math.max(0, ...closes.filter((close) => close.code === 1006).map((close) => close.delay ?? 0)))
    const window = backWindow + refusedBackoff + stalled
    t.ok(result.allBackAt - lastSigterm <= window, `all back within ${window} ms of the last SIGTERM: drainSpread + 1.5 x max hint + 2 s = ${backWindow}, + ${refusedBackoff} ms (the longest backoff after a 1006), + ${stalled} ms (this process stalled)`)
    const failures = clients.flatMap((client) => client.failures)
    t.same(closes.filter((close) => !close.willRetry), [], 'no client gave up on a close')
    t.same(failures.filter((failure) => !failure.willRetry), [], 'no client gave up on a failed attempt')

    const hinted = closes.filter((close) => close.code === 1001 && /^server shutting down; retry-after=\d+$/.test(close.reason))
    const abnormal = closes.filter((close) => close.code === 1006)
    t.same(closes.filter((close) => !hinted.includes(close) && !abnormal.includes(close)), [], 'every close was a 1001 with a retry-after hint, or a 1006 (a refused reconnect)')
    const hints = hinted.map((close) => Number(/retry-after=(\d+)/.exec(close.reason)![1]))
    t.ok(hints.every((hint) => hint >= 0 && hint < maxHint), `every hint is in [0, ${maxHint})`)
    t.ok(closes.every((close) => close.at >= 0), 'no close before the restart')

    t.ok(result.stopped.every((instance) => instance.closed !== undefined), 'every stopped instance reported its counters after app.close()')
    const shutdownRefusals = sum(result.stopped.map((instance) => instance.closed?.rejected.FST_WS_GUARD_SHUTTING_DOWN ?? 0))
    t.comment(`total ${Math.round(performance.now() - started)} ms (instances starting, clients connecting, restarts, return, echo); SIGTERMs at ${result.sigterms.map(Math.round).join(', ')} ms`)
    t.comment(`all back ${Math.round(result.allBackAt)} ms after the first SIGTERM, ${Math.round(result.allBackAt - lastSigterm)} ms after the last (window ${window} ms)`)
    t.comment(`closes: ${hinted.length} x 1001 with a hint (${Math.min(...hints)} to ${Math.max(...hints)} ms), ${abnormal.length} x 1006; failed attempts (onFailure): ${failures.length}`)
    t.comment(`nginx responses by status: ${JSON.stringify(result.statuses)}; handshakes refused by draining instances (503 FST_WS_GUARD_SHUTTING_DOWN): ${shutdownRefusals}`)
    checkPeaks(t, result, 'within')
  })

  await t.test(`the same ${clientsPerInstance} clients per restart with drainSpread 0: the stampede the bound rules out`, async (t) => {
    // Two instances, one restarted: its clients come back to the other and to its replacement.
    const result = await rollingRestart(t, { instances: 2, clientsPerInstance, restart: 1, drainSpread: 0 })
    const closes = result.clients.flatMap((client) => client.closes)
    t.comment(`all back ${Math.round(result.allBackAt)} ms after the SIGTERM; ${closes.filter((close) => close.code === 1006).length} x 1006`)
    t.ok(result.clients.every((client) => client.handle.state === 'open'), 'every client is open again')
    checkPeaks(t, result, 'over')
  })
})
