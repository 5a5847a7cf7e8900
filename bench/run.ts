/*
 * `npm run bench [-- options]`: the guard against bare @fastify/websocket, in one run.
 *
 * This process is the load generator. It re-executes itself once with `ulimit -n` raised and
 * pinned to its own CPU, then starts the servers (pinned to another CPU) and drives them over
 * 127.0.0.1 only. Every step is bounded in count and time; servers are killed on any exit.
 */
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { prepareFixtures, type ServerKey } from './cases.js'
import { detectPlacement, killChildren, ServerProcess, wrapCommand, type Placement } from './children.js'
import { runFleetSuite, type FleetResult } from './fleet.js'
import { runHandshakeSuite, type CaseResult, type Log } from './handshakes.js'
import { runHeapAttribution } from './heap.js'
import { runIdleCase, runPingPair, type IdleResult, type PingPairResult } from './idle.js'
import { runMessageSuite, type MessageResult } from './messages.js'
import { runProfiles } from './profile.js'
import { redisAvailable, redisServerPath } from './redis-server.js'
import { budgetTable, checkBudgets, comparePeers, compareToJose, fanoutTable, fleetTable, handshakeRatioBudgets, handshakeTable, idleTable, messageTable, peerTable, pingPairLine, referenceTable } from './report.js'
import { renderChart } from './svg.js'
import { nodeRoot, runVersions, versionCases, versionTables } from './versions.js'
import { int } from './stats.js'

const usage = `Usage: npm run bench -- [options]

  --quick              smoke run, under 3 minutes: 3 repetitions of 1,000 handshakes, 30,000 messages,
                       2,000 idle connections and fan-out clients
  --json               print the results as JSON on stdout (progress goes to stderr)
  --check              exit with 1 when a budget fails
  --save FILE          also write the JSON results to FILE
  --svg FILE           write a chart of the run (handshake ratios to bare, memory per idle connection)
                       to FILE (full mode: docs/bench.svg unless given; quick mode: none unless given)
  --cases a,b          handshake cases to run (ids: bare, origin, hs256, jose-hs256, es256, jose-es256,
                       es256-cached, jwks, reject-origin, reject-missing, reject-badsig, fastify-jwt-hs256,
                       fastify-jwt-es256, socketio-hs256); bare is always added; jose-*: the reference,
                       bare plus a naive jwtVerify onRequest hook; fastify-jwt-*, socketio-*: the peers
  --idle a,b           idle cases to run (idle-bare, idle-guard, idle-guard-hs256, idle-jose-hs256, idle-timer,
                       ping-guard, ping-timer); idle-bare is always added
  --only a,b           run only these sections: handshakes, messages, fleet, idle
  --skip-handshakes    no handshake suite
  --skip-messages      no message suite
  --skip-fleet         no fleet suite (it needs /usr/bin/redis-server, or REDIS_SERVER_BIN; skipped without)
  --skip-idle          no idle suite
  --repetitions N      repetitions of every handshake, message and fleet case (full: 7)
  --handshakes N       handshakes per case and repetition, fleet cases too (full: 4,000)
  --warmup N           warm-up handshakes per case (full: 2,500)
  --concurrency N      handshakes in flight (64)
  --connections N      idle connections (full: 10,000)
  --window MS          CPU and event-loop window of the idle suite (full: 10,000)
  --messages N         echoed messages per message case and repetition (full: 200,000)
  --message-clients N  connections per echo server (4), each with --message-window messages in flight (32)
  --fanout-clients N   idle clients of the revocation fan-out, over 3 instances (full: 10,000; quick: 2,000)
  --fanout-rounds N    revocations fanned out, each to fresh clients (full: 3; quick: 1)
  --profile            CPU-profile the servers (node --cpu-prof) of --cases (default bare,hs256,es256)
                       and of --idle cases (over their window, per ping), and summarize where the time goes
  --heap               heap snapshots of --idle servers (default idle-bare,idle-guard,idle-guard-hs256)
                       with and without --connections (default 2,000), diffed per connection
  --out-dir DIR        where --profile and --heap write their files (default: a temporary directory)
  --versions           the handshake suite (bare, origin, hs256, es256-cached, es256, jose-hs256, jose-es256,
                       fastify-jwt-hs256; --cases picks others) with quick settings under every Node found in
                       $TMPDIR/fastify-ws-guard-node/<22|24|26>/node_modules/node/bin/node and this one, then the
                       key ratios per version (JSON to --save FILE, or to a temporary file)
  --help`

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    check: { type: 'boolean', default: false },
    save: { type: 'string' },
    svg: { type: 'string' },
    cases: { type: 'string' },
    idle: { type: 'string' },
    'skip-handshakes': { type: 'boolean', default: false },
    'skip-idle': { type: 'boolean', default: false },
    'skip-messages': { type: 'boolean', default: false },
    'skip-fleet': { type: 'boolean', default: false },
    'fanout-clients': { type: 'string' },
    'fanout-rounds': { type: 'string' },
    only: { type: 'string' },
    messages: { type: 'string' },
    'message-clients': { type: 'string' },
    'message-window': { type: 'string' },
    repetitions: { type: 'string' },
    handshakes: { type: 'string' },
    warmup: { type: 'string' },
    concurrency: { type: 'string' },
    connections: { type: 'string' },
    window: { type: 'string' },
    profile: { type: 'boolean', default: false },
    heap: { type: 'boolean', default: false },
    'out-dir': { type: 'string' },
    versions: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false }
  }
})

