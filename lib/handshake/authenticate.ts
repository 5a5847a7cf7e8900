import type { FastifyRequest } from 'fastify'
import type { JWTPayload } from 'jose'
import { checkUser, hasUserChecks } from '../auth/authorize.js'
import type { AuthSettings } from '../auth/options.js'
import type { RevocationList } from '../auth/revocations.js'
import { VerifiedTokenCache } from '../auth/token-cache.js'
import { extractToken } from '../auth/token-sources.js'
import { precheckToken, verifyToken } from '../auth/verify.js'
import { TokenInvalidError, TokenMissingError, TokenRevokedError, type GuardError } from '../errors.js'
import type { GuardStep, HandshakeState, Rejection } from './contract.js'

// Cached verdicts are re-checked at least this often, whatever the token's lifetime.
const maxCacheLifetime = 10 * 60_000

/**
 * Step 6 of the chain, the JWT code of lib/auth/ as a step: find the token, verify it (or find it in the
 * verified-token cache), then the revocations of `app.wsGuard.revoke()`, `isRevoked` and `authorize`. The cache-hit path without
 * callbacks stays synchronous.
 */
export function createAuthStep (auth: AuthSettings, requireSubject: boolean, revocations: RevocationList): GuardStep {
  return function authenticate (request, state) {
    const found = extractToken(request, state.offeredProtocols, auth.sources)
    if (found === undefined) return challenge(auth, new TokenMissingError())
    if (found instanceof Error) return challenge(auth, found)
    const { token } = found
    const malformed = precheckToken(token, auth.verify)
    if (malformed !== undefined) return challenge(auth, malformed)

    const cache = auth.cache
    const cacheKey = cache === undefined ? '' : VerifiedTokenCache.keyOf(token)
    const cached = cache?.get(cacheKey, Date.now())
    if (cached !== undefined) return admit(auth, requireSubject, revocations, request, state, cached)
    return verifyToken(token, auth.verify).then((result) => {
      if (result instanceof Error) {
        if (result.code === 'FST_WS_GUARD_KEYS_UNAVAILABLE') auth.verify.keys.remote?.report(request.log, result.causeCode!)
        return challenge(auth, result)
      }
      const claims = Object.freeze(result)
      cache?.set(cacheKey, claims, cacheUntil(claims, auth))
      return admit(auth, requireSubject, revocations, request, state, claims)
    })
  }
}

function cacheUntil (claims: JWTPayload, auth: AuthSettings): number {
  const now = Date.now()
  let until = now + maxCacheLifetime
  if (typeof claims.exp === 'number') until = Math.min(until, claims.exp * 1000)
  const maxAge = auth.verify.options.maxTokenAge as number | undefined
  // jose checked that iat is there when maxTokenAge is set.
  if (maxAge !== undefined) until = Math.min(until, (claims.iat! + maxAge) * 1000)
  return until
}

function admit (
  auth: AuthSettings, requireSubject: boolean, revocations: RevocationList,
  request: FastifyRequest, state: HandshakeState, claims: Readonly<JWTPayload>
): Rejection | undefined | Promise<Rejection | undefined> {
  // The per-user limit counts by sub: a token without one would escape it.
  if (requireSubject && typeof claims.sub !== 'string') return challenge(auth, new TokenInvalidError('the token has no subject'))
  // This instance's copy of the fleet's revocations: no round trip.
  if (revocations.revokes(claims)) return challenge(auth, new TokenRevokedError())
  request.wsUser = claims
  state.user = claims
  if (!hasUserChecks(auth)) return undefined
  return checkUser(auth, claims, request).then((error) => error === undefined ? undefined : challenge(auth, error))
}

const errorAttributes: Record<string, string> = {
  400: 'invalid_request',
  401: 'invalid_token',
  403: 'insufficient_scope'
}

/** The rejection and its RFC 6750 `WWW-Authenticate` challenge. */
export function challenge (auth: AuthSettings, error: GuardError): Rejection {
  if (error.statusCode >= 500) return { error }
  let value = `Bearer realm="${auth.realm}"`
  // RFC 6750 §3.1: a request without any token gets no error attribute.
  if (error.code !== 'FST_WS_GUARD_TOKEN_MISSING') {
    value += `, error="${errorAttributes[error.statusCode]}", error_description="${error.message.replace(/["\\]/g, "'")}"`
  }
  return { error, headers: { 'www-authenticate': value } }
}
