/*
 * The fleet suite, on a redis-server of its own:
 * 1. Handshakes of an authenticated route with a per-user limit, its leases counted in the
 *    default MemoryStore or in the RedisStore, beside bare, interleaved as in the handshake
 *    suite; the Redis process's CPU time is read from /proc over every batch.
 * 2. A revocation fanned out: three guard instances share the Redis store, idle clients of one
 *    user spread over them, `revoke({ sub })` is called on the first instance, and every client
 *    notes when its 4401 close frame arrives.
 */
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FleetFixtures, FleetServerKey } from './cases.js'
import { ServerProcess, type Placement } from './children.js'
import { runHandshakeSuite, type CaseResult, type HandshakeSettings, type Log } from './handshakes.js'
import { IdlePool } from './load.js'
import type { RevokeReply, SampleReply } from './protocol.js'
import { startRedis, type BenchRedis } from './redis-server.js'
import { int, quantile, sorted, spread, type Spread } from './stats.js'

export interface FleetSettings {
  readonly handshakes: HandshakeSettings
  /** Idle clients of the fan-out, all instances together. */
  readonly fanoutClients: number
  readonly fanoutRounds: number
  readonly fanoutInstances: number
}

export interface FanoutRound {
  readonly round: number
  readonly sub: string
  /** Connections open when revoke() was called. */
  readonly open: number
  readonly openErrors: number
  readonly openMs: number
  /** 4401 close frames received, and close frames with any other code. */
  readonly closes: number
  readonly otherCloses: number
  /** What revoke() closed on the instance it was called on, and when it resolved (ms after the call). */
  readonly closedByCaller: number
  readonly resolvedMs: number
  /** From the revoke() call to each client's 4401 close frame, ms. */
  readonly p50Ms: number
  readonly p99Ms: number
  readonly lastMs: number
}

export interface FanoutResult {
  readonly instances: number
  readonly clients: number
  readonly rounds: FanoutRound[]
  readonly p50Ms: Spread
  readonly p99Ms: Spread
  readonly lastMs: Spread
}

export interface FleetResult {
  /** How the Redis CPU time was read. */
  readonly redisCpuSource: BenchRedis['cpuSource']
  readonly handshakes: CaseResult[]
  readonly fanout: FanoutResult | undefined
}

/** The soft limit on open files of this process, from /proc (undefined off Linux). */
function openFileLimit (): number | undefined {
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'latin1'))?.[1]
    return line === undefined || line === 'unlimited' ? undefined : Number(line)
  } catch {
    return undefined
  }
}

async function waitForOpen (servers: readonly ServerProcess[], expected: number, timeoutMs: number): Promise<number> {
  let open = 0
  for (const until = Date.now() + timeoutMs; Date.now() < until;) {
    open = (await Promise.all(servers.map((server) => server.request<SampleReply>('sample')))).reduce((sum, sample) => sum + sample.open, 0)
    if (open === expected) break
    await sleep(100)
  }
  return open
}

