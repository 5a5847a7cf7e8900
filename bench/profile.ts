/*
 * `--profile`: runs each case's server under `node --cpu-prof`, then reads the profile back and
 * says where the main thread's time went during the measured handshakes, or the idle window
 * of an idle case, only (the window is
 * taken from the server's hrtime, the clock the profile's timestamps use). Time is given by
 * category (the file a function lives in) and by owner: the nearest frame of a library on the
 * stack, so node internals and V8 builtins count for whoever called them.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { HandshakeCase, IdleCase, ServerKey } from './cases.js'
import { ServerProcess, type Placement } from './children.js'
import type { Log } from './handshakes.js'
import { IdlePool, runHandshakes } from './load.js'
import { cpuDelta, type SampleReply, type ServerConfig } from './protocol.js'
import { fixed, int, table } from './stats.js'

interface CallFrame { functionName: string, url: string, lineNumber: number, columnNumber: number }
interface ProfileNode { id: number, callFrame: CallFrame, children?: number[] }
/** The `.cpuprofile` format `--cpu-prof` writes (Chrome DevTools' Profile). */
export interface CpuProfile { nodes: ProfileNode[], startTime: number, endTime: number, samples: number[], timeDeltas: number[] }

const fastifyFamily = new Set([
  'fastify', 'find-my-way', 'avvio', 'light-my-request', 'fast-querystring', 'abstract-logging', 'toad-cache', 'fastify-plugin',
  'process-warning', 'rfdc', 'secure-json-parse', 'fast-json-stringify', 'safe-regex2', 'ret', 'fast-decode-uri-component',
  'duplexify', 'pino', 'semver', '@fastify/ajv-compiler', '@fastify/fast-json-stringify-compiler', '@fastify/proxy-addr', 'proxy-addr'
])
/** Categories that are nobody's library: their time goes to the library that called them. */
const unowned = new Set(['node', 'v8 builtins', 'program', 'gc', 'idle'])
/**
 * The guard calls `done()` synchronously, so Fastify's routing and ws's upgrade run inside its
 * frames: a guard function's inclusive time stops where these take over again.
 */
const downstream = new Set(['fastify', 'ws', '@fastify/websocket', 'bench'])

/** Which code a frame belongs to, by its file. */
export function categorize (frame: CallFrame): string {
  const { url, functionName } = frame
  if (url === '') {
    if (functionName === '(garbage collector)') return 'gc'
    if (functionName === '(idle)') return 'idle'
    if (functionName === '(program)' || functionName === '(root)') return 'program'
    return 'v8 builtins'
  }
  if (url.startsWith('node:')) return 'node'
  const modules = url.lastIndexOf('/node_modules/')
  if (modules !== -1) {
    const [scope = '', name = ''] = url.slice(modules + '/node_modules/'.length).split('/')
    const pkg = scope.startsWith('@') ? `${scope}/${name}` : scope
    if (pkg === 'jose' || pkg === 'ws' || pkg === '@fastify/websocket' || pkg === '@fastify/error') return pkg
    return fastifyFamily.has(pkg) ? 'fastify' : pkg
  }
  if (url.includes('/dist/bench/')) return 'bench'
  if (url.includes('/dist/')) return 'guard'
  return 'other'
}

