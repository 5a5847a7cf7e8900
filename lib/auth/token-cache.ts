import { hash } from 'node:crypto'
import type { JWTPayload } from 'jose'
import { LRUCache } from 'lru-cache'

interface Entry {
  readonly payload: Readonly<JWTPayload>
  /** Epoch ms after which the token must be verified again. */
  readonly validUntil: number
}

/**
 * Verified tokens, keyed by a SHA-256 of the token (the token itself is never kept), each
 * entry dropped when the token stops being valid. Bounded: the least recently used entry goes
 * first. Reconnect storms that reuse a token skip the signature check; authorize and isRevoked
 * still run every time.
 */
export class VerifiedTokenCache {
  // Not a Map evicted from its front: V8 leaves a hole for each deleted entry until the next
  // rehash, and finding the oldest walked over thousands of them on every fresh token.
  readonly #entries: LRUCache<string, Entry>

  constructor (max: number) {
    this.#entries = new LRUCache({ max })
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
    this.#entries.set(key, { payload, validUntil })
  }

  get size (): number {
    return this.#entries.size
  }
}
