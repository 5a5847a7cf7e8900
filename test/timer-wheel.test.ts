import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import { TimerWheel, type WheelEntry } from '../lib/timer-wheel.js'
import { waitFor } from './helpers/wait.js'

interface Entry extends WheelEntry {
  name: string
}

interface Call {
  name: string
  /** The `now` the wheel passed. */
  now: number
  /** The due time the entry had when it was scheduled last. */
  due: number
}

function entry (name: string): Entry {
  return { name, due: 0, slot: -1, wheelPrev: undefined, wheelNext: undefined }
}

/** A wheel that records its callbacks. */
function recordingWheel (tickMs: number, slots: number): { wheel: TimerWheel<Entry>, calls: Call[] } {
  const calls: Call[] = []
  const wheel = new TimerWheel<Entry>(tickMs, slots, (e, now) => { calls.push({ name: e.name, now, due: e.due }) })
  return { wheel, calls }
}

/** Blocks the event loop for `ms`, as a long synchronous task would. */
function stall (ms: number): void {
  const until = Date.now() + ms
  while (Date.now() < until) { /* busy */ }
}

function timeouts (): number {
  return process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
}

// Bounds on when callbacks happen are generous: a tick is 10 ms, the slack covers a busy CI box.
const slack = 150

test('calls each entry back once, in order, within a tick after it is due', async (t) => {
  const { wheel, calls } = recordingWheel(10, 64)
  const start = Date.now()
  const a = entry('a')
  const b = entry('b')
  const c = entry('c')
  wheel.schedule(c, start + 90)
  wheel.schedule(a, start + 30)
  wheel.schedule(b, start + 60)
  t.equal(wheel.size, 3, 'three entries scheduled')
  t.not(a.slot, -1, 'a scheduled entry knows its slot')
  await waitFor(() => calls.length === 3, 'three callbacks')
  t.same(calls.map((call) => call.name), ['a', 'b', 'c'], 'in due order')
  for (const call of calls) {
    t.ok(call.now >= call.due, `${call.name} is not called before it is due`)
    t.ok(call.now <= call.due + wheel.tickMs + slack, `${call.name} is called soon after it is due`)
  }
  t.equal(wheel.size, 0, 'nothing left')
  t.equal(a.slot, -1, 'a called entry is unscheduled')
  await sleep(60)
  t.equal(calls.length, 3, 'each entry is called once')
})

test('rescheduling moves an entry, later or earlier, without duplicating it', async (t) => {
  const { wheel, calls } = recordingWheel(10, 64)
  const start = Date.now()
  const later = entry('later')
  const earlier = entry('earlier')
  wheel.schedule(later, start + 40)
  wheel.schedule(earlier, start + 300)
  wheel.schedule(later, start + 160)
  wheel.schedule(earlier, start + 30)
  t.equal(wheel.size, 2, 'rescheduling does not add entries')
  await waitFor(() => calls.length === 1, 'the earlier entry')
  t.equal(calls[0]!.name, 'earlier', 'the entry moved earlier runs first')
  t.ok(calls[0]!.now < start + 300, 'the earlier entry runs at its new, earlier time')
  t.equal(wheel.size, 1, 'the later entry is still waiting')
  await waitFor(() => calls.length === 2, 'the later entry')
  t.equal(calls[1]!.name, 'later', 'then the entry moved later')
  t.ok(calls[1]!.now >= start + 160, 'the later entry does not run at its first due time')
  await sleep(200)
  t.equal(calls.length, 2, 'each entry ran once')
})

test('removed entries are never called', async (t) => {
  const { wheel, calls } = recordingWheel(10, 64)
  const start = Date.now()
  const kept = entry('kept')
  const removed = entry('removed')
  const never = entry('never scheduled')
  wheel.schedule(removed, start + 30)
  wheel.schedule(kept, start + 30)
  wheel.remove(removed)
  t.equal(removed.slot, -1, 'a removed entry is unscheduled')
  t.equal(wheel.size, 1, 'one entry left')
  wheel.remove(removed)
  wheel.remove(never)
  t.equal(wheel.size, 1, 'removing an unscheduled entry changes nothing')
  await waitFor(() => calls.length === 1, 'the kept entry')
  await sleep(60)
  t.same(calls.map((call) => call.name), ['kept'], 'only the kept entry ran')
})