function integer (value: string | undefined, fallback: number, name: string, min = 1, max = 1_000_000): number {
  if (value === undefined) return fallback
  const parsed = Number(value.replace(/_/g, ''))
  if (!Number.isInteger(parsed) || parsed < min || parsed > max) throw new Error(`--${name} must be an integer from ${min} to ${max}, got ${value}`)
  return parsed
}

const quick = args.quick
const settings = {
  repetitions: integer(args.repetitions, quick ? 3 : 7, 'repetitions', 1, 50),
  handshakes: integer(args.handshakes, quick ? 1000 : 4000, 'handshakes', 10, 200_000),
  warmup: integer(args.warmup, quick ? 600 : 2500, 'warmup', 0, 100_000),
  concurrency: integer(args.concurrency, 64, 'concurrency', 1, 1024),
  // 2 x 10,000 sockets in two processes fit the usual 20,000-descriptor hard limit.
  connections: integer(args.connections, args.heap ? 2000 : quick ? 2000 : 10_000, 'connections', 1, 15_000),
  windowMs: integer(args.window, quick ? 3000 : 10_000, 'window', 100, 120_000),
  messages: integer(args.messages, quick ? 30_000 : 200_000, 'messages', 100, 5_000_000),
  messageClients: integer(args['message-clients'], 4, 'message-clients', 1, 256),
  messageWindow: integer(args['message-window'], 32, 'message-window', 1, 4096),
  fanoutClients: integer(args['fanout-clients'], quick ? 2000 : 10_000, 'fanout-clients', 0, 15_000),
  fanoutRounds: integer(args['fanout-rounds'], quick ? 1 : 3, 'fanout-rounds', 0, 20)
}
const sectionIds = ['handshakes', 'messages', 'fleet', 'idle'] as const
type Section = typeof sectionIds[number]
const onlySections = args.only?.split(',').map((id) => id.trim()).filter((id) => id !== '')
for (const id of onlySections ?? []) {
  if (!(sectionIds as readonly string[]).includes(id)) throw new Error(`--only: unknown section "${id}"; known: ${sectionIds.join(', ')}`)
}
/** Whether a section runs: named by --only, or not skipped. */
function runs (section: Section): boolean {
  if (onlySections !== undefined) return onlySections.includes(section)
  return args[`skip-${section}`] !== true
}
// Everything stops by itself: the whole run has a deadline.
const deadlineMs = quick ? 180_000 : 30 * 60_000

const log: Log = (line) => process.stderr.write(`[bench] ${line}\n`)

