import { hash } from 'node:crypto'
import type { JWTPayload } from 'jose'

interface Entry {
  readonly payload: Readonly<JWTPayload>
  /** Epoch ms after which the token must be verified again. */
  readonly validUntil: number
}

/**
 * Verified tokens, keyed by a SHA-256 of the token (the token itself is never kept), each
 * entry dropped when the token stops being valid. Bounded: the oldest entry goes first.
 * Reconnect storms that reuse a token skip the signature check; authorize and isRevoked
 * still run every time.
 */
export class VerifiedTokenCache {
  readonly #entries = new Map<string, Entry>()
  readonly #max: number

  constructor (max: number) {
    this.#max = max
  }

  static keyOf (token: string): string {
    return hash('sha256', token, 'base64')
  }

  get (key: string, now: number): Readonly<JWTPayload> | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined) return undefined
    if (entry.validUntil <= now) {
      this.#entries.delete(key)
      return undefined
    }
    return entry.payload
  }

  set (key: string, payload: Readonly<JWTPayload>, validUntil: number): void {
    if (this.#entries.size >= this.#max) {
      this.#entries.delete(this.#entries.keys().next().value!)
    }
    this.#entries.set(key, { payload, validUntil })
  }

  get size (): number {
    return this.#entries.size
  }
}
