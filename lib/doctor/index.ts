import type { Socket } from 'node:net'
import { doctorHelp, parseDoctorArgs } from './args.js'
import { ProbeConnection } from './probe-connection.js'
import { resolveHost } from './dns.js'
import { listen } from './listen.js'
import { redact } from './redact.js'
import { buildReport, renderJson, renderText, type Report } from './report.js'
import { skipped } from './stage.js'
import { connectTcp } from './tcp.js'
import { startTls } from './tls.js'
import { runToken } from './token.js'
import { exitCodes, stageNames, type DoctorIo, type DoctorOptions, type StageResult } from './types.js'
import { upgrade } from './upgrade.js'
import { checkUrl } from './url.js'

export { exitCodes, stageNames } from './types.js'
export type { DoctorIo, DoctorOptions, Finding, StageName, StageResult, Verdict } from './types.js'
export type { Report } from './report.js'

export const cliHelp = `Usage: fastify-ws-guard <command>

Commands:
  doctor <ws:// or wss:// URL> [options]
      walk a WebSocket handshake step by step and say why it fails
      (fastify-ws-guard doctor --help for its options)
  token (--secret-env VAR | --private-key FILE) --sub S [options]
      print a signed JWT to test your own app locally
      (fastify-ws-guard token --help for its options)
`

/**
 * The `fastify-ws-guard` command line: dispatches to its subcommands. Returns the exit code.
 *
 * @example
 * ```ts
 * process.exitCode = await runCli(process.argv.slice(2), process)
 * ```
 */
export async function runCli (argv: readonly string[], io: DoctorIo): Promise<number> {
  const [command, ...rest] = argv
  if (command === 'doctor') return await runDoctor(rest, io)
  if (command === 'token') return await runToken(rest, io)
  if (command === '--help' || command === '-h' || command === 'help') {
    io.stdout.write(cliHelp)
    return exitCodes.ok
  }
  io.stderr.write(`${command === undefined ? 'a command is required' : `unknown command: ${command}`}\n\n${cliHelp}`)
  return exitCodes.usage
}

/**
 * `fastify-ws-guard doctor <url> [options]`: diagnoses the handshake, prints the report (text,
 * or JSON with `--json`) and returns the exit code: 0 when the handshake succeeded, else the
 * code of the first failing stage (see `exitCodes`).
 *
 * @example
 * ```ts
 * const code = await runDoctor(['ws://127.0.0.1:3000/chat', '--listen', '1000'], process)
 * ```
 */
export async function runDoctor (argv: readonly string[], io: DoctorIo): Promise<number> {
  const parsed = parseDoctorArgs(argv, io.env ?? process.env)
  if (parsed.kind === 'help') {
    io.stdout.write(doctorHelp)
    return exitCodes.ok
  }
  if (parsed.kind === 'error') {
    io.stderr.write(`fastify-ws-guard doctor: ${parsed.message}\n\n${doctorHelp}`)
    return exitCodes.usage
  }
  const { options } = parsed
  const report = await diagnose(options)
  io.stdout.write(options.json ? renderJson(report, options.token) : renderText(report, options.token))
  return report.exitCode
}

/** Runs the stages in order; the first failure stops the walk, the stages after it are `skip`. */
export async function diagnose (options: DoctorOptions): Promise<Report> {
  const results: StageResult[] = []
  await walk(options, results)
  const stages = stageNames.map((name) => results.find((result) => result.stage === name) ?? skipped(name, 'not reached'))
  return buildReport(redact(options.url, options.token), stages)
}

async function walk (options: DoctorOptions, results: StageResult[]): Promise<void> {
  const url = checkUrl(options)
  results.push(url.result)
  if (url.target === undefined) return
  const target = url.target
  const dns = await resolveHost(target, options.timeout)
  results.push(dns.result)
  if (dns.addresses === undefined) return
  const tcp = await connectTcp(dns.addresses, target.port, options.timeout)
  results.push(tcp.result)
  if (tcp.socket === undefined) return
  let socket: Socket = tcp.socket
  try {
    if (target.secure) {
      const tls = await startTls(target, socket, options)
      results.push(tls.result)
      if (tls.socket === undefined) return
      socket = tls.socket
    } else {
      results.push(skipped('tls', 'ws:// is not encrypted'))
    }
    const conn = new ProbeConnection(socket)
    const opened = await upgrade(target, conn, options, tcp.address!)
    results.push(opened.result)
    if (!opened.open) return
    results.push(await listen(conn, options))
  } finally {
    socket.destroy()
    tcp.socket.destroy()
  }
}
