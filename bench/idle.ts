/*
 * The idle suite: one fresh server per case, `connections` open and idle (the load generator
 * answers every ping), memory per connection after GC, then CPU and event-loop delay over a
 * window. Then the two 1 s ping servers side by side, both loaded at once, their CPU read over
 * the same windows: whatever else runs on the machine weighs on both alike.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { IdleCase } from './cases.js'
import { ServerProcess, type Placement } from './children.js'
import type { Log } from './handshakes.js'
import { IdlePool, runHandshakes } from './load.js'
import type { LoopReply, MemoryReply, SampleReply } from './protocol.js'
import { spread, type Spread } from './stats.js'

export interface IdleSettings {
  readonly connections: number
  readonly windowMs: number
  readonly warmup: number
  readonly concurrency: number
}

export interface IdleResult {
  readonly id: string
  readonly label: string
  readonly role: IdleCase['role']
  readonly pings: boolean
  readonly connections: number
  /** Connections the server had open when memory was read. */
  readonly open: number
  readonly openErrors: number
  readonly openErrorSamples: readonly string[]
  readonly openMs: number
  readonly baseline: MemoryReply
  /** Memory with the first half of the connections open. */
  readonly half: MemoryReply
  readonly loaded: MemoryReply
  /** Bytes per connection, after GC: the slope between the half and the full reading. */
  readonly rssPerConnection: number
  readonly heapPerConnection: number
  readonly externalPerConnection: number
  readonly loop: LoopReply
  /** Server CPU over the window, % of one core. */
  readonly cpuPercent: number
  readonly mainCpuPercent: number | undefined
  /** Pings the load generator answered per second over the window. */
  readonly pingsPerSecond: number
  /** Connections the server ended during the measurement (there should be none). */
  readonly closedByServer: number
}

/**
 * Starts the case's server, warms its handshake path, then opens `connections` in two halves,
 * reading memory after each: the slope between the two readings is the cost of one more
 * connection, free of what the first connections cost once (heap and allocator growth).
 */
async function openLoaded (kase: IdleCase, placement: Placement, settings: IdleSettings): Promise<{ server: ServerProcess, pool: IdlePool, baseline: MemoryReply, half: MemoryReply, openMs: number }> {
  const server = await ServerProcess.start(kase.server, placement)
  const pool = new IdlePool()
  try {
    // Warm the handshake path so that the baseline already holds its compiled code and pools.
    await runHandshakes(server.port, settings.warmup, settings.concurrency, (i) => ({ headers: kase.headersFor(i), expectStatus: 101 }))
    const baseline = await server.request<MemoryReply>('memory')
    const firstHalf = Math.floor(settings.connections / 2)
    let openMs = await openAndWait(server, pool, firstHalf, settings, kase)
    const half = await server.request<MemoryReply>('memory')
    openMs += await openAndWait(server, pool, settings.connections - firstHalf, settings, kase)
    await sleep(1000)
    return { server, pool, baseline, half, openMs }
  } catch (err) {
    await server.stop()
    pool.destroy()
    throw err
  }
}

/** Opens `count` more connections and waits until the server has them all; returns how long that took, ms. */
async function openAndWait (server: ServerProcess, pool: IdlePool, count: number, settings: IdleSettings, kase: IdleCase): Promise<number> {
  const before = (await server.request<SampleReply>('sample')).open
  const started = performance.now()
  const errorsBefore = pool.errors
  await pool.open(server.port, count, settings.concurrency * 2, kase.headersFor)
  const expected = before + count - (pool.errors - errorsBefore)
  for (let waited = 0; waited < 10_000; waited += 100) {
    const { open } = await server.request<SampleReply>('sample')
    if (open >= expected) break
    await sleep(100)
  }
  return performance.now() - started
}