function list (value: string | undefined, fallback: readonly string[], required: string | undefined, known: readonly string[]): string[] {
  const picked = value === undefined ? [...fallback] : value.split(',').map((id) => id.trim()).filter((id) => id !== '')
  for (const id of picked) {
    if (!known.includes(id)) throw new Error(`unknown case "${id}"; known: ${known.join(', ')}`)
  }
  if (required !== undefined && !picked.includes(required)) picked.unshift(required)
  return picked
}

/** Re-runs this script with `ulimit -n` raised, pinned to the load generator's CPU. */
function relaunch (placement: Placement): void {
  const script = fileURLToPath(import.meta.url)
  const [command, commandArgs] = wrapCommand(placement, placement.clientCpu, [process.execPath, ...process.execArgv, script, ...process.argv.slice(2)])
  // The IPC channel only tells the load generator when this process is gone, however it went.
  const child = spawn(command, commandArgs, { stdio: ['inherit', 'inherit', 'inherit', 'ipc'], env: { ...process.env, WS_GUARD_BENCH_LOADGEN: '1' } })
  const forward = (signal: NodeJS.Signals): void => { child.kill(signal) }
  process.on('SIGINT', forward)
  process.on('SIGTERM', forward)
  child.on('exit', (code, signal) => process.exit(code ?? (signal === null ? 1 : 128)))
}

function machine (placement: Placement): Record<string, unknown> {
  return {
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    memoryGB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    kernel: release(),
    pinned: placement.pinned ? { server: placement.serverCpu, loadGenerator: placement.clientCpu } : false,
    loadAverageAtStart: loadavg().map((value) => Number(value.toFixed(2)))
  }
}