async function fanoutRound (servers: readonly ServerProcess[], fixtures: FleetFixtures, clients: number, concurrency: number, round: number, log: Log): Promise<FanoutRound> {
  // A user of its own per round: a revocation stays in force, and would refuse the next round's tokens.
  const sub = `fanout-user-${round}-${process.pid}`
  const headers = fixtures.fanoutHeaders(sub, clients)
  const pool = new IdlePool()
  const arrivals = new Float64Array(clients)
  let closes = 0
  let otherCloses = 0
  let allClosed: () => void = () => {}
  let target = Infinity
  pool.onCloseFrame = (code) => {
    if (code === 4401) arrivals[closes++] = performance.timeOrigin + performance.now()
    else otherCloses++
    if (closes + otherCloses >= target) allClosed()
  }
  try {
    const started = performance.now()
    const share = Math.ceil(clients / servers.length)
    await Promise.all(servers.map(async (server, i) => {
      const offset = i * share
      const count = Math.max(0, Math.min(share, clients - offset))
      await pool.open(server.port, count, concurrency, (j) => headers[offset + j]!)
    }))
    const open = await waitForOpen(servers, pool.sockets.size, 10_000)
    const openMs = performance.now() - started
    if (pool.errors > 0) log(`fan-out round ${round + 1}: ${pool.errors} clients failed to open: ${[...pool.errorSamples].join('; ')}`)
    // The leases' writes settle, the loops go quiet.
    await sleep(500)
    target = pool.sockets.size
    const done = new Promise<void>((resolve) => { allClosed = resolve })
    const reply = await servers[0]!.request<RevokeReply>('revoke', { sub })
    let timer: NodeJS.Timeout | undefined
    await Promise.race([done, new Promise<void>((resolve) => { timer = setTimeout(resolve, 10_000) })])
    clearTimeout(timer)
    // A client still waiting counts as never closed: it lands at the top of the distribution.
    const latencies = sorted(Array.from({ length: Math.max(closes, target) }, (_, i) => i < closes ? arrivals[i]! - reply.calledAt : Infinity))
    const result: FanoutRound = {
      round,
      sub,
      open,
      openErrors: pool.errors,
      openMs,
      closes,
      otherCloses,
      closedByCaller: reply.closedHere,
      resolvedMs: reply.resolvedAt - reply.calledAt,
      p50Ms: quantile(latencies, 0.5),
      p99Ms: quantile(latencies, 0.99),
      lastMs: latencies.at(-1) ?? NaN
    }
    log(`fan-out round ${round + 1}: ${int(open)} open over ${servers.length} instances in ${Math.round(openMs)} ms; revoke() closed ${int(reply.closedHere)} on its instance ` +
      `and resolved after ${result.resolvedMs.toFixed(1)} ms; ${int(closes)} 4401 closes${otherCloses > 0 ? ` and ${otherCloses} others` : ''}, ` +
      `p50 ${result.p50Ms.toFixed(1)} ms, p99 ${result.p99Ms.toFixed(1)} ms, last ${result.lastMs.toFixed(1)} ms`)
    if (closes < open) log(`fan-out round ${round + 1}: ${int(open - closes)} clients got no 4401 within 10 s`)
    return result
  } finally {
    pool.destroy()
    // The next round starts with every instance empty.
    await waitForOpen(servers, 0, 10_000)
  }
}

export async function runFleetSuite (fixtures: FleetFixtures, placement: Placement, settings: FleetSettings, log: Log): Promise<FleetResult> {
  const redis = await startRedis(placement)
  log(`fleet suite: redis-server pid ${redis.pid} at ${redis.url}, pinned with the load generator; its CPU read from /proc/<pid>/${redis.cpuSource === 'schedstat' ? 'task/*/schedstat' : 'stat'}`)
  try {
    const configs = fixtures.servers(redis.url)
    const servers = new Map<FleetServerKey, ServerProcess>()
    let handshakes: CaseResult[]
    try {
      for (const kase of fixtures.handshakeCases) {
        if (!servers.has(kase.server)) servers.set(kase.server, await ServerProcess.start(configs[kase.server], placement))
      }
      log(`fleet handshakes: ${fixtures.handshakeCases.length} cases x ${settings.handshakes.repetitions} repetitions x ${int(settings.handshakes.handshakes)} handshakes`)
      handshakes = await runHandshakeSuite(fixtures.handshakeCases, servers, settings.handshakes, log, redis.cpuUs)
    } finally {
      await Promise.all([...servers.values()].map((server) => server.stop()))
    }

    if (settings.fanoutRounds === 0 || settings.fanoutClients === 0) return { redisCpuSource: redis.cpuSource, handshakes, fanout: undefined }
    // This process holds every client socket; the servers share the rest.
    const limit = openFileLimit()
    let clients = settings.fanoutClients
    if (limit !== undefined && clients + 512 > limit) {
      clients = Math.max(0, limit - 512)
      log(`fan-out: ${int(settings.fanoutClients)} clients do not fit the open-file limit of ${int(limit)}: ${int(clients)} instead`)
    }
    const instances: ServerProcess[] = []
    try {
      for (let i = 0; i < settings.fanoutInstances; i++) instances.push(await ServerProcess.start(fixtures.fanoutServer(redis.url, i), placement))
      log(`fan-out: ${int(clients)} idle clients of one user over ${instances.length} instances sharing the Redis store, ${settings.fanoutRounds} rounds`)
      const rounds: FanoutRound[] = []
      for (let round = 0; round < settings.fanoutRounds; round++) rounds.push(await fanoutRound(instances, fixtures, clients, settings.handshakes.concurrency * 2, round, log))
      return {
        redisCpuSource: redis.cpuSource,
        handshakes,
        fanout: {
          instances: instances.length,
          clients,
          rounds,
          p50Ms: spread(rounds.map((round) => round.p50Ms)),
          p99Ms: spread(rounds.map((round) => round.p99Ms)),
          lastMs: spread(rounds.map((round) => round.lastMs))
        }
      }
    } finally {
      await Promise.all(instances.map((server) => server.stop()))
    }
  } finally {
    await redis.stop()
  }
}
