import { explainGuardCode, type Explanation } from './codes.js'
import type { ProbeConnection } from './probe-connection.js'
import { bodyComplete, bodyOf, handshakeKey, headDecided, looksLikeHttp, parseHead, type ResponseHead } from './http.js'
import { redact } from './redact.js'
import { failed, stageResult } from './stage.js'
import { startClock } from './time.js'
import { speaksTls } from './tls.js'
import { tokenPlacements, type DoctorOptions, type Finding, type StageResult, type TokenPlacement } from './types.js'
import type { Target } from './url.js'
import { listsUpgrade, nginxUpgradeFix } from '../upgrade-headers.js'

const userAgent = 'fastify-ws-guard-doctor'
// A refusal's body is read for its error code; it gets a short bound of its own.
const bodyWait = 1000
const shownHeaders = [
  'upgrade', 'connection', 'sec-websocket-accept', 'sec-websocket-protocol', 'sec-websocket-extensions',
  'sec-websocket-version', 'www-authenticate', 'location', 'retry-after', 'content-type', 'server', 'via'
]

export interface Handshake {
  /** The request bytes, token included. */
  readonly request: string
  /** The request lines, to show (redacted when shown). */
  readonly lines: readonly string[]
  readonly accept: string
  readonly offered: readonly string[]
}

/** An RFC 6455 handshake request with a fresh key, the token where `--token-in` says. */
export function buildHandshake (target: Target, options: DoctorOptions): Handshake {
  const { key, accept } = handshakeKey()
  const offered = offeredProtocols(options)
  const headers: Array<[string, string]> = [
    ['Host', target.url.host],
    ['Upgrade', 'websocket'],
    ['Connection', 'Upgrade'],
    ['Sec-WebSocket-Key', key],
    ['Sec-WebSocket-Version', '13'],
    ['User-Agent', userAgent]
  ]
  if (options.origin !== undefined) headers.push(['Origin', options.origin])
  if (offered.length > 0) headers.push(['Sec-WebSocket-Protocol', offered.join(', ')])
  if (options.token !== undefined && options.tokenIn === 'header') headers.push(['Authorization', `Bearer ${options.token}`])
  const lines = [`GET ${target.path} HTTP/1.1`, ...headers.map(([name, value]) => `${name}: ${value}`)]
  return { request: `${lines.join('\r\n')}\r\n\r\n`, lines, accept, offered }
}

/** The subprotocols to offer: a token as subprotocol rides with the app's protocols, or the marker `bearer`. */
function offeredProtocols (options: DoctorOptions): string[] {
  if (options.token === undefined || options.tokenIn !== 'protocol') return [...options.protocols]
  const app = options.protocols.length > 0 ? options.protocols : ['bearer']
  return [...app, `bearer.${options.token}`]
}

/** Stage 5: send the handshake on the connection, read the answer, say what it means. */
export async function upgrade (target: Target, conn: ProbeConnection, options: DoctorOptions, address: string): Promise<{ result: StageResult, open: boolean }> {
  const elapsed = startClock()
  const handshake = buildHandshake(target, options)
  const hide = (text: string): string => redact(text, options.token)
  conn.write(handshake.request)
  const sent = handshake.lines.map((line) => `> ${hide(line)}`)
  const waited = await conn.wait(headDecided, options.timeout)
  const head = parseHead(conn.buffer)
  if (head === undefined) {
    const finding = await noHead(target, conn, options, address, waited === 'timeout')
    return { open: false, result: stageResult('upgrade', elapsed(), 'no HTTP response', { details: sent, findings: [finding] }) }
  }
  conn.consume(head.size)
  const received = [`< ${head.statusLine}`, ...shownHeaders.filter((name) => name in head.headers).map((name) => `< ${name}: ${hide(head.headers[name]!)}`)]
  const data = { status: head.status, statusLine: head.statusLine, headers: head.headers }
  if (head.status === 101) {
    const findings = checkSwitch(head, handshake, options)
    const selected = head.headers['sec-websocket-protocol']
    const summary = `${head.statusLine}${selected === undefined ? '' : `, subprotocol ${hide(selected)}`}`
    const result = stageResult('upgrade', elapsed(), summary, { details: [...sent, ...received], findings, data })
    return { open: result.verdict !== 'fail', result }
  }
  await conn.wait((buffer) => bodyComplete(head, buffer), Math.min(options.timeout, bodyWait))
  const body = bodyOf(head, conn.buffer).toString('utf8')
  const code = /FST_WS_GUARD_[A-Z_]+/.exec(body)?.[0]
  const explanation = code === undefined ? explainStatus(head, target, options) : explainCode(code, options)
  const shown = body === '' ? [] : [`< body: ${hide(excerpt(body))}`]
  return {
    open: false,
    result: stageResult('upgrade', elapsed(), code === undefined ? head.statusLine : `${head.statusLine}, ${code}`, {
      details: [...sent, ...received, ...shown],
      findings: [failed(code, explanation.cause, explanation.fix)],
      data: { ...data, body: hide(excerpt(body)) }
    })
  }
}

