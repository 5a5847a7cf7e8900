import { redact } from './redact.js'
import { exitCodes, type StageName, type StageResult } from './types.js'

/** The outcome of one diagnosis, as `--json` prints it. */
export interface Report {
  /** The URL diagnosed, redacted. */
  readonly url: string
  readonly ok: boolean
  readonly exitCode: number
  /** The first stage that failed, `null` when the handshake succeeded. */
  readonly failedStage: StageName | null
  readonly warnings: number
  readonly stages: readonly StageResult[]
}

export function buildReport (url: string, stages: readonly StageResult[]): Report {
  const failure = stages.find((stage) => stage.verdict === 'fail')
  const warnings = stages.reduce((sum, stage) => sum + stage.findings.filter((f) => f.verdict === 'warn').length, 0)
  return {
    url,
    ok: failure === undefined,
    exitCode: failure === undefined ? exitCodes.ok : exitCodes[failure.stage],
    failedStage: failure === undefined ? null : failure.stage,
    warnings,
    stages
  }
}

// Evidence and findings sit under the stage's name.
const indent = ' '.repeat(8)

/** One line per stage, its evidence and findings indented below it, then the outcome. */
export function renderText (report: Report, token: string | undefined): string {
  const lines = [`fastify-ws-guard doctor ${report.url}`, '']
  for (const stage of report.stages) {
    const ms = stage.ms === null ? '-' : `${stage.ms.toFixed(1)} ms`
    lines.push(`  ${stage.verdict.padEnd(4)}  ${stage.stage.padEnd(7)}  ${ms.padStart(10)}  ${stage.summary}`)
    for (const detail of stage.details) lines.push(`${indent}${detail}`)
    for (const finding of stage.findings) {
      lines.push(`${indent}${finding.verdict === 'fail' ? 'cause' : 'warn '}: ${finding.cause}`)
      lines.push(`${indent}fix  : ${finding.fix}`)
    }
  }
  const outcome = report.failedStage === null
    ? `handshake ok, ${report.warnings} warning(s)`
    : `failed at ${report.failedStage}`
  lines.push('', `${outcome} (exit ${report.exitCode})`, '')
  // Whatever a server sent is shown, but never its control characters (terminal escapes).
  // eslint-disable-next-line no-control-regex
  return redact(lines.join('\n'), token).replace(/[\x00-\x09\x0b-\x1f\x7f]/g, '?')
}

export function renderJson (report: Report, token: string | undefined): string {
  return redact(JSON.stringify(report, null, 2), token) + '\n'
}
