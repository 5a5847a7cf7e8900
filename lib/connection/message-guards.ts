/** A route's message guards, validated: a size bound below `websocket.maxPayload`, and a rate. */
export interface MessageGuardSettings {
  readonly maxBytes: number | undefined
  readonly rate: MessageRateSettings | undefined
}

export interface MessageRateSettings {
  /** Messages per `interval`, refilled continuously. */
  readonly messages: number
  readonly interval: number
  /** The bucket's size: how many may arrive at once after a quiet spell. */
  readonly burst: number
  readonly perUser: boolean
  readonly onExcess: 'close' | 'drop'
}

/** What a message guard decided: deliver, drop, or end the connection. */
export type MessageVerdict = 'deliver' | 'drop' | 'tooBig' | 'tooFast'

/**
 * A token bucket, refilled lazily when a message arrives: no timer per connection. With
 * `perUser`, shared by a user's connections on the instance and forgotten with the last one.
 */
export class MessageBucket {
  tokens: number
  refilledAt: number
  holders = 0

  constructor (rate: MessageRateSettings, now: number) {
    this.tokens = rate.burst
    this.refilledAt = now
  }

  take (rate: MessageRateSettings, now: number): boolean {
    const tokens = Math.min(rate.burst, this.tokens + (now - this.refilledAt) * rate.messages / rate.interval)
    this.refilledAt = now
    if (tokens < 1) {
      this.tokens = tokens
      return false
    }
    this.tokens = tokens - 1
    return true
  }
}

/**
 * The buckets users share with `perUser`, one per user and route on the instance: a route's
 * rate is the route's, whatever other routes allow.
 */
export class UserBuckets {
  readonly #buckets = new Map<string, MessageBucket>()

  /** The bucket of a new connection: its own, or its user's on this route. */
  take (rate: MessageRateSettings, route: string, sub: unknown, now: number): MessageBucket {
    if (!rate.perUser || typeof sub !== 'string') return new MessageBucket(rate, now)
    const key = route + '\n' + sub
    let bucket = this.#buckets.get(key)
    if (bucket === undefined) {
      bucket = new MessageBucket(rate, now)
      this.#buckets.set(key, bucket)
    }
    bucket.holders++
    return bucket
  }

  /** A connection ended: its user's bucket is forgotten with the last one. */
  leave (rate: MessageRateSettings, route: string, sub: unknown, bucket: MessageBucket): void {
    if (!rate.perUser || typeof sub !== 'string') return
    if (--bucket.holders === 0) this.#buckets.delete(route + '\n' + sub)
  }
}

/** Checks one message against the route's guards: size first, as it costs nothing. */
export function judgeMessage (guards: MessageGuardSettings, bucket: MessageBucket | undefined, data: unknown, now: number): MessageVerdict {
  if (guards.maxBytes !== undefined && sizeOf(data) > guards.maxBytes) return 'tooBig'
  const rate = guards.rate
  if (rate === undefined || bucket!.take(rate, now)) return 'deliver'
  return rate.onExcess === 'drop' ? 'drop' : 'tooFast'
}

/** Bytes of a message as ws hands it over, whatever the socket's `binaryType`. */
function sizeOf (data: unknown): number {
  if (data instanceof Blob) return data.size
  if (Array.isArray(data)) {
    let total = 0
    for (const fragment of data as Buffer[]) total += fragment.length
    return total
  }
  return (data as ArrayBufferLike | Buffer).byteLength
}
