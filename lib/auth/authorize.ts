import type { FastifyRequest } from 'fastify'
import type { JWTPayload } from 'jose'
import { ForbiddenError, TokenRevokedError, type GuardError } from '../errors.js'
import type { AuthSettings } from './options.js'

/** Whether the app's checks run at all: without them the accepted path stays synchronous. */
export function hasUserChecks (auth: AuthSettings): boolean {
  return auth.isRevoked !== undefined || auth.authorize !== undefined
}

/**
 * The app's own checks of verified claims, `isRevoked` then `authorize`: the same at the
 * handshake and on every `wsRefresh()`, so a refresh can never widen what a handshake refuses.
 */
export async function checkUser (auth: AuthSettings, claims: Readonly<JWTPayload>, request: FastifyRequest): Promise<GuardError | undefined> {
  if (auth.isRevoked !== undefined && await auth.isRevoked(claims, request) !== false) return new TokenRevokedError()
  if (auth.authorize !== undefined && await auth.authorize(claims, request) !== true) return new ForbiddenError()
  return undefined
}
