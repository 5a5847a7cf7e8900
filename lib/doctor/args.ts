import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { tokenPlacements, type DoctorOptions, type TokenPlacement } from './types.js'

export type ParsedArgs =
  | { readonly kind: 'run', readonly options: DoctorOptions }
  | { readonly kind: 'help' }
  | { readonly kind: 'error', readonly message: string }

export const defaultTimeout = 5000
export const defaultListen = 3000

// What may go into a request header we write: visible ASCII, so no CRLF injection and no spaces.
const headerSafe = /^[\x21-\x7e]+$/

export const doctorHelp = `Usage: fastify-ws-guard doctor <ws:// or wss:// URL> [options]

Walks a WebSocket handshake step by step against any server and says which step
fails, the likely cause and the fix. Stages: url, dns, tcp, tls, upgrade, listen.

Options:
  --token T           bearer token to send (never printed)
  --token-env VAR     read the token from environment variable VAR instead
  --token-in WHERE    header (Authorization: Bearer, the default), protocol
                      (subprotocol bearer.<token>, as browsers send it) or
                      query (?access_token=<token>)
  --origin O          send Origin: O, as a browser on page O does
  --protocol P        offer subprotocol P (repeatable)
  --ca FILE           also trust the PEM certificate(s) in FILE
  --insecure          go on past certificate errors, reported as warnings
  --timeout MS        bound on each stage (default ${defaultTimeout})
  --listen MS         stay connected after the upgrade to watch pings and
                      close frames (default ${defaultListen}; 0 skips the stage)
  --json              print one JSON report instead of text
  -h, --help          show this help

Exit codes:
  0  the handshake succeeded (warnings may have been reported)
  1  unexpected error (a bug: please report it)
  2  usage error
  3  url stage failed       6  tls stage failed
  4  dns stage failed       7  upgrade stage failed
  5  tcp stage failed       8  listen stage failed (after the upgrade)
`

/** Parses and validates `doctor`'s arguments; reads `--token-env` from `env` and the `--ca` file. */
export function parseDoctorArgs (argv: readonly string[], env: Readonly<Record<string, string | undefined>>): ParsedArgs {
  try {
    return parse(argv, env)
  } catch (err) {
    return { kind: 'error', message: (err as Error).message }
  }
}

function parse (argv: readonly string[], env: Readonly<Record<string, string | undefined>>): ParsedArgs {
  const { values, positionals } = parseOptions({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      token: { type: 'string' },
      'token-env': { type: 'string' },
      'token-in': { type: 'string' },
      origin: { type: 'string' },
      protocol: { type: 'string', multiple: true, default: [] },
      ca: { type: 'string' },
      insecure: { type: 'boolean', default: false },
      timeout: { type: 'string' },
      listen: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) return { kind: 'help' }
  if (positionals.length !== 1) throw new Error(`expected one ws:// or wss:// URL, got ${positionals.length} arguments`)
  const token = readToken(values.token, values['token-env'], env)
  const tokenIn = values['token-in'] ?? 'header'
  if (!tokenPlacements.includes(tokenIn as TokenPlacement)) throw new Error(`--token-in must be one of ${tokenPlacements.join(', ')}, got ${tokenIn}`)
  if (values['token-in'] !== undefined && token === undefined) throw new Error('--token-in needs --token or --token-env')
  for (const [name, value] of [['--origin', values.origin], ...values.protocol.map((p) => ['--protocol', p])]) {
    if (value !== undefined && !headerSafe.test(value)) throw new Error(`${name} contains spaces or control characters: ${JSON.stringify(value)}`)
  }
  return {
    kind: 'run',
    options: {
      url: positionals[0]!,
      token,
      tokenIn: tokenIn as TokenPlacement,
      origin: values.origin,
      protocols: values.protocol,
      ca: values.ca === undefined ? undefined : readCa(values.ca),
      insecure: values.insecure,
      timeout: integer(values.timeout, defaultTimeout, 1, '--timeout'),
      listen: integer(values.listen, defaultListen, 0, '--listen'),
      json: values.json
    }
  }
}

/**
 * `parseArgs`, strict, as both subcommands call it; a mistyped option or a missing value throws
 * one short line (`unknown option --tokn; did you mean --token?`, `--timeout needs a value`)
 * instead of Node's message.
 */
export function parseOptions<T extends ParseArgsConfig & { options: Options }> (config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config)
  } catch {
    // The same arguments read leniently, as tokens, to find the one strict parsing refused:
    // strict parsing throws only for an unknown option, a missing or unwanted value, or a
    // positional where none is allowed, and `refusal` names each of them, so one is found.
    const { tokens } = parseArgs({ args: config.args, options: config.options, strict: false, tokens: true, allowPositionals: true })
    throw new Error(tokens.map((token) => refusal(token, config)).find((message) => message !== undefined)!)
  }
}

