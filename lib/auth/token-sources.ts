import { parseCookie } from 'cookie'
import type { FastifyRequest } from 'fastify'
import { InvalidRequestError, type GuardError } from '../errors.js'

/** Where a client may put its token, in the order they are looked at. */
export type TokenSource = 'header' | 'protocol' | 'cookie' | 'query' | 'custom'

export interface TokenSourceSettings {
  readonly sources: readonly TokenSource[]
  readonly cookieName: string
  readonly queryParam: string
  readonly getToken: ((request: FastifyRequest) => string | undefined) | undefined
}

/** A token and where it came from, `undefined` when the client sent none, or why the request is malformed. */
export type Extraction = { token: string, source: TokenSource } | undefined | GuardError

const bearerPrefix = 'bearer.'

/**
 * Whether a subprotocol carries a token: `bearer.<token>`, in any letter case, is never
 * selected nor echoed, even where only the lowercase form is read as a token.
 */
export function carriesToken (protocol: string): boolean {
  return protocol.length >= bearerPrefix.length && protocol.slice(0, bearerPrefix.length).toLowerCase() === bearerPrefix
}
// RFC 6750 §2.1: b64token.
const bearerHeader = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i
const bearerScheme = /^Bearer(?: |$)/i

/**
 * Looks for the token in every enabled source. RFC 6750 §2: a token in more than one place
 * is an invalid request, so all sources are looked at, not only the first that has one.
 */
export function extractToken (request: FastifyRequest, offeredProtocols: readonly string[], settings: TokenSourceSettings): Extraction {
  let found: { token: string, source: TokenSource } | undefined
  for (const source of settings.sources) {
    const token = read(source, request, offeredProtocols, settings)
    if (token === undefined) continue
    if (typeof token !== 'string') return token
    if (found !== undefined) return new InvalidRequestError(`the token was sent in more than one place (${found.source} and ${source})`)
    found = { token, source }
  }
  return found
}

function read (source: TokenSource, request: FastifyRequest, offered: readonly string[], settings: TokenSourceSettings): string | undefined | GuardError {
  switch (source) {
    case 'header': return fromHeader(request)
    case 'protocol': return fromProtocols(offered)
    case 'cookie': return fromCookie(request, settings.cookieName)
    case 'query': return fromQuery(request, settings.queryParam)
    case 'custom': return fromCustom(request, settings.getToken!)
  }
}

function fromHeader (request: FastifyRequest): string | undefined | GuardError {
  const header = request.headers.authorization
  if (header === undefined) return undefined
  // Node keeps the first of two Authorization headers and drops the second without a word.
  let count = 0
  // @fastify/websocket's injectWS hands over a request without rawHeaders.
  const raw: readonly string[] = request.raw.rawHeaders ?? []
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 13 && raw[i]!.toLowerCase() === 'authorization') count++
  }
  if (count > 1) return new InvalidRequestError('more than one Authorization header')
  // Another scheme is not ours to judge: the client simply sent no bearer token.
  if (!bearerScheme.test(header)) return undefined
  const match = bearerHeader.exec(header)
  if (match === null) return new InvalidRequestError('the Authorization header must be "Bearer <token>"')
  return match[1]
}

function fromProtocols (offered: readonly string[]): string | undefined | GuardError {
  let token: string | undefined
  for (const protocol of offered) {
    if (!protocol.startsWith(bearerPrefix)) continue
    if (token !== undefined) return new InvalidRequestError('more than one bearer.<token> subprotocol')
    token = protocol.slice(bearerPrefix.length)
  }
  if (token === '') return new InvalidRequestError('the bearer.<token> subprotocol is empty')
  return token
}

function fromCookie (request: FastifyRequest, name: string): string | undefined {
  // @fastify/cookie, when registered, has parsed them already.
  const parsed = (request as FastifyRequest & { cookies?: Record<string, string | undefined> }).cookies
  if (parsed != null) return parsed[name] || undefined
  const header = request.headers.cookie
  if (header === undefined) return undefined
  return parseCookie(header)[name] || undefined
}

function fromQuery (request: FastifyRequest, name: string): string | undefined | GuardError {
  const value = (request.query as Record<string, unknown> | undefined)?.[name]
  if (value === undefined || value === '') return undefined
  if (typeof value !== 'string') return new InvalidRequestError(`more than one ${name} query parameter`)
  return value
}

function fromCustom (request: FastifyRequest, getToken: (request: FastifyRequest) => string | undefined): string | undefined | GuardError {
  const token = getToken(request)
  if (token === undefined || token === '') return undefined
  if (typeof token !== 'string') return new InvalidRequestError('getToken must return a string or undefined')
  return token
}