function frameName (frame: CallFrame): string {
  const file = frame.url.replace(/^file:\/\//, '').replace(/^.*\/node_modules\//, '').replace(/^.*\/dist\//, 'dist/')
  return `${frame.functionName === '' ? '(anonymous)' : frame.functionName} ${file === '' ? '' : `${file}:${frame.lineNumber + 1}`}`.trim()
}

export interface ProfileSummary {
  /** Sampled main-thread time inside the window, µs, idle excluded. */
  readonly busyUs: number
  readonly idleUs: number
  readonly byCategory: Record<string, number>
  readonly byOwner: Record<string, number>
  /** Self time by function, µs, descending. */
  readonly self: Array<{ name: string, category: string, us: number }>
  /**
   * Guard functions' inclusive time, µs, descending: samples with the function on the stack
   * and no Fastify or ws frame between it and the sample (what the guard itself called).
   */
  readonly guardInclusive: Array<{ name: string, us: number }>
}

/** Sums a profile's samples inside [startUs, endUs] (the whole profile without a window). */
export function summarizeProfile (profile: CpuProfile, window?: { startUs: number, endUs: number }): ProfileSummary {
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const node of profile.nodes) {
    byId.set(node.id, node)
    for (const child of node.children ?? []) parent.set(child, node.id)
  }
  const ownerOf = new Map<number, string>()
  const owner = (id: number): string => {
    const known = ownerOf.get(id)
    if (known !== undefined) return known
    let current: number | undefined = id
    let found = categorize(byId.get(id)!.callFrame)
    while (current !== undefined) {
      const category = categorize(byId.get(current)!.callFrame)
      if (!unowned.has(category)) {
        found = category
        break
      }
      current = parent.get(current)
    }
    ownerOf.set(id, found)
    return found
  }

  const byCategory: Record<string, number> = {}
  const byOwner: Record<string, number> = {}
  const self = new Map<string, { name: string, category: string, us: number }>()
  const inclusive = new Map<string, number>()
  let busyUs = 0
  let idleUs = 0
  let time = profile.startTime
  const { samples, timeDeltas } = profile
  for (let i = 0; i < samples.length; i++) {
    time += timeDeltas[i]!
    // A sample stands for the time until the next one.
    const weight = timeDeltas[i + 1] ?? 0
    if (window !== undefined && (time < window.startUs || time > window.endUs)) continue
    const id = samples[i]!
    const node = byId.get(id)!
    const category = categorize(node.callFrame)
    if (category === 'idle') {
      idleUs += weight
      continue
    }
    busyUs += weight
    byCategory[category] = (byCategory[category] ?? 0) + weight
    const who = owner(id)
    byOwner[who] = (byOwner[who] ?? 0) + weight
    const name = frameName(node.callFrame)
    const entry = self.get(name) ?? { name, category, us: 0 }
    entry.us += weight
    self.set(name, entry)
    // Each guard function once per sample, however deep the recursion.
    const seen = new Set<string>()
    for (let current: number | undefined = id; current !== undefined; current = parent.get(current)) {
      const frame = byId.get(current)!.callFrame
      const frameCategory = categorize(frame)
      if (downstream.has(frameCategory)) break
      if (frameCategory !== 'guard') continue
      const key = frameName(frame)
      if (seen.has(key)) continue
      seen.add(key)
      inclusive.set(key, (inclusive.get(key) ?? 0) + weight)
    }
  }
  return {
    busyUs,
    idleUs,
    byCategory,
    byOwner,
    self: [...self.values()].sort((a, b) => b.us - a.us),
    guardInclusive: [...inclusive].map(([name, us]) => ({ name, us })).sort((a, b) => b.us - a.us)
  }
}

interface ProfiledCase {
  readonly id: string
  readonly label: string
  /** What the figures are divided by: handshakes, or pings answered in the window. */
  readonly units: number
  readonly unit: 'hs' | 'ping'
  readonly errors: number
  readonly perSecond: number
  /** Server CPU per unit from cpuUsage and /proc, µs. */
  readonly cpuUs: number
  readonly mainUs: number | undefined
  readonly backgroundUs: number | undefined
  readonly file: string
  readonly summary: ProfileSummary
}

const profilerFlags = (outDir: string, id: string): string[] => ['--cpu-prof', `--cpu-prof-dir=${outDir}`, `--cpu-prof-name=${id}.cpuprofile`, '--cpu-prof-interval=100']

function profiledCase (id: string, label: string, unit: ProfiledCase['unit'], units: number, errors: number, wallMs: number, before: SampleReply, after: SampleReply, file: string): ProfiledCase {
  const cpu = cpuDelta(after.cpu, before.cpu)
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  return {
    id,
    label,
    unit,
    units,
    errors,
    perSecond: units / wallMs * 1000,
    cpuUs: cpu.total / units,
    mainUs: cpu.main === undefined ? undefined : cpu.main / units,
    backgroundUs: cpu.main === undefined ? undefined : (cpu.total - cpu.main) / units,
    file,
    summary: summarizeProfile(profile, { startUs: before.hrtimeUs, endUs: after.hrtimeUs })
  }
}

/**
 * Profiles each handshake case in its own server, and each idle case over its window with
 * its connections open (figures per ping answered), then renders the comparison.
 */
