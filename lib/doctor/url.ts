import { failed, stageResult } from './stage.js'
import { startClock } from './time.js'
import type { DoctorOptions, Finding, StageResult } from './types.js'

/** Where the handshake goes, as the later stages need it. */
export interface Target {
  /** The URL the handshake uses: ws: or wss:, with the query token when `--token-in query`. */
  readonly url: URL
  readonly secure: boolean
  /** The host name or address, without IPv6 brackets. */
  readonly host: string
  readonly port: number
  /** The request target: path and query. */
  readonly path: string
}

const httpSchemes: Readonly<Record<string, string>> = { 'http:': 'ws:', 'https:': 'wss:' }

/** Stage 1: the URL's scheme, host, port and path. */
export function checkUrl (options: DoctorOptions): { result: StageResult, target?: Target } {
  const elapsed = startClock()
  let url: URL
  try {
    url = new URL(options.url)
  } catch {
    return { result: stageResult('url', elapsed(), `not a URL: ${options.url}`, { findings: [notUrl] }) }
  }
  const findings: Finding[] = []
  const wsScheme = httpSchemes[url.protocol]
  if (wsScheme !== undefined) {
    const given = url.protocol
    url.protocol = wsScheme
    findings.push({
      verdict: 'warn',
      cause: `${given}// is an HTTP URL; a WebSocket URL starts with ${wsScheme}// (browsers since 2023 and ws 8 convert it, older clients throw)`,
      fix: `write ${url.href}`
    })
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    return { result: stageResult('url', elapsed(), `${url.protocol}// is not a WebSocket scheme`, { findings: [badScheme] }) }
  }
  if (url.hash !== '') {
    return { result: stageResult('url', elapsed(), `the URL has a fragment (${url.hash})`, { findings: [fragment] }) }
  }
  if (options.token !== undefined && options.tokenIn === 'query') url.searchParams.set('access_token', options.token)
  const secure = url.protocol === 'wss:'
  const target: Target = {
    url,
    secure,
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port === '' ? (secure ? 443 : 80) : Number(url.port),
    path: url.pathname + url.search
  }
  if (target.port === 0) {
    return { result: stageResult('url', elapsed(), 'port 0 is no port to connect to', { findings: [portZero] }) }
  }
  const summary = `${url.href}: ${secure ? 'TLS' : 'plain text'}, host ${target.host}, port ${target.port}, path ${target.path}`
  return {
    result: stageResult('url', elapsed(), summary, {
      findings,
      data: { href: url.href, secure, host: target.host, port: target.port, path: target.path }
    }),
    target
  }
}

const notUrl = failed(undefined, 'the argument could not be parsed as a URL', 'write it as ws://host:port/path (wss:// for TLS)')
const badScheme = failed(undefined, 'only ws:// and wss:// URLs open WebSockets', 'write ws://host:port/path, or wss:// for TLS')
const portZero = failed(undefined, 'port 0 only means "any free port" to a server that listens', 'use the port the server printed when it started listening')
const fragment = failed(undefined, 'a WebSocket URL cannot have a #fragment: browsers and ws throw a SyntaxError', 'remove the #... part')
