/** The stages of a diagnosis, in the order they run. */
export const stageNames = ['url', 'dns', 'tcp', 'tls', 'upgrade', 'listen'] as const
export type StageName = typeof stageNames[number]

/** `skip`: the stage did not apply or was not reached. */
export type Verdict = 'ok' | 'warn' | 'fail' | 'skip'

/** One thing a stage found wrong: what it means and what to do about it. */
export interface Finding {
  readonly verdict: 'warn' | 'fail'
  readonly cause: string
  readonly fix: string
  /** A stable code when there is one: an errno, a TLS error, a `FST_WS_GUARD_*` code. */
  readonly code?: string | undefined
}

export interface StageResult {
  readonly stage: StageName
  readonly verdict: Verdict
  /** Duration in ms; `null` for a stage that did not run. */
  readonly ms: number | null
  /** The one-line outcome. */
  readonly summary: string
  /** Evidence: request and response lines, certificate fields, ping times. */
  readonly details: readonly string[]
  readonly findings: readonly Finding[]
  /** The same facts, structured, for `--json`. */
  readonly data: Readonly<Record<string, unknown>>
}

/**
 * Exit codes: one per stage that can fail, so scripts can branch on where the handshake broke.
 * 1 is left to Node for an unexpected crash.
 */
export const exitCodes = {
  ok: 0,
  usage: 2,
  url: 3,
  dns: 4,
  tcp: 5,
  tls: 6,
  upgrade: 7,
  listen: 8
} as const

/** Where the token goes: `Authorization: Bearer`, a `bearer.<token>` subprotocol, or `?access_token=`. */
export const tokenPlacements = ['header', 'protocol', 'query'] as const
export type TokenPlacement = typeof tokenPlacements[number]

/** Validated command-line options. */
export interface DoctorOptions {
  readonly url: string
  readonly token: string | undefined
  readonly tokenIn: TokenPlacement
  readonly origin: string | undefined
  readonly protocols: readonly string[]
  readonly ca: string | undefined
  readonly insecure: boolean
  /** Bound on each stage, in ms. */
  readonly timeout: number
  /** How long to stay connected after the upgrade, in ms; 0 skips the stage. */
  readonly listen: number
  readonly json: boolean
}

/** Where the doctor writes. `env` is read for `--token-env`. */
export interface DoctorIo {
  readonly stdout: { write: (text: string) => unknown }
  readonly stderr: { write: (text: string) => unknown }
  readonly env?: Readonly<Record<string, string | undefined>>
}
