import type { ConnectionStore } from './contract.js'

/** The default store: counts in this process. */
export class MemoryStore implements ConnectionStore {
  readonly #counts = new Map<string, number>()

  acquire (key: string, limit: number): boolean {
    const count = this.#counts.get(key) ?? 0
    if (count >= limit) return false
    this.#counts.set(key, count + 1)
    return true
  }

  release (key: string): void {
    const count = this.#counts.get(key) ?? 0
    if (count <= 1) this.#counts.delete(key)
    else this.#counts.set(key, count - 1)
  }

  count (key: string): number {
    return this.#counts.get(key) ?? 0
  }
}
