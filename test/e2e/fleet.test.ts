import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import WebSocket from 'ws'
import type { RunningRedis } from '../helpers/redis.js'
import { startRedis } from '../helpers/redis.js'
import { assertRefusal } from '../helpers/refusals.js'
import { bearer, mint, now, secretBytes } from '../helpers/tokens.js'
import { closeWithin, connectAs, describeOutcome, echoWithin, openAs, startFleet, startInstance, testPrefix, type CloseSeen, type FleetInstance, type FleetOptions } from './fleet.js'

// A fleet of three real processes running the built package, sharing one Redis, lives
// through the subtests in turn as a deployment would: per-user limits, disconnect and revoke
// fan-out, a thousand connect/close cycles, a Redis outage, then kill -9 of an instance. One
// fleet for the file (starting a process costs seconds on a busy machine); each subtest has
// users of its own, and the ones that break something (the outage, the kill) come last.

const leaseTtl = 3000
const renewPeriod = Math.floor(leaseTtl / 3)
const handshakeTimeout = 2000
const fanOutBudget = 1000

async function tokenFor (sub: string, iat = now()): Promise<string> {
  return await mint(secretBytes, {}, { sub, iat })
}

/** A handshake refused over HTTP with `status` and `code`. */
async function expectHttpRefusal (t: Test, instance: FleetInstance, token: string, status: number, code: string, path = '/ws'): Promise<void> {
  t.comment(`${instance.name}${path}: expecting ${status} ${code}`)
  assertRefusal(t, await connectAs(instance.url(path), token), status, code)
}

/** With `rejectWith: 'close'`: the upgrade completes, then the close the client reads. */
async function closeRefusal (url: string, token: string, ms = 5000): Promise<CloseSeen | string> {
  const socket = new WebSocket(url, [], bearer(token))
  socket.on('error', () => {})
  const refused = new Promise<string>((resolve) => socket.once('unexpected-response', (_request, response) => resolve(`HTTP ${response.statusCode}`)))
  const closed = closeWithin(socket, ms).then((seen) => seen ?? 'still open')
  const outcome = await Promise.race([closed, refused])
  socket.terminate()
  return outcome
}

async function stillOpen (t: Test, socket: WebSocket, what: string): Promise<void> {
  t.equal(socket.readyState, WebSocket.OPEN, `${what}: open`)
  t.equal(await echoWithin(socket, `ping ${what}`), `ping ${what}`, `${what}: echoes`)
}

/** The earliest lease expiry of `sub` (epoch ms, by Redis's clock), read from Redis itself. */
async function earliestLeaseExpiry (redis: RunningRedis, prefix: string, sub: string): Promise<number> {
  const score = await redis.command('EVAL', "local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES') return first[2]", '1', `${prefix}{user:${sub}}`)
  return Number(score)
}

