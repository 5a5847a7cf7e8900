/*
 * The handshake suite: every case in every repetition, interleaved (the order rotates each
 * repetition), each run as one batch with bounded concurrency while the server's CPU time is
 * sampled before and after over IPC.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { HandshakeCase, ServerKey } from './cases.js'
import type { ServerProcess } from './children.js'
import { runHandshakes } from './load.js'
import { cpuDelta, type SampleReply } from './protocol.js'
import { quantile, sorted, spread, type Spread } from './stats.js'

export interface HandshakeSettings {
  readonly repetitions: number
  readonly handshakes: number
  readonly warmup: number
  readonly concurrency: number
}

export interface Repetition {
  readonly repetition: number
  readonly handshakes: number
  readonly errors: number
  readonly errorSamples: readonly string[]
  readonly wallMs: number
  readonly perSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  /** Server CPU per handshake, µs: the whole process, then by thread kind where /proc has it. */
  readonly cpuUs: number
  readonly mainUs: number | undefined
  /** The other threads: libuv pool (WebCrypto jobs), V8 GC and compiler workers. */
  readonly backgroundUs: number | undefined
  /**
   * Server CPU time over wall time, %: near 100 the server was the bottleneck and handshakes/s
   * means something; well below, the rate measured how much CPU other processes left us.
   */
  readonly serverBusy: number
  /** The load generator's own CPU per handshake, µs (it must stay below the server's). */
  readonly clientUs: number
  /** CPU per handshake of a process outside the server (the fleet suite's Redis), µs. */
  readonly externalUs?: number | undefined
}

export interface CaseResult {
  readonly id: string
  readonly label: string
  readonly accepted: boolean
  readonly repetitions: Repetition[]
  summary?: CaseSummary
}

export interface CaseSummary {
  readonly perSecond: Spread
  readonly p50Ms: Spread
  readonly p99Ms: Spread
  readonly cpuUs: Spread
  readonly mainUs: Spread | undefined
  readonly backgroundUs: Spread | undefined
  readonly serverBusy: Spread
  readonly clientUs: Spread
  readonly externalUs: Spread | undefined
  /** Ratios to bare of the same repetition: handshakes/s, and server CPU per handshake. */
  readonly perSecondRatio: Spread
  readonly cpuRatio: Spread
  readonly errors: number
}

export type Log = (line: string) => void

/** Reads the CPU time (µs) of a process the handshakes also load, such as a store's server. */
export type ExternalCpu = () => number

async function measure (server: ServerProcess, kase: HandshakeCase<string>, count: number, concurrency: number, repetition: number, externalCpu: ExternalCpu | undefined): Promise<Repetition> {
  const before = await server.request<SampleReply>('sample')
  const externalBefore = externalCpu?.()
  const client = process.cpuUsage()
  const batch = await runHandshakes(server.port, count, concurrency, kase.requestFor)
  const clientCpu = process.cpuUsage(client)
  // Let the server finish closing the last sockets (and giving their leases back) before reading its clock.
  await sleep(20)
  const after = await server.request<SampleReply>('sample')
  const externalAfter = externalCpu?.()
  const cpu = cpuDelta(after.cpu, before.cpu)
  const latencies = sorted(batch.latencies)
  const per = (value: number | undefined): number | undefined => value === undefined ? undefined : value / count
  return {
    repetition,
    handshakes: count,
    errors: batch.errors,
    errorSamples: batch.errorSamples,
    wallMs: batch.wallMs,
    perSecond: batch.ok / batch.wallMs * 1000,
    p50Ms: quantile(latencies, 0.5),
    p99Ms: quantile(latencies, 0.99),
    cpuUs: cpu.total / count,
    mainUs: per(cpu.main),
    backgroundUs: cpu.main === undefined ? undefined : (cpu.total - cpu.main) / count,
    serverBusy: cpu.total / 1000 / batch.wallMs * 100,
    clientUs: (clientCpu.user + clientCpu.system) / count,
    externalUs: externalBefore === undefined || externalAfter === undefined ? undefined : (externalAfter - externalBefore) / count
  }
}