test('a callback may remove or reschedule entries due on the same tick', async (t) => {
  const calls: string[] = []
  const first = entry('first')
  const removed = entry('removed by first')
  const moved = entry('moved by first')
  const wheel = new TimerWheel<Entry>(10, 64, (e) => {
    calls.push(e.name)
    if (e !== first) return
    wheel.remove(removed)
    wheel.schedule(moved, Date.now() + 40)
  })
  const due = Date.now() + 30
  wheel.schedule(first, due)
  wheel.schedule(removed, due)
  wheel.schedule(moved, due)
  await waitFor(() => calls.length >= 1, 'the first callback')
  t.same(calls, ['first'], 'neither the removed nor the moved entry runs on that tick')
  t.equal(removed.slot, -1, 'the removed entry is unscheduled')
  t.equal(wheel.size, 1, 'only the moved entry is left')
  await waitFor(() => calls.length === 2, 'the moved entry')
  t.same(calls, ['first', 'moved by first'], 'the moved entry runs once, at its new time')
  t.equal(wheel.size, 0, 'nothing left')
})

test('an entry due in a later rotation waits for its turn', async (t) => {
  // 8 slots of 10 ms: one rotation is 80 ms, the entry is due after three of them.
  const { wheel, calls } = recordingWheel(10, 8)
  const start = Date.now()
  wheel.schedule(entry('soon'), start + 25)
  wheel.schedule(entry('far'), start + 250)
  await waitFor(() => calls.length === 2, 'both entries', 2000)
  t.same(calls.map((call) => call.name), ['soon', 'far'], 'both ran, in due order')
  const far = calls[1]!
  t.ok(far.now >= start + 250, 'not called when its slot comes round before it is due')
  t.ok(far.now <= start + 250 + wheel.tickMs + slack, 'called on the rotation it is due in')
})

test('catches up on every skipped slot after an event-loop stall', async (t) => {
  const { wheel, calls } = recordingWheel(10, 64)
  const start = Date.now()
  wheel.schedule(entry('a'), start + 20)
  wheel.schedule(entry('b'), start + 40)
  wheel.schedule(entry('c'), start + 60)
  wheel.schedule(entry('d'), start + 400)
  stall(150)
  await waitFor(() => calls.length === 3, 'the three overdue entries')
  t.same(calls.map((call) => call.name), ['a', 'b', 'c'], 'overdue entries run in due order')
  t.equal(new Set(calls.map((call) => call.now)).size, 1, 'all on the first tick after the stall')
  t.ok(calls[0]!.now >= start + 150, 'after the stall')
  t.equal(wheel.size, 1, 'the entry due later still waits')
  await waitFor(() => calls.length === 4, 'the last entry')
  t.ok(calls[3]!.now >= start + 400, 'the entry due later is not called early')
})

test('a stall longer than a rotation visits each slot once and calls everything due', async (t) => {
  // 8 slots of 10 ms, a 300 ms stall: more than three rotations were skipped.
  const { wheel, calls } = recordingWheel(10, 8)
  const start = Date.now()
  wheel.schedule(entry('a'), start + 15)
  wheel.schedule(entry('b'), start + 45)
  wheel.schedule(entry('c'), start + 75)
  wheel.schedule(entry('not yet'), start + 600)
  stall(300)
  await waitFor(() => calls.length === 3, 'the overdue entries')
  t.same(calls.map((call) => call.name).sort(), ['a', 'b', 'c'], 'every overdue entry ran')
  t.equal(new Set(calls.map((call) => call.now)).size, 1, 'all on the first tick after the stall')
  await sleep(50)
  t.equal(calls.length, 3, 'an entry not due yet is not called with them')
  await waitFor(() => calls.length === 4, 'the entry due later', 2000)
  t.ok(calls[3]!.now >= start + 600, 'and later at its time')
})

