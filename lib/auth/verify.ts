import { jwtVerify, type JWTPayload, type JWTVerifyOptions } from 'jose'
import {
  InternalError,
  InvalidRequestError,
  KeysUnavailableError,
  TokenExpiredError,
  TokenInvalidError,
  type GuardError
} from '../errors.js'
import type { KeySource } from './keys.js'

/** What `jwtVerify` is told, fixed at registration. */
export interface VerifySettings {
  readonly keys: KeySource
  readonly options: Readonly<JWTVerifyOptions>
  readonly maxTokenLength: number
}

// Three base64url segments: anything else never reaches jose.
const jwsShape = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/

/** Cheap checks before jose sees a token: its length, then its shape. */
export function precheckToken (token: string, settings: VerifySettings): GuardError | undefined {
  if (token.length > settings.maxTokenLength) return new InvalidRequestError(`the token is longer than ${settings.maxTokenLength} characters`)
  if (jwsShape.test(token)) return undefined
  // A JWE has five segments: encrypted tokens are not what this guard verifies.
  return new TokenInvalidError(token.split('.').length === 5 ? 'encrypted tokens (JWE) are not accepted' : 'malformed token')
}

/** Verifies signature and claims; resolves with the claims or with the error to answer. */
export async function verifyToken (token: string, settings: VerifySettings): Promise<JWTPayload | GuardError> {
  try {
    const { payload } = await jwtVerify(token, settings.keys.resolve, settings.options)
    return payload
  } catch (err) {
    const error = mapJoseError(err, settings.keys.kind)
    const { remote } = settings.keys
    if (remote !== undefined && error.code === 'FST_WS_GUARD_KEYS_UNAVAILABLE') error.causeCode = remote.cause(err)
    return error
  }
}

/**
 * Maps jose's errors to the guard's by `code` only: jose's messages can quote claim values,
 * so none of their text is kept.
 */
export function mapJoseError (err: unknown, kind: KeySource['kind']): GuardError {
  const { code, claim, reason } = err as { code?: string, claim?: string, reason?: string }
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return new TokenExpiredError()
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      // jose's reasons: 'missing', 'invalid' (not the type the claim needs) or 'check_failed'.
      if (reason === 'invalid') return new TokenInvalidError(`the "${claim}" claim has the wrong type`)
      if (claim === 'nbf' && reason === 'check_failed') return new TokenInvalidError('the token is not valid yet')
      // A token older than maxTokenAge is reported by jose as expired; this is an iat in the future.
      if (claim === 'iat' && reason === 'check_failed') return new TokenInvalidError('the "iat" claim is in the future')
      return new TokenInvalidError(reason === 'missing' ? `the "${claim}" claim is missing` : `the "${claim}" claim is not accepted`)
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return new TokenInvalidError('signature verification failed')
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return new TokenInvalidError('the token\'s algorithm is not allowed')
    case 'ERR_JOSE_NOT_SUPPORTED':
      // Classified by jose's text, never quoted: it names the client's header parameter.
      if (/Extension Header Parameter/.test(String((err as Error).message))) return new TokenInvalidError('the token has a critical header parameter this server does not understand')
      return new TokenInvalidError('the token\'s algorithm is not supported')
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return new TokenInvalidError('malformed token')
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return new TokenInvalidError('no key matches the token')
  }
  // Anything else is the key source failing (JWKS down, slow, not JSON): fail closed, retry later.
  if (kind === 'jwksUrl' || kind === 'getKey') return withCause(new KeysUnavailableError(), code)
  return withCause(new InternalError(), code)
}

function withCause (error: GuardError, code: string | undefined): GuardError {
  // Keep the library's code for the log line; never its message.
  error.causeCode = code ?? 'unknown'
  return error
}