/** No head: silence, a close, TLS on the port, or something that is not HTTP. */
async function noHead (target: Target, conn: ProbeConnection, options: DoctorOptions, address: string, timedOut: boolean): Promise<Finding> {
  const bytes = conn.buffer
  if (bytes.length === 0 && timedOut) {
    return failed('ETIMEDOUT', `no response in ${options.timeout} ms: the server accepted the connection and said nothing`, 'the server is stuck or overloaded, or it is not an HTTP server; check its logs')
  }
  if (bytes.length > 0 && looksLikeHttp(bytes)) {
    return failed(undefined, `the response is not valid HTTP/1.1 (incomplete, or headers over 64 KiB): ${excerpt(bytes.toString('latin1'))}`, 'check the server or proxy answering on this port')
  }
  const tls = target.secure ? false : await speaksTls(address, target.port, target.host, options.timeout)
  if (tls) {
    const wss = new URL(target.url.href)
    wss.protocol = 'wss:'
    return failed('TLS_PORT', 'the port speaks TLS: it dropped the plain-text handshake of ws://', `use ${wss.href}`)
  }
  if (bytes.length === 0) {
    return failed(undefined, 'the server closed the connection without answering', 'it may not be an HTTP server, or it refused this client: check its logs and any proxy or firewall in between')
  }
  return failed(undefined, `the server does not speak HTTP: it sent ${excerpt(bytes.toString('latin1'))}`, 'another service listens on this port: check the port')
}

/** The checks a client makes on a 101 (RFC 6455 §4.1), plus tokens echoed back. */
function checkSwitch (head: ResponseHead, handshake: Handshake, options: DoctorOptions): Finding[] {
  const h = head.headers
  const findings: Finding[] = []
  if (h.upgrade?.toLowerCase() !== 'websocket') {
    findings.push(failed('BAD_UPGRADE', `the 101 says Upgrade: ${h.upgrade ?? '(missing)'}, not websocket: clients fail the connection`, 'the server or a proxy rewrote the response; answer Upgrade: websocket'))
  }
  if (!listsUpgrade(h.connection)) {
    findings.push(failed('BAD_CONNECTION', `the 101 says Connection: ${h.connection ?? '(missing)'}, without "upgrade": clients fail the connection`, 'answer Connection: Upgrade'))
  }
  if (h['sec-websocket-accept'] !== handshake.accept) {
    findings.push(failed('BAD_ACCEPT', `Sec-WebSocket-Accept is ${h['sec-websocket-accept'] ?? '(missing)'}, expected ${handshake.accept}: browsers fail with 1006`, 'the server must answer base64(sha1(key + 258EAFA5-E914-47DA-95CA-C5AB0DC85B11)); a caching or rewriting proxy may have mixed up responses'))
  }
  const selected = h['sec-websocket-protocol']
  if (selected !== undefined && !handshake.offered.includes(selected)) {
    findings.push(failed('UNOFFERED_PROTOCOL', `the server selected subprotocol ${selected}, which was not offered: clients fail the connection`, 'select one of the offered subprotocols, or none'))
  }
  if (selected === undefined && handshake.offered.length > 0) {
    findings.push(failed('NO_PROTOCOL', 'subprotocols were offered and the server selected none: Chrome fails the connection ("Sent non-empty \'Sec-WebSocket-Protocol\' header but no response was received") and so does the ws client ("Server sent no subprotocol")', 'select one of the offered subprotocols (fastify-ws-guard: list it in the route\'s `protocols`; with a bearer.<token>, offer the marker `bearer` too)'))
  }
  if (h['sec-websocket-extensions'] !== undefined) {
    findings.push(failed('UNOFFERED_EXTENSION', `the server enabled extension ${h['sec-websocket-extensions']}, which was not offered: clients fail the connection`, 'only accept extensions the client offered'))
  }
  const token = options.token
  const echoed = token === undefined ? [] : Object.keys(h).filter((name) => h[name]!.includes(token))
  if (echoed.length > 0) {
    findings.push({ verdict: 'warn', code: 'TOKEN_ECHOED', cause: `the server echoes the bearer token in its response (${echoed.join(', ')}): it ends up in proxy logs, HAR files and devtools`, fix: 'select the application subprotocol or the marker `bearer`, never bearer.<token> (fastify-ws-guard never does; with ws, write handleProtocols)' })
  }
  return findings
}