/** Warms every case up, then runs the repetitions, interleaved. */
export async function runHandshakeSuite<K extends string = ServerKey> (cases: ReadonlyArray<HandshakeCase<K>>, servers: ReadonlyMap<K, ServerProcess>, settings: HandshakeSettings, log: Log, externalCpu?: ExternalCpu): Promise<CaseResult[]> {
  const results = cases.map((kase): CaseResult => ({ id: kase.id, label: kase.label, accepted: kase.accepted, repetitions: [] }))
  for (const kase of cases) {
    if (kase.refusal !== undefined) {
      const refusal = kase.refusal
      const check = await runHandshakes(servers.get(kase.server)!.port, 1, 1, () => refusal)
      if (check.ok !== 1) throw new Error(`case ${kase.id}: the server did not refuse a forged token (${check.errorSamples.join('; ')}): it is not timed`)
      log(`${kase.id}: a forged token is refused`)
    }
    const warm = await runHandshakes(servers.get(kase.server)!.port, settings.warmup, settings.concurrency, kase.requestFor)
    log(`warm-up ${kase.id}: ${warm.ok}/${warm.count} ok${warm.errors > 0 ? `, errors: ${warm.errorSamples.join('; ')}` : ''}`)
    if (warm.ok === 0) throw new Error(`case ${kase.id} fails every handshake: ${warm.errorSamples.join('; ')}`)
  }
  for (let repetition = 0; repetition < settings.repetitions; repetition++) {
    const line: string[] = []
    for (let k = 0; k < cases.length; k++) {
      // Rotate the order so that no case always runs right after the same one.
      const index = (k + repetition) % cases.length
      const kase = cases[index]!
      const result = await measure(servers.get(kase.server)!, kase, settings.handshakes, settings.concurrency, repetition, externalCpu)
      results[index]!.repetitions.push(result)
      line.push(`${kase.id} ${Math.round(result.perSecond)}/s ${Math.round(result.cpuUs)}µs${result.errors > 0 ? ` (${result.errors} errors: ${result.errorSamples.join('; ')})` : ''}`)
    }
    log(`repetition ${repetition + 1}/${settings.repetitions}: ${line.join(', ')}`)
  }
  summarize(results)
  return results
}

function summarize (results: CaseResult[]): void {
  const bare = results.find((result) => result.id === 'bare')
  for (const result of results) {
    const reps = result.repetitions
    const pick = (key: 'mainUs' | 'backgroundUs' | 'externalUs'): Spread | undefined => reps.every((rep) => rep[key] !== undefined) ? spread(reps.map((rep) => rep[key]!)) : undefined
    // Paired ratios: each repetition against bare of the same repetition, which ran moments apart.
    const ratio = (key: 'perSecond' | 'cpuUs'): Spread => bare === undefined
      ? { median: NaN, min: NaN, max: NaN }
      : spread(reps.map((rep, i) => rep[key] / bare.repetitions[i]![key]))
    result.summary = {
      perSecond: spread(reps.map((rep) => rep.perSecond)),
      p50Ms: spread(reps.map((rep) => rep.p50Ms)),
      p99Ms: spread(reps.map((rep) => rep.p99Ms)),
      cpuUs: spread(reps.map((rep) => rep.cpuUs)),
      mainUs: pick('mainUs'),
      backgroundUs: pick('backgroundUs'),
      serverBusy: spread(reps.map((rep) => rep.serverBusy)),
      clientUs: spread(reps.map((rep) => rep.clientUs)),
      externalUs: pick('externalUs'),
      perSecondRatio: ratio('perSecond'),
      cpuRatio: ratio('cpuUs'),
      errors: reps.reduce((sum, rep) => sum + rep.errors, 0)
    }
  }
}
