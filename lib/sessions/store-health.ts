import type { FastifyBaseLogger } from 'fastify'
import { errorIdentity } from '../serializers.js'

/**
 * Whether the connection store answers, as seen by this instance: one log line when it goes
 * away, one when it is back, never one per request in between.
 */
export class StoreHealth {
  available = true
  readonly #log: FastifyBaseLogger

  constructor (log: FastifyBaseLogger) {
    this.#log = log
  }

  lost (err: unknown): void {
    if (!this.available) return
    this.available = false
    this.#log.warn({ wsGuard: { err: errorIdentity(err) } }, 'websocket connection store unavailable')
  }

  back (): void {
    if (this.available) return
    this.available = true
    this.#log.info('websocket connection store available again')
  }
}