test('a fleet of three processes sharing Redis', async (t) => {
  const redis = await startRedis(t)
  if (redis === undefined) return
  const options: FleetOptions = { redisUrl: redis.url, prefix: testPrefix('file'), leaseTtl, guard: { maxConnectionsPerUser: 2, handshakeTimeout } }
  const fleet = await startFleet(t, 3, options)
  const [a, b, c] = fleet as [FleetInstance, FleetInstance, FleetInstance]

  t.test('the per-user limit holds across instances: the third connection is refused wherever it lands', async (t) => {
    const alice = await tokenFor('limit-alice')
    const bob = await tokenFor('limit-bob')
    await openAs(t, a.url(), alice, 'alice on A')
    await openAs(t, b.url(), alice, 'alice on B')
    t.equal(await c.count('limit-alice'), 2, 'C counts alice\'s two connections, held by A and B')

    const before = await rejectionsOf(fleet)
    for (const instance of fleet) {
      await expectHttpRefusal(t, instance, alice, 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
      const closed = await closeRefusal(instance.url('/ws-close'), alice)
      t.same(typeof closed === 'string' ? closed : [closed.code, closed.reason], [4429, 'too many connections; retry-after=5000'], `${instance.name}/ws-close: 4429`)
    }
    t.same((await rejectionsOf(fleet)).map((n, i) => n - before[i]!), [2, 2, 2], 'each instance refused alice twice (HTTP and close)')
    t.equal(await a.count('limit-alice'), 2, 'the refusals took no slot')

    const bobs = [await openAs(t, c.url(), bob, 'bob on C'), await openAs(t, a.url(), bob, 'bob on A')]
    for (const [i, socket] of bobs.entries()) await stillOpen(t, socket, `bob #${i + 1}`)
    t.equal(await b.count('limit-bob'), 2, 'bob has his own two slots')
  })

  t.test('disconnect and revoke through one instance reach the others within one second', async (t) => {
    // Issued well before the revocation below.
    const alice = await tokenFor('fanout-alice', now(-10))
    const bob = await tokenFor('fanout-bob', now(-10))
    const bobs = [await openAs(t, b.url(), bob, 'bob on B'), await openAs(t, c.url(), bob, 'bob on C')]

    const kicked = [await openAs(t, b.url(), alice, 'alice on B'), await openAs(t, c.url(), alice, 'alice on C')]
    const kickedCloses = kicked.map(async (socket) => await closeWithin(socket, 5000))
    const disconnectAt = Date.now()
    t.same(await a.disconnect({ sub: 'fanout-alice' }, { code: 4000, reason: 'kicked by an admin' }), { closed: 0 }, 'A itself held none')
    const disconnected = await Promise.all(kickedCloses)
    t.same(disconnected.map((close) => close && [close.code, close.reason]), [[4000, 'kicked by an admin'], [4000, 'kicked by an admin']], 'alice on B and C got the code and reason given')
    const disconnectFanOut = lastCloseAfter(disconnected, disconnectAt)
    t.comment(`disconnect fan-out: last close seen ${disconnectFanOut} ms after the call to A`)
    t.ok(disconnectFanOut <= fanOutBudget, `alice's sockets on B and C closed within one second (${disconnectFanOut} ms)`)
    for (const [i, socket] of bobs.entries()) await stillOpen(t, socket, `bob #${i + 1}`)
    // The limit is 2: alice's slots are given back as her sockets close.
    await waitForCount(a, 'fanout-alice', 0)

    const revoked = [await openAs(t, b.url(), alice, 'alice on B again'), await openAs(t, c.url(), alice, 'alice on C again')]
    const revokedCloses = revoked.map(async (socket) => await closeWithin(socket, 5000))
    const revokeAt = Date.now()
    const revocation = await a.revoke({ sub: 'fanout-alice' })
    t.equal(revocation.closed, 0, 'A itself held none')
    const closes = await Promise.all(revokedCloses)
    t.same(closes.map((close) => close && [close.code, close.reason]), [[4401, 'token revoked'], [4401, 'token revoked']], 'B and C closed alice with 4401 token revoked')
    const revokeFanOut = lastCloseAfter(closes, revokeAt)
    t.comment(`revoke fan-out: last close seen ${revokeFanOut} ms after the call to A`)
    t.ok(revokeFanOut <= fanOutBudget, `within one second (${revokeFanOut} ms)`)
    for (const [i, socket] of bobs.entries()) await stillOpen(t, socket, `bob #${i + 1} after the revoke`)

    await waitForCount(a, 'fanout-alice', 0)
    for (const instance of fleet) await expectHttpRefusal(t, instance, alice, 401, 'FST_WS_GUARD_TOKEN_REVOKED')
    // Issued the second after the revocation's: valid once that second has come.
    const laterIat = revocation.after + 1
    const fresh = await tokenFor('fanout-alice', laterIat)
    await sleep(Math.max(0, laterIat * 1000 - Date.now()))
    const freshSockets: WebSocket[] = []
    for (const instance of [a, b]) {
      const socket = await openAs(t, instance.url(), fresh, `fresh token on ${instance.name}`)
      await stillOpen(t, socket, `alice with a fresh token on ${instance.name}`)
      freshSockets.push(socket)
    }
    // The limit is 2: the fresh token on C once one of those has gone.
    freshSockets[0]!.close()
    await closeWithin(freshSockets[0]!, 2000)
    await waitForCount(a, 'fanout-alice', 1)
    await stillOpen(t, await openAs(t, c.url(), fresh, 'fresh token on C'), 'alice with a fresh token on C')

    const late = await startInstance(t, 'D', options)
    // An instance started after the revocation refuses the revoked token from its first handshake.
    await expectHttpRefusal(t, late, alice, 401, 'FST_WS_GUARD_TOKEN_REVOKED')
    freshSockets[1]!.close()
    await closeWithin(freshSockets[1]!, 2000)
    await waitForCount(a, 'fanout-alice', 1)
    const onLate = await openAs(t, late.url(), fresh, 'fresh token on D')
    await stillOpen(t, onLate, 'alice with a fresh token on D')
    // D is killed in teardown: its lease is given back first, so that none outlives the subtest.
    onLate.close()
    await closeWithin(onLate, 2000)
    await waitForCount(a, 'fanout-alice', 1)
  })

  t.test('1,000 connect/close cycles over three instances leave no lease behind', async (t) => {
    const users = Array.from({ length: 50 }, (_, i) => `cycle-${i}`)
    const tokens = await Promise.all(users.map(async (sub) => await tokenFor(sub)))
    const pattern = `${options.prefix}{user:cycle-`
    const cycles = 1000
    const batch = 20
    const failures: string[] = []
    let leftovers = 0
    const started = Date.now()
    for (let first = 0; first < cycles; first += batch) {
      await Promise.all(Array.from({ length: Math.min(batch, cycles - first) }, async (_, j) => {
        const i = first + j
        const instance = fleet[i % fleet.length]!
        const outcome = await connectAs(instance.url(), tokens[i % users.length]!)
        if (outcome.kind !== 'open') {
          failures.push(`cycle ${i} on ${instance.name}: ${describeOutcome(outcome)}`)
          return
        }
        const closed = closeWithin(outcome.socket, 5000)
        outcome.socket.close(1000)
        if (await closed === null) {
          outcome.socket.terminate()
          failures.push(`cycle ${i} on ${instance.name}: no close within 5 s`)
        }
      }))
      // After every batch, well inside the leases' ttl: a lease not given back is still there.
      const keys = await keysSettled(redis, pattern)
      if (keys !== 0) leftovers++
    }
    const duration = Date.now() - started
    t.comment(`${cycles} connect/close cycles in ${duration} ms (${batch} at a time, ${users.length} users, Redis checked after each batch)`)
    t.same(failures.slice(0, 5), [], `every cycle opened and closed (${failures.length} failed)`)
    t.equal(leftovers, 0, 'no lease left after any batch')
    // Every earlier subtest's sockets are closed too: no lease of anybody's is left.
    const everyone = `${options.prefix}{user:`
    const keys = await keysSettled(redis, everyone)
    t.comment(`keys under ${everyone} at the end: ${keys}`)
    t.equal(keys, 0, 'no lease set left in Redis')
    const counts = await Promise.all(users.map(async (sub, i) => await fleet[i % fleet.length]!.count(sub)))
    t.same(counts.filter((count) => count !== 0), [], 'count() is 0 for every user')
    const sessions = await Promise.all(fleet.map(async (instance) => (await instance.sessions()).filter((session) => session.sub?.startsWith('cycle-'))))
    t.same(sessions.flat(), [], 'no cycle session open anywhere')
  })

  // Revoked before the outage, checked after it.
  const eve = await tokenFor('outage-eve', now(-10))

  t.test('Redis stops: handshakes that need it get 503 at once, open connections live on; Redis returns: all resumes by itself', async (t) => {
    t.equal((await a.revoke({ sub: 'outage-eve' })).closed, 0, 'eve revoked before the outage')
    const alice = await tokenFor('outage-alice')
    const bob = await tokenFor('outage-bob')
    const carol = await tokenFor('outage-carol')
    const open = [await openAs(t, a.url(), alice, 'alice on A'), await openAs(t, b.url(), alice, 'alice on B'), await openAs(t, c.url(), bob, 'bob on C')]
    const closedEarly: number[] = []
    for (const socket of open) socket.once('close', (code) => closedEarly.push(code))
    t.equal(await a.count('outage-alice'), 2, 'alice holds two slots before the outage')
    for (const instance of fleet) await expectHttpRefusal(t, instance, eve, 401, 'FST_WS_GUARD_TOKEN_REVOKED')

    await redis.stop()
    for (const instance of fleet) {
      const asked = Date.now()
      const outcome = await connectAs(instance.url(), carol, handshakeTimeout + 2000)
      const took = Date.now() - asked
      t.comment(`${instance.name} during the outage: ${outcome.kind === 'refused' ? `${outcome.status} ${outcome.body}` : describeOutcome(outcome)} after ${took} ms`)
      t.not(outcome.kind, 'timeout', `${instance.name}: an answer, no hang`)
      assertRefusal(t, outcome, 503, 'FST_WS_GUARD_STORE_UNAVAILABLE')
      t.ok(took <= handshakeTimeout, `${instance.name}: within handshakeTimeout (${took} ms)`)
    }
    const closed = await closeRefusal(a.url('/ws-close'), carol, handshakeTimeout + 2000)
    t.same(typeof closed === 'string' ? closed : [closed.code, closed.reason], [1013, 'try again later; retry-after=5000'], 'rejectWith close: 1013')
    for (const [i, socket] of open.entries()) await stillOpen(t, socket, `connection #${i + 1} during the outage`)
    t.same(closedEarly, [], 'no open connection was touched')

    const restartedAt = Date.now()
    await redis.restart()
    for (const instance of fleet) {
      const deadline = Date.now() + 15_000
      let last = 'none'
      let opened: WebSocket | undefined
      while (opened === undefined && Date.now() < deadline) {
        const outcome = await connectAs(instance.url(), carol, handshakeTimeout + 2000)
        if (outcome.kind === 'open') opened = outcome.socket
        else {
          last = outcome.kind === 'refused' ? `${outcome.status} ${outcome.body}` : describeOutcome(outcome)
          await sleep(100)
        }
      }
      t.ok(opened !== undefined, `${instance.name} accepts again, not restarted${opened === undefined ? ` (last: ${last})` : ''}`)
      if (opened !== undefined) {
        await stillOpen(t, opened, `carol on ${instance.name}`)
        opened.close()
        await closeWithin(opened, 2000)
      }
    }
    t.comment(`handshakes accepted on all three ${Date.now() - restartedAt} ms after the restart`)

    // The restarted Redis is empty: the leases come back with the next renewal.
    const expected = { 'outage-alice': 2, 'outage-bob': 1, 'outage-carol': 0 }
    let counts: Record<string, number> = {}
    const resyncDeadline = Date.now() + renewPeriod + 2000
    do {
      counts = Object.fromEntries(await Promise.all(Object.keys(expected).map(async (sub) => [sub, await a.count(sub)])))
      if (JSON.stringify(counts) === JSON.stringify(expected)) break
      await sleep(50)
    } while (Date.now() < resyncDeadline)
    t.same(counts, expected, 'count() matches the open connections again: the leases were re-added')
    t.comment(`counts resynced ${Date.now() - restartedAt} ms after the restart`)
    for (const [i, socket] of open.entries()) await stillOpen(t, socket, `connection #${i + 1} after the outage`)
    t.same(closedEarly, [], 'and none closed meanwhile')
  })

  // A Redis without persistence comes back empty. Leases are re-added by the instances that
  // hold them, and so are revocations: each instance keeps its copy and gives the store back
  // what it lost, so that an instance started later loads it too.
  t.test('a revocation made before the outage still holds once Redis is back, empty', async (t) => {
    for (const instance of fleet) await expectHttpRefusal(t, instance, eve, 401, 'FST_WS_GUARD_TOKEN_REVOKED')
    const deadline = Date.now() + 5000
    let held = 0
    while (held === 0 && Date.now() < deadline) {
      held = Number(await redis.command('ZCARD', `${options.prefix}{revocations}`))
      if (held === 0) await sleep(50)
    }
    t.ok(held > 0, `the instances gave the store its revocations back (${held} indexed)`)
  })

  t.test('kill -9 of the instance holding alice\'s leases: her slots stay taken until the leases lapse, then free', async (t) => {
    const alice = await tokenFor('kill-alice')
    const held = [await openAs(t, a.url(), alice, 'alice #1 on A'), await openAs(t, a.url(), alice, 'alice #2 on A')]
    t.equal(await b.count('kill-alice'), 2, 'B counts the two leases A holds')

    const closes = held.map(async (socket) => await closeWithin(socket, 5000))
    await a.kill()
    const killedAt = Date.now()
    const expiry = await earliestLeaseExpiry(redis, options.prefix, 'kill-alice')
    t.ok(expiry > killedAt, `the earliest lease still runs ${expiry - killedAt} ms after the kill`)
    t.ok((await Promise.all(closes)).every((close) => close !== null), 'alice\'s clients saw A die')

    await expectHttpRefusal(t, b, alice, 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
    const refusedAt = Date.now()
    t.ok(refusedAt < expiry, `refused while the dead instance's leases were live (${refusedAt - killedAt} ms after the kill, ${expiry - refusedAt} ms before the first lapses): not before the lease says so`)
    t.equal(await c.count('kill-alice'), 2, 'both leases still count')

    const deadline = killedAt + leaseTtl + renewPeriod + 2000
    let socket: WebSocket | undefined
    let attempts = 0
    const refusals = new Set<string>()
    while (socket === undefined && Date.now() < deadline) {
      attempts++
      const outcome = await connectAs((attempts % 2 === 0 ? b : c).url(), alice)
      if (outcome.kind === 'open') {
        socket = outcome.socket
        t.teardown(() => outcome.socket.terminate())
      } else {
        refusals.add(outcome.kind === 'refused' ? String(outcome.status) : describeOutcome(outcome))
        await sleep(50)
      }
    }
    const openedAt = Date.now()
    const recovery = openedAt - killedAt
    t.comment(`kill -9 -> a slot for alice again after ${recovery} ms (leaseTtl ${leaseTtl}, renew period ${renewPeriod}, ${attempts} attempts on B and C)`)
    t.same([...refusals], ['429'], 'only 429s while the leases lived')
    t.ok(socket !== undefined, 'a connection for alice succeeds once the leases lapse')
    t.ok(openedAt >= expiry, `not before the earliest lease lapsed (${openedAt - expiry} ms after)`)
    t.ok(recovery <= leaseTtl + renewPeriod, `within leaseTtl + one renew period (${recovery} ms <= ${leaseTtl + renewPeriod} ms)`)
    if (socket !== undefined) await stillOpen(t, socket, 'alice on B or C')
  })
})

/** Refusals of alice's third connection so far, per instance. */
async function rejectionsOf (fleet: FleetInstance[]): Promise<number[]> {
  return await Promise.all(fleet.map(async (instance) => (await instance.stats()).rejected.FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS ?? 0))
}

/** ms from `since` to the last close; Infinity when one never came. */
function lastCloseAfter (closes: Array<CloseSeen | null>, since: number): number {
  return Math.max(...closes.map((close) => (close?.at ?? Infinity) - since))
}

/** Polls `count()` until it says `expected`, at most two seconds (a release is sent as the server socket closes). */
async function waitForCount (instance: FleetInstance, sub: string, expected: number): Promise<void> {
  const deadline = Date.now() + 2000
  let count = await instance.count(sub)
  while (count !== expected && Date.now() < deadline) {
    await sleep(20)
    count = await instance.count(sub)
  }
  if (count !== expected) throw new Error(`count(${sub}) stayed ${count}, expected ${expected}`)
}

/** Keys under `pattern` once the releases in flight have landed: polled up to one second. */
async function keysSettled (redis: RunningRedis, pattern: string): Promise<number> {
  const deadline = Date.now() + 1000
  let keys = await redis.keysUnder(pattern)
  while (keys > 0 && Date.now() < deadline) {
    await sleep(10)
    keys = await redis.keysUnder(pattern)
  }
  return keys
}