export async function runProfiles (
  cases: readonly HandshakeCase[], idleCases: readonly IdleCase[], servers: Readonly<Record<ServerKey, ServerConfig>>, placement: Placement,
  settings: { warmup: number, handshakes: number, concurrency: number, connections: number, windowMs: number }, outDir: string, log: Log
): Promise<{ text: string, json: unknown }> {
  const profiled: ProfiledCase[] = []
  for (const kase of cases) {
    const file = join(outDir, `${kase.id}.cpuprofile`)
    const server = await ServerProcess.start({ ...servers[kase.server], name: kase.id }, placement, profilerFlags(outDir, kase.id))
    let result: ProfiledCase
    try {
      await runHandshakes(server.port, settings.warmup, settings.concurrency, kase.requestFor)
      const before = await server.request<SampleReply>('sample')
      const batch = await runHandshakes(server.port, settings.handshakes, settings.concurrency, kase.requestFor)
      const after = await server.request<SampleReply>('sample')
      await server.stop()
      result = profiledCase(kase.id, kase.label, 'hs', batch.count, batch.errors, batch.wallMs, before, after, file)
    } finally {
      await server.stop()
    }
    profiled.push(result)
    log(`profiled ${kase.id}: ${result.units - result.errors}/${result.units} ok, ${Math.round(result.cpuUs)} µs/hs, ${file}`)
  }
  for (const kase of idleCases) {
    const file = join(outDir, `${kase.id}.cpuprofile`)
    const server = await ServerProcess.start(kase.server, placement, profilerFlags(outDir, kase.id))
    const pool = new IdlePool()
    let result: ProfiledCase
    let open = 0
    try {
      await runHandshakes(server.port, Math.min(settings.warmup, 1000), settings.concurrency, (i) => ({ headers: kase.headersFor(i), expectStatus: 101 }))
      await pool.open(server.port, settings.connections, settings.concurrency * 2, kase.headersFor)
      await sleep(2000)
      const pings = pool.pings
      const before = await server.request<SampleReply>('sample')
      await sleep(settings.windowMs)
      const after = await server.request<SampleReply>('sample')
      const answered = Math.max(1, pool.pings - pings)
      open = pool.sockets.size
      await server.stop()
      result = profiledCase(kase.id, kase.label, 'ping', answered, pool.errors, (after.hrtimeUs - before.hrtimeUs) / 1000, before, after, file)
    } finally {
      await server.stop()
      pool.destroy()
    }
    profiled.push(result)
    log(`profiled ${kase.id}: ${open} connections, ${Math.round(result.perSecond)} pings/s, ${fixed(result.cpuUs, 1)} µs/ping, ${file}`)
  }
  return { text: render(profiled), json: profiled.map((p) => ({ ...p, summary: { ...p.summary, self: p.summary.self.slice(0, 60), guardInclusive: p.summary.guardInclusive.slice(0, 40) } })) }
}

function render (profiled: readonly ProfiledCase[]): string {
  const out: string[] = []
  const header = ['', ...profiled.map((p) => `${p.id} /${p.unit}`)]
  out.push('Server CPU per handshake (/hs) or per ping answered (/ping), µs: cpuUsage of the whole process; the main thread from /proc (10 ms ticks)', '')
  out.push(table([
    header,
    ['handshakes or pings per second', ...profiled.map((p) => int(p.perSecond))],
    ['process', ...profiled.map((p) => fixed(p.cpuUs, 1))],
    ['main thread', ...profiled.map((p) => p.mainUs === undefined ? '-' : fixed(p.mainUs, 1))],
    ['other threads (libuv pool, V8 workers)', ...profiled.map((p) => p.backgroundUs === undefined ? '-' : fixed(p.backgroundUs, 1))],
    ['main thread, sampled', ...profiled.map((p) => fixed(p.summary.busyUs / p.units, 1))]
  ]))
  const section = (title: string, key: 'byOwner' | 'byCategory'): void => {
    const names = [...new Set(profiled.flatMap((p) => Object.keys(p.summary[key])))]
    const weight = (name: string): number => profiled.reduce((sum, p) => sum + (p.summary[key][name] ?? 0) / p.summary.busyUs, 0)
    names.sort((a, b) => weight(b) - weight(a))
    out.push('', title, '', table([header, ...names.filter((name) => weight(name) >= 0.001).map((name) => [name, ...profiled.map((p) => fixed((p.summary[key][name] ?? 0) / p.units, 1))])]))
  }
  section('Main-thread µs per unit by owner (node internals and V8 builtins count for the library that called them)', 'byOwner')
  section('Main-thread µs per unit by category (self time, where the code lives)', 'byCategory')
  for (const p of profiled) {
    out.push('', `${p.label}: top self time, µs per ${p.unit}`, '', table([
      ['function', 'category', `µs/${p.unit}`, '%'],
      ...p.summary.self.slice(0, 20).map((entry) => [entry.name, entry.category, fixed(entry.us / p.units, 2), fixed(entry.us / p.summary.busyUs * 100, 1)])
    ]))
    if (p.summary.guardInclusive.length > 0) {
      out.push('', `${p.label}: guard functions, inclusive of what they call (jose's synchronous part included, Fastify and ws after done() excluded), µs per ${p.unit}`, '', table([
        ['function', `µs/${p.unit}`],
        ...p.summary.guardInclusive.slice(0, 15).map((entry) => [entry.name, fixed(entry.us / p.units, 2)])
      ]))
    }
  }
  out.push('', 'Sampled time is wall time of the main thread: with every server thread on one CPU it includes time the libuv',
    'pool (WebCrypto jobs) or another process ran while the main thread waited; the process CPU figures above are exact.',
    '', `Profiles: ${profiled.map((p) => p.file).join(', ')}`)
  return out.join('\n')
}
