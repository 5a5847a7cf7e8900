/** Something the wheel calls back at (or shortly after) its `due` time. */
export interface WheelEntry {
  /** Epoch ms at which the entry is due. */
  due: number
  /** Index of the slot holding the entry; -1 when not scheduled. */
  slot: number
  /** Position in its slot, kept by the wheel. */
  index: number
}

// An entry taken out of its slot on a tick, its callback still to come.
const pending = -2

/**
 * A hashed timer wheel: one interval timer for any number of entries, instead of a timer
 * per connection. Each tick visits one slot, so entries due at different times are handled
 * on different ticks and work spreads over the interval. An entry is called back within one
 * tick after its due time; it reschedules itself from the callback if it needs to.
 * Slots are arrays with swap-removal, not Sets: rescheduling 10k entries a second then
 * neither allocates nor rehashes.
 */
export class TimerWheel<T extends WheelEntry> {
  readonly tickMs: number
  readonly #slots: Array<T[] | undefined>
  /** Entries due on the current tick, reused from tick to tick. */
  readonly #due: T[] = []
  readonly #onDue: (entry: T, now: number) => void
  #timer: NodeJS.Timeout | undefined
  #lastTick: number
  #size = 0
  /** A clock updated on every tick: cheap enough to read on every frame. */
  now: number

  constructor (tickMs: number, slotCount: number, onDue: (entry: T, now: number) => void) {
    this.tickMs = tickMs
    this.#slots = new Array(slotCount)
    this.#onDue = onDue
    this.now = Date.now()
    this.#lastTick = Math.floor(this.now / tickMs)
  }

  get size (): number {
    return this.#size
  }

  schedule (entry: T, due: number): void {
    // An idle wheel's clock is stale: start it first, so the slot is computed from now.
    if (this.#timer === undefined) this.#start()
    if (entry.slot >= 0) this.#detach(entry)
    else this.#size++
    entry.due = due
    // The first tick at or after `due`, and never one already processed.
    const tick = Math.max(Math.ceil(due / this.tickMs), this.#lastTick + 1)
    const slot = tick % this.#slots.length
    let bucket = this.#slots[slot]
    if (bucket === undefined) {
      bucket = []
      this.#slots[slot] = bucket
    }
    entry.slot = slot
    entry.index = bucket.length
    bucket.push(entry)
  }

  remove (entry: T): void {
    if (entry.slot === -1) return
    if (entry.slot === pending) {
      // Taken out on this tick and counted out already: only its callback is left to cancel.
      entry.slot = -1
      return
    }
    this.#detach(entry)
    entry.slot = -1
    if (--this.#size === 0) this.#stop()
  }

  #detach (entry: T): void {
    const bucket = this.#slots[entry.slot]!
    const last = bucket.pop()!
    if (last !== entry) {
      bucket[entry.index] = last
      last.index = entry.index
    }
  }

  #start (): void {
    this.now = Date.now()
    this.#lastTick = Math.floor(this.now / this.tickMs)
    this.#timer = setInterval(() => this.#advance(), this.tickMs)
    // The wheel never keeps the process alive by itself.
    this.#timer.unref()
  }

  #stop (): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  #advance (): void {
    this.now = Date.now()
    const current = Math.floor(this.now / this.tickMs)
    // After an event-loop stall, catch up on every skipped slot (at most one rotation).
    const from = Math.max(this.#lastTick + 1, current - this.#slots.length + 1)
    this.#lastTick = current
    const due = this.#due
    for (let tick = from; tick <= current; tick++) {
      const bucket = this.#slots[tick % this.#slots.length]
      if (bucket === undefined) continue
      // Take the due entries out first, keeping the rest in place: callbacks then may
      // schedule or remove anything without disturbing this walk.
      let kept = 0
      for (let i = 0; i < bucket.length; i++) {
        const entry = bucket[i]!
        // Entries of a later rotation wait for their turn.
        if (entry.due > this.now) {
          entry.index = kept
          bucket[kept++] = entry
        } else {
          entry.slot = pending
          this.#size--
          due.push(entry)
        }
      }
      bucket.length = kept
    }
    for (let i = 0; i < due.length; i++) {
      const entry = due[i]!
      // Removed or rescheduled by an earlier callback of this tick: not due any more.
      if (entry.slot !== pending) continue
      entry.slot = -1
      this.#onDue(entry, this.now)
    }
    due.length = 0
    if (this.#size === 0) this.#stop()
  }
}
