import type { ClientOptions } from 'ws'
import type { Test } from 'tap'
import { tryConnect, type Outcome } from './clients.js'
import type { RawResponse } from './raw.js'

/** The JSON body every guard refusal carries. */
export interface RefusalBody {
  statusCode: number
  code: string
  error: string
  message: string
}

/** A guard refusal as the client saw it. */
export interface Refusal {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: RefusalBody
  /** The body as received. */
  raw: string
}

const none: RefusalBody = { statusCode: 0, code: '', error: '', message: '' }

/**
 * Asserts a guard refusal, from a raw exchange or a ws client outcome: the status,
 * `Connection: close` (`upgrade, close` on a 426), a JSON body `{ statusCode, code, error, message }` with exactly those
 * keys. Returns the refusal for more checks.
 */
export function assertRefusal (t: Test, response: RawResponse | Outcome | { kind: 'timeout' }, status: number, code: string): Refusal {
  if ('kind' in response && response.kind !== 'refused') {
    t.fail(`expected an HTTP ${status} refusal, got ${JSON.stringify(response.kind === 'open' ? { kind: 'open', protocol: response.protocol } : response)}`)
    if (response.kind === 'open') response.socket.terminate()
    return { status: 0, headers: {}, body: none, raw: '' }
  }
  const { status: actual, headers, body: raw } = response as { status: number, headers: Refusal['headers'], body: string }
  t.equal(actual, status, `status ${status}`)
  // A 426 also names the upgrade it asks for.
  t.equal(headers.connection, status === 426 ? 'upgrade, close' : 'close', 'the server closes the connection')
  t.match(String(headers['content-type']), /^application\/json/, 'JSON body')
  let body: RefusalBody
  try {
    body = JSON.parse(raw)
  } catch {
    t.fail(`body is not JSON: ${raw}`)
    return { status: actual, headers, body: none, raw }
  }
  t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], 'body keys')
  t.equal(body.statusCode, status, 'the body repeats the status')
  t.equal(body.code, code, `code ${code}`)
  t.equal(typeof body.error, 'string', 'body.error')
  t.equal(typeof body.message, 'string', 'body.message')
  return { status: actual, headers, body, raw }
}

/** Connects and expects an HTTP refusal with `status` and `code`; returns it for more checks. */
export async function expectRefused (t: Test, url: string, status: number, code: string, protocols: string | string[] = [], options: ClientOptions = {}): Promise<Refusal> {
  return assertRefusal(t, await tryConnect(url, protocols, options), status, code)
}

/** Everything a refusal shows a client: headers and body. */
export function refusalText (refusal: Refusal): string {
  return JSON.stringify(refusal.headers) + refusal.raw
}

export interface Challenge {
  scheme: string
  params: Record<string, string>
}

/** Parses `Bearer realm="x", error="y", error_description="z"` (RFC 6750 §3). */
function parseChallenge (value: string | string[] | undefined): Challenge {
  if (typeof value !== 'string') throw new Error(`expected one WWW-Authenticate header, got ${JSON.stringify(value)}`)
  const space = value.indexOf(' ')
  const scheme = value.slice(0, space)
  const params: Record<string, string> = {}
  const pattern = /([a-z_]+)="([^"\\]*)"(?:, |$)/gy
  pattern.lastIndex = space + 1
  let end = space + 1
  let match: RegExpExecArray | null
  while ((match = pattern.exec(value)) !== null) {
    params[match[1]!] = match[2]!
    end = pattern.lastIndex
  }
  if (end !== value.length) throw new Error(`malformed challenge: ${value}`)
  return { scheme, params }
}

/** Asserts the `WWW-Authenticate` challenge of a refusal: `error` undefined for "no error attribute". */
export function checkChallenge (t: Test, refusal: Refusal, error: string | undefined, realm = 'websocket'): Challenge {
  const challenge = parseChallenge(refusal.headers['www-authenticate'])
  t.equal(challenge.scheme, 'Bearer', 'Bearer challenge')
  t.equal(challenge.params.realm, realm, 'realm')
  if (error === undefined) {
    t.same(Object.keys(challenge.params), ['realm'], 'no error attribute without a token (RFC 6750 §3.1)')
  } else {
    t.equal(challenge.params.error, error, `error="${error}"`)
    t.type(challenge.params.error_description, 'string', 'an error_description')
    t.ok(challenge.params.error_description!.length > 0 && challenge.params.error_description!.length <= 200, 'a short error_description')
  }
  return challenge
}