export async function runIdleCase (kase: IdleCase, placement: Placement, settings: IdleSettings, log: Log): Promise<IdleResult> {
  const { server, pool, baseline, half, openMs } = await openLoaded(kase, placement, settings)
  try {
    const loaded = await server.request<MemoryReply>('memory')
    const pingsBefore = pool.pings
    await server.request('loopStart')
    await sleep(settings.windowMs)
    const loop = await server.request<LoopReply>('loopStop')
    const pings = pool.pings - pingsBefore
    const open = loaded.open
    const added = open - half.open
    const perConnection = (key: 'rss' | 'heapUsed' | 'external'): number => added <= 0 ? NaN : (loaded[key] - half[key]) / added
    const result: IdleResult = {
      id: kase.id,
      label: kase.label,
      role: kase.role,
      pings: kase.pings,
      connections: settings.connections,
      open,
      openErrors: pool.errors,
      openErrorSamples: [...pool.errorSamples],
      openMs,
      baseline,
      half,
      loaded,
      rssPerConnection: perConnection('rss'),
      heapPerConnection: perConnection('heapUsed'),
      externalPerConnection: perConnection('external'),
      loop,
      cpuPercent: loop.cpu.total / 1000 / loop.wallMs * 100,
      mainCpuPercent: loop.cpu.main === undefined ? undefined : loop.cpu.main / 1000 / loop.wallMs * 100,
      pingsPerSecond: pings / loop.wallMs * 1000,
      closedByServer: pool.closedByServer
    }
    log(`${kase.id}: ${open} open in ${Math.round(openMs)} ms, ${Math.round(result.rssPerConnection)} B RSS/conn, ` +
      `CPU ${result.cpuPercent.toFixed(1)}%, loop delay max ${loop.delayMaxMs.toFixed(1)} ms, ${Math.round(result.pingsPerSecond)} pings/s` +
      (pool.errors > 0 ? `, ${pool.errors} failed to open: ${[...pool.errorSamples].join('; ')}` : ''))
    return result
  } finally {
    // The server closes first, so the load generator's ports are not left in TIME_WAIT.
    await server.stop()
    pool.destroy()
  }
}

export interface PingPairResult {
  readonly guard: string
  readonly reference: string
  readonly windows: number
  readonly windowMs: number
  /** Server CPU, % of one core, per window. */
  readonly guardCpuPercent: Spread
  readonly referenceCpuPercent: Spread
  /** Guard CPU / reference CPU, paired window by window. */
  readonly ratio: Spread
  readonly guardOwnDelayMaxMs: number
}

/**
 * Both ping servers loaded at once, their CPU read over the same windows: the fair reading of
 * "CPU no higher than per-connection timers" on a machine other processes share.
 */
export async function runPingPair (guardCase: IdleCase, referenceCase: IdleCase, placement: Placement, settings: IdleSettings, windows: number, log: Log): Promise<PingPairResult> {
  const guard = await openLoaded(guardCase, placement, settings)
  let reference: Awaited<ReturnType<typeof openLoaded>> | undefined
  try {
    reference = await openLoaded(referenceCase, placement, settings)
    const guardCpu: number[] = []
    const referenceCpu: number[] = []
    let ownDelay = 0
    for (let i = 0; i < windows; i++) {
      await Promise.all([guard.server.request('loopStart'), reference.server.request('loopStart')])
      await sleep(settings.windowMs)
      const [g, r] = await Promise.all([guard.server.request<LoopReply>('loopStop'), reference.server.request<LoopReply>('loopStop')])
      guardCpu.push(g.cpu.total / 1000 / g.wallMs * 100)
      referenceCpu.push(r.cpu.total / 1000 / r.wallMs * 100)
      ownDelay = Math.max(ownDelay, g.ownDelayMaxMs)
      log(`side by side, window ${i + 1}/${windows}: ${guardCase.id} CPU ${guardCpu.at(-1)!.toFixed(1)}% (${g.gcCount} GCs, ${g.gcMs.toFixed(0)} ms), ` +
        `${referenceCase.id} CPU ${referenceCpu.at(-1)!.toFixed(1)}% (${r.gcCount} GCs, ${r.gcMs.toFixed(0)} ms)`)
    }
    return {
      guard: guardCase.id,
      reference: referenceCase.id,
      windows,
      windowMs: settings.windowMs,
      guardCpuPercent: spread(guardCpu),
      referenceCpuPercent: spread(referenceCpu),
      ratio: spread(guardCpu.map((cpu, i) => cpu / referenceCpu[i]!)),
      guardOwnDelayMaxMs: ownDelay
    }
  } finally {
    await Promise.all([guard.server.stop(), reference?.server.stop()])
    guard.pool.destroy()
    reference?.pool.destroy()
  }
}
