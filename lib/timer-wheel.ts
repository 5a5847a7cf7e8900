/** Something the wheel calls back at (or shortly after) its `due` time. */
export interface WheelEntry {
  /** Epoch ms at which the entry is due. */
  due: number
  /** Index of the slot holding the entry; -1 when not scheduled. */
  slot: number
  /** Neighbours in the wheel's list that holds the entry, kept by the wheel. */
  wheelPrev: WheelEntry | undefined
  wheelNext: WheelEntry | undefined
}

// An entry taken out of its slot on a tick, its callback still to come.
const pending = -2

/**
 * A hashed timer wheel: one interval timer for any number of entries, instead of a timer
 * per connection. Each tick visits one slot, so entries due at different times are handled
 * on different ticks and work spreads over the interval. An entry is called back within one
 * tick after its due time; it reschedules itself from the callback if it needs to.
 * Slots are intrusive linked lists, as Node's own timer lists are: scheduling, moving and
 * removing an entry are O(1) and never allocate, however many entries move every second.
 */
export class TimerWheel<T extends WheelEntry> {
  readonly tickMs: number
  readonly #slotCount: number
  /** The first entry of each slot's list. */
  readonly #heads: Array<WheelEntry | undefined>
  /** Entries taken out on the current tick, in order, their callbacks still to come. */
  #pendingHead: WheelEntry | undefined
  #pendingTail: WheelEntry | undefined
  readonly #onDue: (entry: T, now: number) => void
  #timer: NodeJS.Timeout | undefined
  #lastTick = 0
  #size = 0
  /** A clock updated on every tick: cheap enough to read on every frame. */
  now = Date.now()

  constructor (tickMs: number, slotCount: number, onDue: (entry: T, now: number) => void) {
    this.tickMs = tickMs
    this.#slotCount = slotCount
    this.#heads = new Array(slotCount).fill(undefined)
    this.#onDue = onDue
    this.#lastTick = Math.floor(this.now / tickMs)
  }

  get size (): number {
    return this.#size
  }

  schedule (entry: T, due: number): void {
    // An idle wheel's clock is stale: start it first, so the slot is computed from now.
    if (this.#timer === undefined) this.#start()
    if (entry.slot === -1 || entry.slot === pending) this.#size++
    if (entry.slot !== -1) this.#unlink(entry)
    entry.due = due
    // The first tick at or after `due`, and never one already processed.
    const tick = Math.max(Math.ceil(due / this.tickMs), this.#lastTick + 1)
    const slot = tick % this.#slotCount
    const head = this.#heads[slot]
    entry.wheelPrev = undefined
    entry.wheelNext = head
    if (head !== undefined) head.wheelPrev = entry
    this.#heads[slot] = entry
    entry.slot = slot
  }

  remove (entry: T): void {
    if (entry.slot === -1) return
    // A pending entry was counted out when it was taken from its slot.
    const counted = entry.slot !== pending
    this.#unlink(entry)
    entry.slot = -1
    if (counted && --this.#size === 0) this.#stop()
  }

  /** Takes an entry out of the list that holds it: its slot's, or the pending list. */
  #unlink (entry: WheelEntry): void {
    const { wheelPrev: prev, wheelNext: next } = entry
    if (prev !== undefined) prev.wheelNext = next
    else if (entry.slot === pending) this.#pendingHead = next
    else this.#heads[entry.slot] = next
    if (next !== undefined) next.wheelPrev = prev
    else if (entry.slot === pending) this.#pendingTail = prev
    entry.wheelPrev = undefined
    entry.wheelNext = undefined
  }

  /** Puts an entry in the pending list right after `anchor` (first when `anchor` is undefined). */
  #insertPending (entry: WheelEntry, anchor: WheelEntry | undefined): void {
    const next = anchor === undefined ? this.#pendingHead : anchor.wheelNext
    entry.slot = pending
    entry.wheelPrev = anchor
    entry.wheelNext = next
    if (anchor === undefined) this.#pendingHead = entry
    else anchor.wheelNext = entry
    if (next === undefined) this.#pendingTail = entry
    else next.wheelPrev = entry
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
    const from = Math.max(this.#lastTick + 1, current - this.#slotCount + 1)
    this.#lastTick = current
    // Take the due entries out first: callbacks then may schedule or remove anything,
    // pending entries included, without disturbing this walk.
    for (let tick = from; tick <= current; tick++) {
      // A slot lists its newest entry first: each due one goes in before those of its slot
      // taken already, so that callbacks run oldest first.
      const before = this.#pendingTail
      let entry = this.#heads[tick % this.#slotCount]
      while (entry !== undefined) {
        const next = entry.wheelNext
        // Entries of a later rotation wait for their turn.
        if (entry.due <= this.now) {
          this.#unlink(entry)
          this.#insertPending(entry, before)
          this.#size--
        }
        entry = next
      }
    }
    let entry = this.#pendingHead
    while (entry !== undefined) {
      this.#unlink(entry)
      entry.slot = -1
      this.#onDue(entry as T, this.now)
      // The callbacks may have removed or rescheduled any other pending entry.
      entry = this.#pendingHead
    }
    if (this.#size === 0) this.#stop()
  }
}
