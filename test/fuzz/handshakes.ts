/*
 * Mutated WebSocket handshakes, from a seed: the same seed gives the same requests, so a
 * failure found once is found again. Each case is the bytes to send, how to send them (at
 * once, split, slowly) and whether the request, were it well formed, carries a valid token.
 */

/** A small, fast, seeded PRNG (mulberry32): deterministic across Node versions. */
export function random (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface FuzzTarget {
  readonly host: string
  /** A token the target accepts. */
  readonly token: string
  /** An Origin on the allowlist. */
  readonly origin: string
}

export interface FuzzCase {
  /** Which mutation made it, for the report. */
  readonly kind: string
  readonly bytes: Buffer
  /** How the bytes go out: at once, in a few chunks, or a few bytes at a time with pauses. */
  readonly delivery: 'whole' | 'split' | 'slow'
}

type Header = [string, string]

const paths = ['/ws', '/ws/1', '/close/1', '/plain', '/nope', '/ws/', '/ws/%zz', '/%zz', '/ws/' + 'p'.repeat(80), 'http://h/ws/1#x', '/ws?access_token=TOKEN', '/ws/1?x=1&access_token=TOKEN']
const protocols = ['chat.v1', 'bearer', 'bearer.TOKEN', 'Bearer.TOKEN', 'BEARER.TOKEN', 'chat.v1, bearer.TOKEN', 'chat.v1, chat.v1', 'a b', '', 'chat.v2']
const versions = ['13', '8', '', '13, 8', 'x']
const keys = ['dGhlIHNhbXBsZSBub25jZQ==', 'short', '', 'dGhlIHNhbXBsZSBub25jZQ', 'dGhlIHNhbXBsZSBub25jZQ==x']

/** One well-formed handshake, the base that mutations start from. */
function base (target: FuzzTarget, pick: <T>(list: readonly T[]) => T): { line: string, headers: Header[] } {
  const headers: Header[] = [
    ['Host', target.host],
    ['Upgrade', 'websocket'],
    ['Connection', 'Upgrade'],
    ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
    ['Sec-WebSocket-Version', '13'],
    ['Origin', target.origin]
  ]
  const where = pick(['header', 'protocol', 'none', 'query'] as const)
  if (where === 'header') headers.push(['Authorization', 'Bearer TOKEN'])
  if (where === 'protocol') headers.push(['Sec-WebSocket-Protocol', 'chat.v1, bearer.TOKEN'])
  const path = where === 'query' ? '/ws/1?access_token=TOKEN' : pick(['/ws', '/ws/1', '/close/1'])
  return { line: `GET ${path} HTTP/1.1`, headers }
}

const mutations: ReadonlyArray<(line: string, headers: Header[], next: () => number, pick: <T>(list: readonly T[]) => T) => { line: string, headers: Header[], tail?: string }> = [
  // Valid, for the accepted path and the handler count.
  (line, headers) => ({ line, headers }),
  (line, headers, next) => ({ line, headers: shuffle(headers, next) }),
  (line, headers, _next, pick) => {
    const at = headers.findIndex(([name]) => name === pick(headers)[0])
    return { line, headers: [...headers.slice(0, at), ...headers.slice(at + 1)] }
  },
  (line, headers, _next, pick) => ({ line, headers: [...headers, pick(headers)] }),
  (line, headers, next) => ({ line, headers: headers.map(([name, value]) => [casing(name, next), next() < 0.3 ? casing(value, next) : value]) }),
  (_line, headers, _next, pick) => ({ line: `GET ${pick(paths)} HTTP/1.1`, headers }),
  (line, headers, _next, pick) => ({ line, headers: replace(headers, 'Sec-WebSocket-Protocol', pick(protocols)) }),
  (line, headers, _next, pick) => ({ line, headers: replace(headers, 'Sec-WebSocket-Version', pick(versions)) }),
  (line, headers, _next, pick) => ({ line, headers: replace(headers, 'Sec-WebSocket-Key', pick(keys)) }),
  (line, headers, _next, pick) => ({ line, headers: replace(headers, 'Origin', pick(['https://evil.example', 'null', 'https://app.example.com, https://evil.example', 'https://' + 'o'.repeat(2000) + '.example', 'http://app.example.com', '%%'])) }),
  (line, headers, _next, pick) => ({ line, headers: replace(headers, 'Authorization', pick(['Bearer TOKEN', 'bearer  TOKEN', 'Bearer', 'Basic dXNlcjpwYXNz', 'Bearer TOKENx', 'Bearer ' + 'a'.repeat(9000), 'Bearer a.b.c'])) }),
  (line, headers, _next, pick) => ({ line, headers: [...headers, ['Authorization', pick(['Bearer TOKEN', 'Bearer other'])]] }),
  (line, headers, _next, pick) => ({ line, headers: replace(headers, 'Upgrade', pick(['WebSocket', 'websocket, h2c', 'h2c', ''])) }),
  (line, headers, _next, pick) => ({ line, headers: replace(headers, 'Connection', pick(['keep-alive, Upgrade', 'upgrade', 'close', 'Upgrade, close', ''])) }),
  // Near the limits of the parser and of the guard.
  (line, headers, next) => ({ line, headers: [...headers, ['X-Pad', 'x'.repeat(Math.floor(next() * 16_000))]] }),
  (line, headers, next) => ({ line, headers: [...headers, ...Array.from({ length: Math.floor(next() * 120) }, (_, i): Header => [`X-H${i}`, String(i)])] }),
  // Bytes no parser should like.
  (line, headers) => ({ line, headers: [...headers, ['X-Bin', '\xff\xfe\xc3\x28']] }),
  (line, headers) => ({ line, headers: [...headers, ['X-Nul', 'a\u0000b']] }),
  (line, headers) => ({ line, headers: [...headers, ['X-Fold', 'a\r\n b']] }),
  (line, headers) => ({ line: line.replace('HTTP/1.1', 'HTTP/1.0'), headers }),
  (line, headers) => ({ line: line.replace('GET', 'POST'), headers: [...headers, ['Content-Length', '5']], tail: 'hello' }),
  (line, headers) => ({ line, headers: [...headers, ['Content-Length', '5']], tail: 'hello' }),
  (line, headers) => ({ line, headers: [...headers, ['Transfer-Encoding', 'chunked']], tail: '5\r\nhello\r\n0\r\n\r\n' }),
  // Frames (or anything) right behind the handshake.
  (line, headers) => ({ line, headers, tail: '\x81\x85\x00\x00\x00\x00hello' }),
  (line, headers) => ({ line, headers, tail: '\x88\x80\x00\x00\x00\x00' }),
  (line, headers, next) => ({ line, headers, tail: garbage(next, 64) })
]

/** The cases of one campaign, `count` of them from `seed`; `TOKEN` becomes the valid token. */
export function * fuzzCases (target: FuzzTarget, seed: number, count: number): Generator<FuzzCase> {
  const next = random(seed)
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)]!
  for (let i = 0; i < count; i++) {
    const roll = next()
    const delivery = roll < 0.02 ? 'slow' : roll < 0.1 ? 'split' : 'whole'
    if (roll > 0.97) {
      yield { kind: 'garbage', bytes: Buffer.from(garbage(next, 1 + Math.floor(next() * 512)), 'latin1'), delivery }
      continue
    }
    const start = base(target, pick)
    const index = Math.floor(next() * mutations.length)
    const mutated = mutations[index]!(start.line, start.headers, next, pick)
    let text = `${mutated.line}\r\n${mutated.headers.map(([name, value]) => `${name}: ${value}`).join('\r\n')}\r\n\r\n${mutated.tail ?? ''}`
    if (roll > 0.94) text = text.slice(0, Math.floor(next() * text.length))
    if (roll > 0.91 && roll <= 0.94) text = `GET /plain HTTP/1.1\r\nHost: ${target.host}\r\n\r\n` + text
    yield { kind: `m${index}${roll > 0.94 ? '-truncated' : roll > 0.91 ? '-pipelined' : ''}`, bytes: Buffer.from(text.replaceAll('TOKEN', target.token), 'latin1'), delivery }
  }
}

function replace (headers: Header[], name: string, value: string): Header[] {
  const kept = headers.filter(([header]) => header !== name)
  return value === '' ? kept : [...kept, [name, value]]
}

function shuffle<T> (list: readonly T[], next: () => number): T[] {
  const copy = [...list]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1))
    ;[copy[i], copy[j]] = [copy[j]!, copy[i]!]
  }
  return copy
}

function casing (text: string, next: () => number): string {
  return [...text].map((c) => next() < 0.5 ? c.toUpperCase() : c.toLowerCase()).join('')
}

function garbage (next: () => number, length: number): string {
  let text = ''
  for (let i = 0; i < length; i++) text += String.fromCharCode(Math.floor(next() * 256))
  return text
}
