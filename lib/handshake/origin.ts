import type { FastifyRequest } from 'fastify'
import { OriginNotAllowedError } from '../errors.js'
import type { GuardStep, HandshakeState, Rejection } from './contract.js'
import { isSameOrigin, listAllows, parseOrigin, type OriginPredicate, type OriginSettings, type ParsedOrigin } from './origin-policy.js'

/**
 * Decides on the request's Origin header. Returns why it is refused, `undefined` when it is
 * allowed, or a promise of either when the policy is an async function.
 */
export function checkOrigin (request: FastifyRequest, settings: OriginSettings): string | undefined | Promise<string | undefined> {
  const value = request.headers.origin
  if (value === undefined) {
    return settings.allowMissingOrigin ? undefined : 'the request has no Origin header'
  }
  const { policy } = settings
  // Node joins a repeated Origin header with ", ": either way there is no single origin.
  if (value.includes(',')) return 'more than one Origin value'
  if (policy.kind === 'any') return undefined
  if (value === 'null') {
    if (policy.kind === 'list' && policy.exact.has('null')) return undefined
    if (policy.kind !== 'function') return 'Origin "null" (an opaque origin) is not listed'
  }
  // Fast paths for what browsers send, already normalized: an exact match needs no parsing.
  if (policy.kind === 'list' && policy.exact.has(value)) return undefined
  if (policy.kind === 'same' && request.host !== undefined && (value === 'https://' + request.host || value === 'http://' + request.host)) return undefined
  const origin = value === 'null' ? nullOrigin : parseOrigin(value)
  if (origin === undefined) return `malformed Origin "${truncate(value)}"`
  switch (policy.kind) {
    case 'same':
      return isSameOrigin(origin, request.host)
        ? undefined
        : `${truncate(origin.normalized)} is not the same origin as Host "${truncate(request.host ?? '')}" (list it in origins; behind a proxy set trustProxy so X-Forwarded-Host is used)`
    case 'list':
      return listAllows(policy, origin) ? undefined : `${truncate(origin.normalized)} is not in the allowlist`
    case 'function':
      return callPredicate(policy.predicate, origin.normalized, request)
  }
}

const nullOrigin: ParsedOrigin = { scheme: '', host: '', port: '', normalized: 'null' }

function callPredicate (predicate: OriginPredicate, origin: string, request: FastifyRequest): string | undefined | Promise<string | undefined> {
  const verdict = predicate(origin, request)
  if (typeof verdict === 'boolean') return verdict ? undefined : notAllowedByFunction(origin)
  return Promise.resolve(verdict).then((allowed) => allowed === true ? undefined : notAllowedByFunction(origin))
}

function notAllowedByFunction (origin: string): string {
  return `${truncate(origin)} is not allowed by the origins function`
}

/** At most about 100 characters of a client's value in a body or a log line. */
function truncate (value: string): string {
  return value.length > 100 ? value.slice(0, 100) + '...' : value
}

/** Step 4 of the chain: the Origin is allowed (or only reported, with `originReportOnly`). */
export const checkOriginStep: GuardStep = (request, state) => {
  const verdict = checkOrigin(request, state.settings.origin)
  if (verdict === undefined) return undefined
  if (typeof verdict === 'string') return originRejection(request, state, verdict)
  return verdict.then((reason) => reason === undefined ? undefined : originRejection(request, state, reason))
}

function originRejection (request: FastifyRequest, state: HandshakeState, reason: string): Rejection | undefined {
  if (state.settings.originReportOnly) {
    request.log.info({ wsGuard: { code: 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', route: state.route, reportOnly: true } }, `websocket origin would be rejected: ${reason}`)
    return undefined
  }
  return { error: new OriginNotAllowedError(reason) }
}