async function main (): Promise<void> {
  if (args.help) {
    process.stdout.write(usage + '\n')
    return
  }
  if (args.versions) return await versions()
  const placement = detectPlacement()
  if (process.env.WS_GUARD_BENCH_LOADGEN !== '1' && (placement.bash || placement.pinned)) return relaunch(placement)

  process.on('exit', killChildren)
  // Started by the relaunch: stop when it goes away, even if it was killed outright.
  process.on('disconnect', () => {
    log('the parent process went away: stopping')
    killChildren()
    process.exit(130)
  })
  process.channel?.unref()
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      killChildren()
      process.exit(130)
    })
  }
  setTimeout(() => {
    log(`the run passed its ${deadlineMs / 1000} s deadline: stopping`)
    killChildren()
    process.exit(2)
  }, deadlineMs).unref()

  const started = Date.now()
  const host = machine(placement)
  const mode = args.profile ? 'profile' : args.heap ? 'heap' : quick ? 'quick' : 'full'
  log(`${mode} mode on ${host.cpuModel as string}, ${host.cpus as number} CPUs, Node ${process.version}; ` +
    (placement.pinned ? `servers on CPU ${placement.serverCpu}, load generator on CPU ${placement.clientCpu}` : 'not pinned (no taskset or one CPU)') +
    `; file descriptors: ${process.env.WS_GUARD_BENCH_LOADGEN === '1' ? 'raised' : 'as inherited'}`)

  const caseIds = ['bare', 'origin', 'hs256', 'jose-hs256', 'fastify-jwt-hs256', 'socketio-hs256', 'es256', 'jose-es256', 'fastify-jwt-es256', 'es256-cached', 'jwks', 'reject-origin', 'reject-missing', 'reject-badsig']
  const idleIds = ['idle-bare', 'idle-guard', 'idle-guard-hs256', 'idle-jose-hs256', 'idle-timer', 'ping-guard', 'ping-timer']
  const perCase = settings.warmup + settings.repetitions * settings.handshakes
  const fixtures = await prepareFixtures(perCase, settings.connections, settings.warmup)
  const outDir = args['out-dir'] ?? join(tmpdir(), `ws-guard-bench-${process.pid}`)

  try {
    if (args.profile) {
      mkdirSync(outDir, { recursive: true })
      const picked = new Set(args.cases === undefined && args.idle !== undefined ? [] : list(args.cases, ['bare', 'hs256', 'es256'], undefined, caseIds))
      const idlePicked = new Set(args.idle === undefined ? [] : list(args.idle, [], undefined, idleIds))
      const report = await runProfiles(
        fixtures.handshakeCases.filter((kase) => picked.has(kase.id)), fixtures.idleCases.filter((kase) => idlePicked.has(kase.id)),
        fixtures.servers, placement, settings, outDir, log
      )
      process.stdout.write(args.json ? JSON.stringify({ mode, machine: host, settings, profiles: report.json }, null, 2) + '\n' : report.text + '\n')
      return
    }
    if (args.heap) {
      mkdirSync(outDir, { recursive: true })
      const picked = new Set(list(args.idle, ['idle-bare', 'idle-guard', 'idle-guard-hs256'], 'idle-bare', idleIds))
      const report = await runHeapAttribution(fixtures.idleCases.filter((kase) => picked.has(kase.id)), placement, settings, outDir, log)
      process.stdout.write(args.json ? JSON.stringify({ mode, machine: host, settings, heap: report.json }, null, 2) + '\n' : report.text + '\n')
      return
    }

    let handshakes: CaseResult[] = []
    if (runs('handshakes')) {
      const picked = new Set(list(args.cases, caseIds, 'bare', caseIds))
      const cases = fixtures.handshakeCases.filter((kase) => picked.has(kase.id))
      const servers = new Map<ServerKey, ServerProcess>()
      try {
        for (const kase of cases) {
          if (!servers.has(kase.server)) servers.set(kase.server, await ServerProcess.start(fixtures.servers[kase.server], placement))
        }
        log(`${cases.length} cases x ${settings.repetitions} repetitions x ${int(settings.handshakes)} handshakes, ${settings.concurrency} in flight, ${int(settings.warmup)} warm-up each`)
        handshakes = await runHandshakeSuite(cases, servers, settings, log)
      } finally {
        await Promise.all([...servers.values()].map((server) => server.stop()))
      }
    }

    let messages: MessageResult[] = []
    if (runs('messages')) {
      const messageSettings = {
        repetitions: settings.repetitions,
        messages: settings.messages,
        warmup: Math.max(settings.messageClients, Math.round(settings.messages / 4)),
        clients: settings.messageClients,
        window: settings.messageWindow,
        size: 64
      }
      log(`message suite: ${fixtures.messageCases.length} echo servers x ${settings.repetitions} repetitions x ${int(settings.messages)} messages of 64 bytes, ` +
        `${settings.messageClients} connections with ${settings.messageWindow} in flight each`)
      messages = await runMessageSuite(fixtures.messageCases, placement, messageSettings, log)
    }

    let fleet: FleetResult | undefined
    if (runs('fleet')) {
      if (redisAvailable()) {
        const handshakeSettings = { repetitions: settings.repetitions, handshakes: settings.handshakes, warmup: settings.warmup, concurrency: settings.concurrency }
        fleet = await runFleetSuite(fixtures.fleet, placement, { handshakes: handshakeSettings, fanoutClients: settings.fanoutClients, fanoutRounds: settings.fanoutRounds, fanoutInstances: 3 }, log)
      } else {
        log(`fleet suite skipped: no redis-server at ${redisServerPath} (apt-get install redis-server, or set REDIS_SERVER_BIN)`)
      }
    }

    const idle: IdleResult[] = []
    let pingPair: PingPairResult | undefined
    const idleSettings = { connections: settings.connections, windowMs: settings.windowMs, warmup: Math.min(settings.warmup, 1000), concurrency: settings.concurrency }
    if (runs('idle')) {
      const picked = new Set(list(args.idle, fixtures.idleCases.filter((kase) => kase.quick || !quick).map((kase) => kase.id), 'idle-bare', idleIds))
      log(`idle suite: ${int(settings.connections)} connections, ${settings.windowMs} ms window`)
      for (const kase of fixtures.idleCases) {
        if (picked.has(kase.id)) idle.push(await runIdleCase(kase, placement, idleSettings, log))
      }
      const pingGuard = fixtures.idleCases.find((kase) => kase.id === 'ping-guard')!
      const pingTimer = fixtures.idleCases.find((kase) => kase.id === 'ping-timer')!
      if (picked.has(pingGuard.id) && picked.has(pingTimer.id)) {
        const windows = quick ? 3 : 5
        log(`ping servers side by side: ${windows} windows of ${settings.windowMs / 2} ms`)
        pingPair = await runPingPair(pingGuard, pingTimer, placement, { ...idleSettings, windowMs: settings.windowMs / 2 }, windows, log)
      }
    }

    const checks = checkBudgets(handshakes, idle, pingPair, { messages, fleet })
    const joseFloor = compareToJose(handshakes)
    const peers = comparePeers(handshakes, new Map(fixtures.handshakeCases.flatMap((kase) => kase.peerOf === undefined ? [] : [[kase.id, kase.peerOf] as const])))
    host.loadAverageAtEnd = loadavg().map((value) => Number(value.toFixed(2)))
    const durationS = Math.round((Date.now() - started) / 1000)
    const json = JSON.stringify({ mode, machine: host, settings, durationS, handshakes, messages, fleet, idle, pingPair, budgets: checks, joseFloor, peers, jwksRequests: fixtures.jwks.requests() }, null, 2) + '\n'
    if (args.save !== undefined) writeFileSync(args.save, json)
    // Relative to the working directory when given; the default is the repository's docs/.
    const svgFile = args.svg !== undefined ? resolve(args.svg) : mode === 'full' ? fileURLToPath(new URL('../../docs/bench.svg', import.meta.url)) : undefined
    if (svgFile !== undefined && (handshakes.length > 0 || idle.length > 0 || fleet !== undefined)) {
      mkdirSync(dirname(svgFile), { recursive: true })
      writeFileSync(svgFile, renderChart({
        subtitle: `${mode} mode, ${host.cpuModel as string}, ${host.cpus as number} CPUs, Node ${process.version}; ${settings.repetitions} repetitions of ${int(settings.handshakes)} handshakes per case` +
          (idle.length > 0 ? `, ${int(settings.connections)} idle connections` : ''),
        handshakes,
        fleet,
        idle,
        budgets: handshakeRatioBudgets(),
        peers: new Set(fixtures.handshakeCases.filter((kase) => kase.peerOf !== undefined).map((kase) => kase.id))
      }))
      log(`chart written to ${svgFile}`)
    }
    if (args.json) {
      process.stdout.write(json)
    } else {
      const out: string[] = [
        `fastify-ws-guard bench, ${mode} mode, ${durationS} s: ${host.cpuModel as string}, ${host.cpus as number} CPUs, ${host.memoryGB as number} GB, Node ${process.version}, ` +
          (placement.pinned ? `server on CPU ${placement.serverCpu}, load generator on CPU ${placement.clientCpu}` : 'processes not pinned') +
          `, load average ${(host.loadAverageAtStart as number[]).join(' ')} at start, ${(host.loadAverageAtEnd as number[]).join(' ')} at end`
      ]
      if (handshakes.length > 0) {
        out.push('', `Handshakes: medians of ${settings.repetitions} interleaved repetitions of ${int(settings.handshakes)} (min–max), ${settings.concurrency} in flight; ` +
          'x bare: paired with bare in the same repetition; µs/hs: server CPU per handshake (whole process; main thread; bg: other threads, libuv pool and V8 workers); ' +
          'srv busy: server CPU / wall time (well under 100%: other processes held the CPUs, and handshakes/s says less than server µs/hs)', '', handshakeTable(handshakes, checks))
      }
      if (messages.length > 0) {
        out.push('', `Messages: an echo route, medians of ${settings.repetitions} interleaved repetitions of ${int(settings.messages)} messages of 64 bytes (min–max), ` +
          `${settings.messageClients} connections with ${settings.messageWindow} in flight each; x bare and x guard: paired with bare, and with the guard without message guards, ` +
          'in the same repetition; µs/msg: server CPU per echoed message; client µs: the load generator\'s', '', messageTable(messages, checks))
      }
      if (fleet !== undefined) {
        out.push('', 'Fleet: an authenticated route (HS256) with maxConnectionsPerUser, its leases in the MemoryStore or in a RedisStore (node-redis, redis-server on 127.0.0.1 ' +
          `pinned with the load generator), beside bare; medians of ${settings.repetitions} interleaved repetitions of ${int(settings.handshakes)} (min–max); ` +
          `x memory: paired with the MemoryStore in the same repetition; redis µs/hs: the redis-server process's CPU per handshake (/proc/<pid>/${fleet.redisCpuSource === 'schedstat' ? 'task/*/schedstat' : 'stat'})`,
        '', fleetTable(fleet, checks))
        if (fleet.fanout !== undefined) {
          out.push('', `Revocation fan-out: ${int(fleet.fanout.clients)} idle clients of one user over ${fleet.fanout.instances} guard instances sharing the Redis store; ` +
            'revoke({ sub }) on the first; ms from the call to each client\'s 4401 close frame', '', fanoutTable(fleet, checks))
        }
      } else if (runs('fleet')) {
        out.push('', `Fleet: skipped, no redis-server at ${redisServerPath}`)
      }
      if (idle.length > 0) {
        out.push('', `Idle connections: ${int(settings.connections)} per server, memory after GC, CPU and event-loop delay over ${settings.windowMs / 1000} s ` +
          '(own: each delay capped by the CPU the server used meanwhile, so time other processes held its CPU does not count)', '', idleTable(idle, checks))
      }
      if (pingPair !== undefined) out.push('', pingPairLine(pingPair))
      if (joseFloor.length > 0) {
        out.push('', 'What jose alone costs: the naive jwtVerify hook against the guard, server CPU medians', '', referenceTable(joseFloor))
      }
      if (peers.length > 0) {
        out.push('', 'What you would use instead: the same fresh tokens through @fastify/jwt, socket.io and the naive jose hook, from the handshake run above; ' +
          'x bare and x guard: paired with bare, and with the guard\'s case of the same algorithm, in the same repetition (x guard > 1: more handshakes/s, or more CPU, than the guard)',
        '', peerTable(peers))
      }
      out.push('', 'Budgets', '', budgetTable(checks))
      process.stdout.write(out.join('\n') + '\n')
    }
    if (args.check && checks.some((check) => !check.pass)) process.exitCode = 1
  } finally {
    await fixtures.jwks.close()
  }
}

