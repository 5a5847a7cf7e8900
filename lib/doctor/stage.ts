import type { Finding, StageName, StageResult, Verdict } from './types.js'

interface ResultParts {
  details?: readonly string[]
  findings?: readonly Finding[]
  data?: Readonly<Record<string, unknown>>
}

/** A stage that ran: its verdict is the worst of its findings, `ok` without any. */
export function stageResult (stage: StageName, ms: number, summary: string, parts: ResultParts = {}): StageResult {
  const findings = parts.findings ?? []
  return { stage, verdict: worst(findings), ms, summary, details: parts.details ?? [], findings, data: parts.data ?? {} }
}

/** A stage that did not apply or was not reached. */
export function skipped (stage: StageName, summary: string, data: Readonly<Record<string, unknown>> = {}): StageResult {
  return { stage, verdict: 'skip', ms: null, summary, details: [], findings: [], data }
}

function worst (findings: readonly Finding[]): Verdict {
  if (findings.some((finding) => finding.verdict === 'fail')) return 'fail'
  return findings.length > 0 ? 'warn' : 'ok'
}

/** A one-finding failure, the common case. */
export function failed (code: string | undefined, cause: string, fix: string): Finding {
  return { verdict: 'fail', code, cause, fix }
}
