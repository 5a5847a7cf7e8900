/*
 * `npm run bench -- --versions`: the handshake suite, reduced to the cases that tell versions
 * apart, under every Node binary found (those .ci/run installs, and the one running this), one
 * after the other, each as a whole bench run of its own (its servers under the same binary),
 * then a table of the key ratios per version. Every run is bounded: quick settings by default,
 * its own deadline, and a timeout here.
 */
import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { CaseResult, Log } from './handshakes.js'
import { fixed, int, table } from './stats.js'

/** The cases every version runs: the baseline, the guard's paths, jose alone, and a peer. */
export const versionCases = ['bare', 'origin', 'hs256', 'es256-cached', 'es256', 'jose-hs256', 'jose-es256', 'fastify-jwt-hs256'] as const

/** Where .ci/run installs the other Node versions (`npm install --prefix <dir>/<major> node@<major>`). */
export const nodeRoot = join(process.env.TMPDIR ?? tmpdir(), 'fastify-ws-guard-node')
const majors = [22, 24, 26]
// A quick run takes well under a minute on a quiet machine; its own deadline is 3 minutes.
const perVersionTimeoutMs = 5 * 60_000

export interface NodeBinary {
  readonly path: string
  readonly version: string
}

/** The installed binaries, then this one, each version once. */
export function findNodes (): NodeBinary[] {
  const found: NodeBinary[] = []
  const candidates = [...majors.map((major) => join(nodeRoot, String(major), 'node_modules', 'node', 'bin', 'node')), process.execPath]
  for (const path of candidates) {
    if (!existsSync(path)) continue
    const version = path === process.execPath ? process.version : spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 10_000 }).stdout?.trim()
    if (version === undefined || !version.startsWith('v') || found.some((node) => node.version === version)) continue
    found.push({ path, version })
  }
  return found.sort((a, b) => compareVersions(a.version, b.version))
}

function compareVersions (a: string, b: string): number {
  const parts = (version: string): number[] => version.slice(1).split('.').map(Number)
  const [x, y] = [parts(a), parts(b)]
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return (x[i] ?? 0) - (y[i] ?? 0)
  return 0
}

export interface VersionRun {
  readonly node: string
  readonly path: string
  /** The handshake results of that run, as `--json` prints them; empty when it failed. */
  readonly handshakes: CaseResult[]
  readonly durationS: number
  readonly error: string | undefined
}

/** One bench run under `node`: the handshake suite only, its JSON read from stdout. */
async function runUnder (node: NodeBinary, passArgs: readonly string[], log: Log): Promise<VersionRun> {
  const script = fileURLToPath(new URL('./run.js', import.meta.url))
  const started = Date.now()
  // The child relaunches itself pinned, exactly as `npm run bench` would.
  const env = { ...process.env }
  delete env.WS_GUARD_BENCH_LOADGEN
  const child = spawn(node.path, [script, '--only', 'handshakes', '--json', ...passArgs], { stdio: ['ignore', 'pipe', 'pipe'], env })
  let stdout = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    for (const line of chunk.split('\n')) if (line.trim() !== '') process.stderr.write(`[${node.version}] ${line}\n`)
  })
  // The child forwards a SIGTERM to its pinned relaunch, which kills its servers.
  const stop = (): void => { child.kill('SIGTERM') }
  const interrupted = (): void => {
    stop()
    process.exit(130)
  }
  process.once('exit', stop)
  process.once('SIGINT', interrupted)
  process.once('SIGTERM', interrupted)
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    child.kill('SIGTERM')
    setTimeout(() => child.kill('SIGKILL'), 5000).unref()
  }, perVersionTimeoutMs)
  const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)))
  clearTimeout(timer)
  process.off('exit', stop)
  process.off('SIGINT', interrupted)
  process.off('SIGTERM', interrupted)
  const durationS = Math.round((Date.now() - started) / 1000)
  if (timedOut) return { node: node.version, path: node.path, handshakes: [], durationS, error: `no result within ${perVersionTimeoutMs / 60_000} min` }
  try {
    const result = JSON.parse(stdout) as { handshakes: CaseResult[] }
    log(`${node.version}: done in ${durationS} s`)
    return { node: node.version, path: node.path, handshakes: result.handshakes, durationS, error: code === 0 ? undefined : `exit code ${String(code)}` }
  } catch {
    return { node: node.version, path: node.path, handshakes: [], durationS, error: `exit code ${String(code)}, no JSON on stdout` }
  }
}

export async function runVersions (passArgs: readonly string[], caseIds: readonly string[], log: Log): Promise<{ nodes: NodeBinary[], runs: VersionRun[] }> {
  const nodes = findNodes()
  const missing = majors.filter((major) => !nodes.some((node) => node.version.startsWith(`v${major}.`)))
  if (missing.length > 0) {
    log(`no Node ${missing.join(', ')} under ${nodeRoot}: install with ${missing.map((major) => `npm install --prefix ${join(nodeRoot, String(major))} node@${major}`).join('; ')}`)
  }
  log(`handshake suite (${caseIds.join(', ')}) under ${nodes.map((node) => node.version).join(', ')}, one after the other`)
  const runs: VersionRun[] = []
  for (const node of nodes) runs.push(await runUnder(node, passArgs, log))
  return { nodes, runs }
}

/** Per version: handshakes/s as a ratio to bare, then the same from server CPU, and bare's own µs. */
export function versionTables (runs: readonly VersionRun[], caseIds: readonly string[] = versionCases): string {
  const cases = caseIds.filter((id) => id !== 'bare')
  const rate: string[][] = [['node', ...cases, 'errors']]
  const cpu: string[][] = [['node', 'bare µs/hs', ...cases]]
  for (const run of runs) {
    if (run.error !== undefined && run.handshakes.length === 0) {
      rate.push([run.node, ...cases.map(() => '-'), run.error])
      cpu.push([run.node, '-', ...cases.map(() => '-')])
      continue
    }
    const find = (id: string): CaseResult | undefined => run.handshakes.find((result) => result.id === id)
    const errors = run.handshakes.reduce((sum, result) => sum + (result.summary?.errors ?? 0), 0)
    rate.push([run.node, ...cases.map((id) => fixed(find(id)?.summary?.perSecondRatio.median ?? NaN, 2)), String(errors)])
    cpu.push([run.node, int(find('bare')?.summary?.cpuUs.median ?? NaN), ...cases.map((id) => fixed(1 / (find(id)?.summary?.cpuRatio.median ?? NaN), 2))])
  }
  return [
    'Handshakes/s as a ratio to bare (medians of the paired repetitions)', '', table(rate), '',
    'The same from server CPU: bare µs/hs / case µs/hs (steadier on a shared machine)', '', table(cpu)
  ].join('\n')
}
