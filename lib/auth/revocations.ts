import type { JWTPayload } from 'jose'
import type { Revocation } from '../store/contract.js'

/**
 * This instance's copy of the revocations in force, loaded from the store at start and kept up
 * by its control channel: a handshake checks it without a network round trip. Times are epoch
 * seconds, as in the claims.
 */
export class RevocationList {
  /** `jti` → until. */
  readonly #tokens = new Map<string, number>()
  /** `sub` → tokens issued at or before `issuedBefore` are revoked, until `until`. */
  readonly #subjects = new Map<string, { issuedBefore: number, until: number }>()
  /** Past this size, an addition first drops what has expired: a long-running instance does not keep every revocation ever made. */
  #pruneAt = 1024

  get size (): number {
    return this.#tokens.size + this.#subjects.size
  }

  add (revocation: Revocation): void {
    if (this.size >= this.#pruneAt) this.#prune(Date.now() / 1000)
    if ('jti' in revocation) {
      this.#tokens.set(revocation.jti, Math.max(revocation.until, this.#tokens.get(revocation.jti) ?? 0))
      return
    }
    const known = this.#subjects.get(revocation.sub)
    this.#subjects.set(revocation.sub, {
      issuedBefore: Math.max(revocation.issuedBefore, known?.issuedBefore ?? 0),
      until: Math.max(revocation.until, known?.until ?? 0)
    })
  }

  #prune (now: number): void {
    for (const [jti, until] of this.#tokens) if (until <= now) this.#tokens.delete(jti)
    for (const [sub, { until }] of this.#subjects) if (until <= now) this.#subjects.delete(sub)
    this.#pruneAt = Math.max(1024, this.size * 2)
  }

  /**
   * Takes in what the store holds, and returns the revocations in force that only this copy
   * holds: those the store lost (Redis restarted empty) or never got (a `revoke()` made while
   * it was away), for the guard to give back. A revocation is never dropped before its `until`.
   */
  merge (stored: readonly Revocation[], now = Date.now() / 1000): Revocation[] {
    const storedTokens = new Set<string>()
    const storedSubjects = new Map<string, number>()
    for (const revocation of stored) {
      this.add(revocation)
      if ('jti' in revocation) storedTokens.add(revocation.jti)
      else storedSubjects.set(revocation.sub, Math.max(revocation.issuedBefore, storedSubjects.get(revocation.sub) ?? -Infinity))
    }
    const missing: Revocation[] = []
    for (const [jti, until] of this.#tokens) {
      if (until > now && !storedTokens.has(jti)) missing.push({ jti, until })
    }
    for (const [sub, { issuedBefore, until }] of this.#subjects) {
      if (until > now && (storedSubjects.get(sub) ?? -Infinity) < issuedBefore) missing.push({ sub, issuedBefore, until })
    }
    return missing
  }

  /**
   * Whether the claims fall under a revocation in force. `iat` has a precision of one second:
   * a token issued in the second of its subject's revocation is revoked too, and so is a
   * token without `iat`, whose age nobody knows.
   */
  revokes (claims: Readonly<JWTPayload>, now = Date.now() / 1000): boolean {
    if (this.size === 0) return false
    if (typeof claims.jti === 'string') {
      const until = this.#tokens.get(claims.jti)
      if (until !== undefined) {
        if (until > now) return true
        this.#tokens.delete(claims.jti)
      }
    }
    if (typeof claims.sub === 'string') {
      const subject = this.#subjects.get(claims.sub)
      if (subject !== undefined) {
        if (subject.until <= now) this.#subjects.delete(claims.sub)
        else if (typeof claims.iat !== 'number' || claims.iat <= subject.issuedBefore) return true
      }
    }
    return false
  }
}