/** `--versions`: one quick handshake run per Node binary, then the ratios side by side. */
async function versions (): Promise<void> {
  const caseList = args.cases ?? versionCases.join(',')
  const passArgs = ['--quick', '--cases', caseList]
  for (const name of ['repetitions', 'handshakes', 'warmup', 'concurrency'] as const) {
    if (args[name] !== undefined) passArgs.push(`--${name}`, args[name])
  }
  const started = Date.now()
  const { runs } = await runVersions(passArgs, caseList.split(',').map((id) => id.trim()), log)
  const json = JSON.stringify({ mode: 'versions', nodeRoot, args: passArgs, durationS: Math.round((Date.now() - started) / 1000), runs }, null, 2) + '\n'
  const file = args.save ?? join(tmpdir(), `ws-guard-bench-versions-${process.pid}.json`)
  writeFileSync(file, json)
  log(`results written to ${file}`)
  if (args.json) process.stdout.write(json)
  else {
    process.stdout.write(`fastify-ws-guard bench, handshakes per Node version (${passArgs.join(' ')}), ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} CPUs\n\n` + versionTables(runs, caseList.split(',').map((id) => id.trim())) + '\n')
  }
  if (runs.some((run) => run.error !== undefined)) process.exitCode = 1
}

main().catch((err: unknown) => {
  log(`failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
  killChildren()
  process.exit(1)
})