interface StatusContext {
  readonly headers: Readonly<Record<string, string>>
  readonly status: number
  readonly target: Target
  readonly options: DoctorOptions
}

function explainStatus (head: ResponseHead, target: Target, options: DoctorOptions): Explanation {
  const context = { headers: head.headers, status: head.status, target, options }
  const explain = byStatus[head.status] ?? byClass[Math.floor(head.status / 100)] ?? unexpected
  return explain(context)
}

/** A guard code explained; a missing token that was sent is explained by where it was sent. */
function explainCode (code: string, options: DoctorOptions): Explanation {
  if (code === 'FST_WS_GUARD_TOKEN_MISSING' && options.token !== undefined) {
    return {
      cause: 'the route requires a token and found none where it looks, although one was sent',
      fix: sentElsewhere(options.tokenIn, unreadByGuard[options.tokenIn])
    }
  }
  return explainGuardCode(code) ?? unknownGuardCode
}

const placementNames: Readonly<Record<TokenPlacement, string>> = {
  header: 'the Authorization header',
  protocol: 'the subprotocol bearer.<token>',
  query: 'the query'
}

// Why fastify-ws-guard did not find a token that was sent: the route's auth options.
const unreadByGuard: Readonly<Record<TokenPlacement, string>> = {
  header: 'this route does not read the Authorization header (auth.tokenSources)',
  protocol: 'this route does not read subprotocols (auth.tokenSources)',
  query: 'this route does not read access_token from the query (auth.tokenSources, auth.queryParam)'
}

/** The fix for a token the server did not find: where it went, why, and the other places to try. */
function sentElsewhere (tokenIn: TokenPlacement, why: string): string {
  const others = tokenPlacements.filter((place) => place !== tokenIn).map((place) => `--token-in ${place}`)
  return `the token was sent in ${placementNames[tokenIn]}; ${why}: try ${others.join(' or ')}`
}

const unknownGuardCode: Explanation = {
  cause: 'fastify-ws-guard refused the handshake with a code this doctor does not know (a newer version?)',
  fix: 'read the message in the body and the README\'s error table'
}

function authParam (challenge: string | undefined, name: string): string | undefined {
  return new RegExp(`(?:^|[\\s,])${name}="([^"]*)"`).exec(challenge ?? '')?.[1]
}

function unauthorized ({ headers, options }: StatusContext): Explanation {
  const challenge = headers['www-authenticate']
  const error = authParam(challenge, 'error')
  const description = authParam(challenge, 'error_description')
  const refused = error === undefined ? '' : ` and refused the token (error="${error}")`
  const said = description === undefined ? '' : `; it says "${description}"`
  let fix = sentElsewhere(options.tokenIn, 'the server may read it elsewhere')
  if (options.token === undefined) fix = 'send a token: --token T or --token-env VAR, with --token-in for where the server reads it'
  else if (error === 'invalid_token') fix = 'if it expired, get a fresh one; otherwise check that it was issued for this server (issuer, audience, signing key)'
  return { cause: `the server requires authentication (401)${refused}${said}`, fix }
}

