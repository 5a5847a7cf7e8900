/*
 * The message suite: an echo route, a few connections pipelining small text messages, and
 * what the server spends per message: bare @fastify/websocket, the guard without message
 * guards, and the guard with `maxMessageBytes` and a `messageRate` too high ever to trigger.
 * The connections open once per server; the cases then run interleaved, like the handshakes.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { MessageCase } from './cases.js'
import { ServerProcess, type Placement } from './children.js'
import type { Log } from './handshakes.js'
import { EchoClients } from './load.js'
import { cpuDelta, type SampleReply } from './protocol.js'
import { int, spread, type Spread } from './stats.js'

export interface MessageSettings {
  readonly repetitions: number
  /** Messages per case and repetition, all connections together. */
  readonly messages: number
  readonly warmup: number
  /** Connections per server. */
  readonly clients: number
  /** Messages in flight per connection. */
  readonly window: number
  /** Bytes per message (a text frame under 126 bytes). */
  readonly size: number
}

export interface MessageRepetition {
  readonly repetition: number
  readonly messages: number
  readonly wallMs: number
  readonly perSecond: number
  /** Server CPU per message, µs: the whole process, and its main thread where /proc has it. */
  readonly cpuUs: number
  readonly mainUs: number | undefined
  /** Server CPU over wall time, %. */
  readonly serverBusy: number
  /** The load generator's CPU per message, µs: it must stay well below the server's. */
  readonly clientUs: number
  readonly error: string | undefined
}

export interface MessageSummary {
  readonly perSecond: Spread
  readonly cpuUs: Spread
  readonly mainUs: Spread | undefined
  readonly serverBusy: Spread
  readonly clientUs: Spread
  /** Paired with bare in the same repetition. */
  readonly perSecondRatio: Spread
  readonly cpuRatio: Spread
  /** The guard with message guards, paired with the guard without them in the same repetition. */
  readonly perSecondVsGuard: Spread | undefined
  readonly cpuVsGuard: Spread | undefined
  readonly errors: number
}

export interface MessageResult {
  readonly id: string
  readonly label: string
  readonly repetitions: MessageRepetition[]
  summary?: MessageSummary
}

// Generous: a batch takes seconds on a quiet machine; only a stalled server reaches this.
const batchTimeoutMs = 120_000

async function measure (server: ServerProcess, clients: EchoClients, settings: MessageSettings, repetition: number): Promise<MessageRepetition> {
  const perClient = Math.ceil(settings.messages / settings.clients)
  const before = await server.request<SampleReply>('sample')
  const client = process.cpuUsage()
  const batch = await clients.run(perClient, batchTimeoutMs)
  const clientCpu = process.cpuUsage(client)
  const after = await server.request<SampleReply>('sample')
  const cpu = cpuDelta(after.cpu, before.cpu)
  const count = Math.max(1, batch.echoes)
  return {
    repetition,
    messages: batch.echoes,
    wallMs: batch.wallMs,
    perSecond: batch.echoes / batch.wallMs * 1000,
    cpuUs: cpu.total / count,
    mainUs: cpu.main === undefined ? undefined : cpu.main / count,
    serverBusy: cpu.total / 1000 / batch.wallMs * 100,
    clientUs: (clientCpu.user + clientCpu.system) / count,
    error: batch.error
  }
}

/** Starts one server per case, opens its connections, warms every case up, then runs the repetitions interleaved. */
export async function runMessageSuite (cases: readonly MessageCase[], placement: Placement, settings: MessageSettings, log: Log): Promise<MessageResult[]> {
  const servers: ServerProcess[] = []
  const clients: Array<EchoClients | undefined> = cases.map(() => undefined)
  const open = async (index: number): Promise<EchoClients> => {
    const current = clients[index]
    if (current?.usable === true) return current
    current?.close()
    const kase = cases[index]!
    const opened = await EchoClients.open(servers[index]!.port, settings.clients, kase.headers, settings.window, settings.size)
    clients[index] = opened
    return opened
  }
  try {
    for (const kase of cases) servers.push(await ServerProcess.start(kase.server, placement))
    const results = cases.map((kase): MessageResult => ({ id: kase.id, label: kase.label, repetitions: [] }))
    for (let i = 0; i < cases.length; i++) {
      const warm = await (await open(i)).run(Math.ceil(settings.warmup / settings.clients), batchTimeoutMs)
      log(`warm-up ${cases[i]!.id}: ${int(warm.echoes)} echoes in ${Math.round(warm.wallMs)} ms${warm.error === undefined ? '' : `, ${warm.error}`}`)
      if (warm.error !== undefined) throw new Error(`message case ${cases[i]!.id} fails: ${warm.error}`)
    }
    for (let repetition = 0; repetition < settings.repetitions; repetition++) {
      const line: string[] = []
      for (let k = 0; k < cases.length; k++) {
        const index = (k + repetition) % cases.length
        const result = await measure(servers[index]!, await open(index), settings, repetition)
        results[index]!.repetitions.push(result)
        line.push(`${cases[index]!.id} ${int(result.perSecond)}/s ${result.cpuUs.toFixed(1)}µs${result.error === undefined ? '' : ` (${result.error})`}`)
        // The last echoes' writes and the server's garbage settle before the next case.
        await sleep(20)
      }
      log(`messages, repetition ${repetition + 1}/${settings.repetitions}: ${line.join(', ')}`)
    }
    summarize(results)
    return results
  } finally {
    for (const opened of clients) opened?.close()
    await Promise.all(servers.map((server) => server.stop()))
  }
}

function summarize (results: MessageResult[]): void {
  const bare = results.find((result) => result.id === 'msg-bare')
  const guard = results.find((result) => result.id === 'msg-guard')
  const paired = (reps: readonly MessageRepetition[], against: MessageResult | undefined, key: 'perSecond' | 'cpuUs'): Spread | undefined =>
    against === undefined ? undefined : spread(reps.map((rep, i) => rep[key] / against.repetitions[i]![key]))
  for (const result of results) {
    const reps = result.repetitions
    const withGuards = result.id === 'msg-guard-limits'
    result.summary = {
      perSecond: spread(reps.map((rep) => rep.perSecond)),
      cpuUs: spread(reps.map((rep) => rep.cpuUs)),
      mainUs: reps.every((rep) => rep.mainUs !== undefined) ? spread(reps.map((rep) => rep.mainUs!)) : undefined,
      serverBusy: spread(reps.map((rep) => rep.serverBusy)),
      clientUs: spread(reps.map((rep) => rep.clientUs)),
      perSecondRatio: paired(reps, bare, 'perSecond') ?? { median: NaN, min: NaN, max: NaN },
      cpuRatio: paired(reps, bare, 'cpuUs') ?? { median: NaN, min: NaN, max: NaN },
      perSecondVsGuard: withGuards ? paired(reps, guard, 'perSecond') : undefined,
      cpuVsGuard: withGuards ? paired(reps, guard, 'cpuUs') : undefined,
      errors: reps.filter((rep) => rep.error !== undefined).length
    }
  }
}
