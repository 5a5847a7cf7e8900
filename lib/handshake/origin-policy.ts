import type { FastifyRequest } from 'fastify'
import { InvalidOptionError } from '../errors.js'
import { describe } from '../validate.js'

/** A function that decides whether a (normalized) Origin may open a WebSocket. */
export type OriginPredicate = (origin: string, request: FastifyRequest) => boolean | Promise<boolean>

/**
 * Which browser origins may open a WebSocket:
 * - exact origins (`'https://app.example.com'`), wildcard hosts (`'https://*.example.com'`: any
 *   subdomain depth, never `example.com` itself) and RegExps (tested against the normalized
 *   origin), mixed in one array; `'null'` must be listed to allow `Origin: null`;
 * - a function `(origin, request) => boolean | Promise<boolean>`;
 * - `'*'`: every origin.
 */
export type OriginOption = '*' | ReadonlyArray<string | RegExp> | OriginPredicate

/** The compiled form of {@link OriginOption}; `undefined` for the same-origin default. */
export type OriginPolicy =
  | { kind: 'any' }
  | { kind: 'same' }
  | { kind: 'list', exact: ReadonlySet<string>, wildcards: readonly Wildcard[], patterns: readonly RegExp[] }
  | { kind: 'function', predicate: OriginPredicate }

interface Wildcard { scheme: string, suffix: string, port: string }

/** An Origin header value taken apart; `host` is lowercase, `port` empty when it is the scheme's default. */
export interface ParsedOrigin { scheme: string, host: string, port: string, normalized: string }

const originShape = /^([a-z][a-z0-9+.-]*):\/\/(\[[0-9a-f:.]+\]|[^\s/?#@:[\]\\]+)(?::(\d{1,5}))?$/i
const defaultPorts: Record<string, string> = { http: '80', https: '443', ws: '80', wss: '443' }

/** Parses `scheme://host[:port]`; `undefined` when the value is not an origin. */
export function parseOrigin (value: string): ParsedOrigin | undefined {
  const match = originShape.exec(value)
  if (match === null) return undefined
  const scheme = match[1]!.toLowerCase()
  const host = match[2]!.toLowerCase()
  let port = match[3] ?? ''
  if (port !== '') {
    port = String(Number(port))
    if (Number(port) > 65535) return undefined
    if (defaultPorts[scheme] === port) port = ''
  }
  return { scheme, host, port, normalized: `${scheme}://${host}${port === '' ? '' : ':' + port}` }
}

/** Validates and compiles the `origins` option once, at registration. */
export function compileOrigins (option: unknown, name: string): OriginPolicy {
  if (option === undefined) return { kind: 'same' }
  if (option === '*') return { kind: 'any' }
  if (typeof option === 'function') return { kind: 'function', predicate: option as OriginPredicate }
  if (!Array.isArray(option)) {
    throw new InvalidOptionError(`${name} must be an array of origins and RegExps, a function or '*', got ${describe(option)}`)
  }
  const exact = new Set<string>()
  const wildcards: Wildcard[] = []
  const patterns: RegExp[] = []
  for (const entry of option) {
    if (entry instanceof RegExp) {
      // A global or sticky RegExp keeps state between test() calls: drop those flags.
      patterns.push(new RegExp(entry.source, entry.flags.replace(/[gy]/g, '')))
    } else if (typeof entry === 'string') {
      compileOriginString(entry, name, exact, wildcards)
    } else {
      throw new InvalidOptionError(`${name} entries must be strings or RegExps, got ${describe(entry)}`)
    }
  }
  return { kind: 'list', exact, wildcards, patterns }
}

function compileOriginString (entry: string, name: string, exact: Set<string>, wildcards: Wildcard[]): void {
  if (entry === 'null') {
    exact.add('null')
    return
  }
  if (entry === '*') {
    throw new InvalidOptionError(`${name}: '*' cannot be mixed with other origins; write origins: '*' to allow every origin`)
  }
  const schemeEnd = entry.indexOf('://')
  if (schemeEnd === -1) {
    throw new InvalidOptionError(`${name}: "${entry}" has no scheme; write "https://${entry}"`)
  }
  const afterScheme = entry.slice(schemeEnd + 3)
  const pathStart = afterScheme.search(/[/?#]/)
  if (pathStart !== -1) {
    throw new InvalidOptionError(`${name}: "${entry}" has a path; an origin is scheme://host[:port], write "${entry.slice(0, schemeEnd + 3 + pathStart)}"`)
  }
  if (afterScheme.includes('*')) {
    if (!afterScheme.startsWith('*.') || afterScheme.indexOf('*', 1) !== -1) {
      throw new InvalidOptionError(`${name}: "${entry}" is not a valid wildcard; a wildcard stands alone as the leftmost label, as in "https://*.example.com"`)
    }
    const base = parseOrigin(entry.slice(0, schemeEnd + 3) + afterScheme.slice(2))
    if (base === undefined) {
      throw new InvalidOptionError(`${name}: "${entry}" is not a valid wildcard; write a domain after "*.", as in "https://*.example.com"`)
    }
    wildcards.push({ scheme: base.scheme, suffix: '.' + base.host, port: base.port })
    return
  }
  const parsed = parseOrigin(entry)
  if (parsed === undefined) {
    throw new InvalidOptionError(`${name}: "${entry}" is not an origin; write scheme://host[:port], as in "https://app.example.com"`)
  }
  exact.add(parsed.normalized)
}

/** True when the list form of a policy allows the origin. */
export function listAllows (policy: Extract<OriginPolicy, { kind: 'list' }>, origin: ParsedOrigin): boolean {
  if (policy.exact.has(origin.normalized)) return true
  for (const wildcard of policy.wildcards) {
    if (wildcard.scheme === origin.scheme && wildcard.port === origin.port &&
      origin.host.length > wildcard.suffix.length && origin.host.endsWith(wildcard.suffix)) {
      return true
    }
  }
  for (const pattern of policy.patterns) {
    if (pattern.test(origin.normalized)) return true
  }
  return false
}

/**
 * Same origin as gorilla/websocket defines it: the Origin's host and port equal the Host
 * header (`request.host`, which honours `trustProxy` and X-Forwarded-Host), default ports dropped.
 */
export function isSameOrigin (origin: ParsedOrigin, hostHeader: string | undefined): boolean {
  if (hostHeader === undefined || hostHeader === '') return false
  let host = hostHeader.toLowerCase()
  const defaultPort = defaultPorts[origin.scheme]
  if (defaultPort !== undefined && host.endsWith(':' + defaultPort)) {
    host = host.slice(0, -defaultPort.length - 1)
  }
  return host === (origin.port === '' ? origin.host : origin.host + ':' + origin.port)
}

/** Origin settings of one route, after normalization. */
export interface OriginSettings {
  policy: OriginPolicy
  allowMissingOrigin: boolean
}