function forbidden ({ headers, options }: StatusContext): Explanation {
  const scope = authParam(headers['www-authenticate'], 'error') === 'insufficient_scope'
  return {
    cause: `the server refused the handshake (403): ${scope ? 'the token lacks the required scope' : 'usually the Origin is not allowed, or the token does not grant access'}`,
    fix: options.origin === undefined
      ? 'browsers always send Origin: rerun with --origin <your page\'s origin> to see what a browser gets, and add it to the server\'s allowlist if refused'
      : `check that ${options.origin} is on the server's origin allowlist (exact scheme, host and port); if it is, the token lacks access`
  }
}

const byStatus: Readonly<Record<number, (context: StatusContext) => Explanation>> = {
  400: () => ({
    cause: 'the server refused the handshake as malformed (400); a `ws` server says 400 when the headers it needs (Upgrade, Connection, Sec-WebSocket-Key) did not arrive, e.g. dropped by a proxy',
    fix: `read the body; if a proxy is in between, make it forward Upgrade and Connection (${nginxUpgradeFix})`
  }),
  401: unauthorized,
  403: forbidden,
  404: ({ target }) => ({
    cause: `nothing at ${target.url.pathname} on this server: a wrong path, or the WebSocket route is not registered (or lives under another prefix)`,
    fix: 'check the path and any proxy path rewrite; fastify.printRoutes() lists the app\'s routes'
  }),
  426: () => ({
    cause: 'the server wants a WebSocket upgrade that did not reach it: a proxy in between dropped the Upgrade/Connection headers',
    fix: nginxUpgradeFix
  }),
  429: () => ({
    cause: 'too many requests: rate-limited, or over a per-user connection limit',
    fix: 'wait as Retry-After says, reconnect with backoff, and close connections the user no longer needs'
  }),
  502: () => ({
    cause: 'the proxy in front could not reach the app: it is down or refusing, or the proxy points at the wrong address or port',
    fix: 'check that the app is up and the proxy\'s upstream (nginx: proxy_pass, and its error.log)'
  }),
  503: () => ({
    cause: 'service unavailable: the server or a proxy is overloaded, shutting down, or in maintenance',
    fix: 'retry after Retry-After; check the app\'s health'
  }),
  504: () => ({
    cause: 'the proxy in front timed out waiting for the app',
    fix: 'check that the app answers quickly; nginx: proxy_connect_timeout and proxy_read_timeout'
  })
}

const byClass: Readonly<Record<number, (context: StatusContext) => Explanation>> = {
  2: ({ status }) => ({
    cause: `a plain HTTP handler answered (${status}) instead of a WebSocket one: the path serves HTTP, or a proxy dropped the Upgrade headers so the app saw an ordinary GET`,
    fix: `check that the path is the WebSocket route; behind a proxy, forward Upgrade and Connection (${nginxUpgradeFix})`
  }),
  3: ({ status, headers }) => ({
    cause: `a redirect (${status}) to ${headers.location ?? '(no Location)'}: WebSocket clients do not follow redirects (browsers never do)`,
    fix: 'connect to the final URL; a redirect from http to https means: use wss://'
  }),
  4: ({ status }) => ({
    cause: `the server refused the handshake (${status})`,
    fix: 'read the body and the server log'
  }),
  5: ({ status }) => ({
    cause: `the server failed (${status})`,
    fix: 'read the server log'
  })
}

function unexpected ({ status }: StatusContext): Explanation {
  return { cause: `status ${status} is no answer to a WebSocket handshake`, fix: 'the server should answer 101, or an error status' }
}

/** At most 500 characters, on one line (control characters are masked when printed). */
function excerpt (text: string): string {
  const line = text.replace(/\s+/g, ' ').trim()
  return line.length > 500 ? `${line.slice(0, 500)}...` : line
}
