import { once } from 'node:events'
import type { IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'
import { WebSocketServer, type ServerOptions, type WebSocket } from 'ws'
import { runDoctor, type Report, type StageName, type StageResult, type Verdict } from '../../lib/doctor/index.js'
import type { DoctorIo } from '../../lib/doctor/types.js'

/** Doctor I/O that keeps what was written, with `env` as the environment. */
export function capture (env: Record<string, string> = {}): DoctorIo & { out: () => string, err: () => string } {
  const out: string[] = []
  const err: string[] = []
  return {
    stdout: { write: (text: string) => out.push(text) },
    stderr: { write: (text: string) => err.push(text) },
    env,
    out: () => out.join(''),
    err: () => err.join('')
  }
}

/** Runs the doctor in-process and returns its text output. */
export async function doctorText (args: readonly string[], env: Record<string, string> = {}): Promise<{ code: number, text: string }> {
  const io = capture(env)
  const code = await runDoctor(args, io)
  return { code, text: io.out() }
}

export interface Run { code: number, report: Report, json: string }

/** Runs the doctor in-process with `--json` and parses its one report. */
export async function doctor (args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  const { code, text } = await doctorText([...args, '--json'], env)
  return { code, report: JSON.parse(text) as Report, json: text }
}

export function stage (run: Run, name: StageName): StageResult {
  return run.report.stages.find((result) => result.stage === name)!
}

/** The stage's verdict and the exit code, in the process's answer and in the report. */
export function expect (t: Test, run: Run, name: StageName, verdict: Verdict, exitCode: number): void {
  t.equal(stage(run, name).verdict, verdict, `${name}: ${verdict}`)
  t.equal(run.code, exitCode, `exit ${exitCode}`)
  t.equal(run.report.exitCode, exitCode)
}

/** A plain ws server on port 0, closed in teardown; returns its port. */
export async function wsServer (t: Test, options: ServerOptions, onConnection: (socket: WebSocket, request: IncomingMessage) => void = () => {}, host = '127.0.0.1'): Promise<number> {
  const wss = new WebSocketServer({ port: 0, host, ...options })
  wss.on('connection', onConnection)
  await once(wss, 'listening')
  t.teardown(async () => {
    for (const client of wss.clients) client.terminate()
    await new Promise((resolve) => wss.close(resolve))
  })
  return (wss.address() as AddressInfo).port
}