test('an overdue entry runs on the next tick of a running wheel', async (t) => {
  const { wheel, calls } = recordingWheel(10, 4096)
  const keepAlive = entry('keep-alive')
  wheel.schedule(keepAlive, Date.now() + 5000)
  await sleep(50)
  const scheduledAt = Date.now()
  wheel.schedule(entry('overdue'), scheduledAt - 30)
  await waitFor(() => calls.length === 1, 'the overdue entry', 1000)
  t.ok(calls[0]!.now <= scheduledAt + wheel.tickMs + slack, 'called on the next tick')
  wheel.remove(keepAlive)
})

test('an overdue entry runs on the next tick of a wheel that was idle', async (t) => {
  // An idle wheel's clock is stale; a due time computed from the past must not land in a slot
  // the wheel has already passed (it would wait a whole rotation: 4096 ticks, 41 s here).
  const { wheel, calls } = recordingWheel(10, 4096)
  const first = entry('overdue after idling')
  const second = entry('overdue after a restart')
  // Unref'ed, a stuck wheel would not hold the process; still, leave nothing behind.
  t.teardown(() => { wheel.remove(first); wheel.remove(second) })
  await sleep(100)
  const scheduledAt = Date.now()
  wheel.schedule(first, scheduledAt - 30)
  await sleep(wheel.tickMs + slack)
  t.equal(calls.length, 1, 'called on the next tick of a wheel that never ran')

  // The same once the wheel has run, stopped and idled.
  wheel.remove(first)
  wheel.schedule(entry('a'), Date.now() + 10)
  await waitFor(() => calls.some((call) => call.name === 'a'), 'a', 1000)
  await sleep(100)
  const again = Date.now()
  wheel.schedule(second, again - 30)
  await sleep(wheel.tickMs + slack)
  t.ok(calls.some((call) => call.name === second.name), 'called on the next tick of a wheel that stopped')
})

/** Tracks the intervals created and not yet cleared while the test runs. */
function liveIntervals (t: Test): Set<NodeJS.Timeout> {
  const live = new Set<NodeJS.Timeout>()
  const { setInterval: realSet, clearInterval: realClear } = globalThis
  globalThis.setInterval = ((...args: Parameters<typeof realSet>) => {
    const handle = realSet(...args)
    live.add(handle)
    return handle
  }) as typeof realSet
  globalThis.clearInterval = ((handle: NodeJS.Timeout | undefined) => {
    if (handle !== undefined) live.delete(handle)
    realClear(handle)
  }) as typeof realClear
  t.teardown(() => {
    globalThis.setInterval = realSet
    globalThis.clearInterval = realClear
  })
  return live
}

test('the timer stops when the wheel is empty and never keeps the process alive', async (t) => {
  const live = liveIntervals(t)
  const refedBefore = timeouts()
  const { wheel, calls } = recordingWheel(10, 64)
  t.equal(live.size, 0, 'a new wheel has no timer')

  const a = entry('a')
  const b = entry('b')
  wheel.schedule(a, Date.now() + 10_000)
  wheel.schedule(b, Date.now() + 10_000)
  t.equal(live.size, 1, 'one timer however many entries')
  t.equal([...live][0]!.hasRef(), false, 'and it does not keep the process alive')
  t.equal(timeouts(), refedBefore, 'no ref\'ed timer was added')

  wheel.remove(a)
  t.equal(live.size, 1, 'still running with an entry left')
  wheel.remove(b)
  t.equal(live.size, 0, 'removing the last entry stops the timer')

  wheel.schedule(entry('c'), Date.now() + 20)
  t.equal(live.size, 1, 'scheduling again starts it again')
  await waitFor(() => calls.length === 1, 'c')
  t.equal(live.size, 0, 'calling back the last entry stops the timer')
  t.equal(wheel.size, 0, 'empty')
})