type Options = NonNullable<ParseArgsConfig['options']>
type ArgToken = NonNullable<ReturnType<typeof parseArgs<{ tokens: true, strict: false, allowPositionals: true }>>['tokens']>[number]

function refusal (token: ArgToken, config: ParseArgsConfig & { options: Options }): string | undefined {
  if (token.kind === 'option-terminator') return undefined
  if (token.kind === 'positional') return config.allowPositionals === true ? undefined : `unexpected argument ${JSON.stringify(token.value)}`
  const option = config.options[token.name]
  if (option === undefined) return unknownOption(token.rawName, Object.keys(config.options))
  // Strict parsing takes a value that starts with a dash only inline (--origin=-x).
  if (option.type === 'string' && (token.value === undefined || (!token.inlineValue && token.value.startsWith('-')))) return `${token.rawName} needs a value`
  if (option.type === 'boolean' && token.value !== undefined) return `${token.rawName} takes no value`
  return undefined
}

/** `unknown option --tokn`, with the closest known option when it is near enough to be a typo. */
function unknownOption (raw: string, known: readonly string[]): string {
  const name = raw.replace(/^--?/, '')
  const best = known.map((candidate) => ({ candidate, distance: editDistance(name, candidate) }))
    .reduce((a, b) => b.distance < a.distance ? b : a)
  // Near enough: one edit per three letters, at least one.
  return best.distance <= Math.max(1, Math.floor(name.length / 3)) ? `unknown option ${raw}; did you mean --${best.candidate}?` : `unknown option ${raw}`
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function editDistance (a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length]!
}

function readToken (token: string | undefined, variable: string | undefined, env: Readonly<Record<string, string | undefined>>): string | undefined {
  if (variable === undefined) {
    // The token's value is never echoed, not even in an error.
    if (token !== undefined && !headerSafe.test(token)) throw new Error('--token contains spaces or control characters')
    return token
  }
  if (token !== undefined) throw new Error('give --token or --token-env, not both')
  const value = env[variable]
  if (value === undefined || !headerSafe.test(value)) throw new Error(`environment variable ${variable} is unset, empty, or holds spaces or control characters`)
  return value
}

function integer (text: string | undefined, fallback: number, min: number, name: string): number {
  if (text === undefined) return fallback
  if (!/^\d{1,9}$/.test(text) || Number(text) < min) {
    throw new Error(`${name} must be a whole number of milliseconds >= ${min}, got ${text}`)
  }
  return Number(text)
}

/** The PEM text of `--ca`, checked here so that a bad file is a usage error, not a TLS one. */
function readCa (file: string): string {
  let pem: string
  try {
    pem = readFileSync(file, 'utf8')
  } catch (err) {
    throw new Error(`cannot read --ca ${file}: ${(err as NodeJS.ErrnoException).code}`)
  }
  try {
    // eslint-disable-next-line no-new
    new X509Certificate(pem)
  } catch {
    throw new Error(`--ca ${file} holds no PEM certificate`)
  }
  return pem
}
