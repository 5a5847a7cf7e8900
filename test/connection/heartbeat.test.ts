import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import WebSocket from 'ws'
import type { Test } from 'tap'
import wsGuard from '../../index.js'
import { startApp } from '../helpers/app.js'
import { openClient, whenClosed } from '../helpers/clients.js'
import { waitFor } from '../helpers/wait.js'

const heartbeat = { pingInterval: 100, readDeadline: 250 }
// The wheel ticks every few ms here (a small fraction of the ping interval); the slack covers
// a busy machine.
const slack = 150

/** Counts the pings a client receives, with their arrival times. */
function pingLog (socket: WebSocket): number[] {
  const times: number[] = []
  socket.on('ping', () => times.push(Date.now()))
  return times
}

test('a client that never answers pings is terminated within one read deadline plus one tick', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat })
    app.wsRoute('/ws', () => {})
  })
  const client = await openClient(t, url('/ws'), [], { autoPong: false })
  const openedAt = Date.now()
  const pings = pingLog(client)
  const closed = await whenClosed(client)
  const lived = closed.at - openedAt
  t.ok(lived >= heartbeat.readDeadline - 10, `not before the read deadline (lived ${lived} ms)`)
  t.ok(lived <= heartbeat.readDeadline + slack, `within the read deadline plus a tick (lived ${lived} ms)`)
  t.equal(closed.code, 1006, 'terminated: no close handshake with a dead peer')
  t.ok(pings.length >= 1, 'it was pinged before')
  await waitFor(() => app.wsGuard.stats().open === 0, 'the server to count the close')
  const stats = app.wsGuard.stats()
  t.equal(stats.closed.heartbeatTimeout, 1, 'recorded as a heartbeat timeout')
  t.equal(stats.closed.normal, 0, 'not as a normal close')
})

test('the read deadline defaults to one and a half ping intervals', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: { pingInterval: 100 } })
    app.wsRoute('/ws', () => {})
  })
  const client = await openClient(t, url('/ws'), [], { autoPong: false })
  const openedAt = Date.now()
  const closed = await whenClosed(client)
  const lived = closed.at - openedAt
  t.ok(lived >= 150 - 10 && lived <= 150 + slack, `terminated after about 150 ms (lived ${lived} ms)`)
  await waitFor(() => app.wsGuard.stats().closed.heartbeatTimeout === 1, 'the heartbeat timeout to be counted')
})

test('a responsive idle client survives several read deadlines and is pinged once per interval', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat })
    app.wsRoute('/ws', () => {})
  })
  const client = await openClient(t, url('/ws'))
  const pings = pingLog(client)
  await sleep(4 * heartbeat.readDeadline)
  t.equal(client.readyState, client.OPEN, 'still open after four read deadlines')
  t.ok(pings.length >= 6 && pings.length <= 12, `about one ping per interval (${pings.length} in 1000 ms)`)
  const gaps = pings.slice(1).map((time, i) => time - pings[i]!)
  t.ok(gaps.every((gap) => gap >= heartbeat.pingInterval / 2), `pings are spread over time, not bunched (gaps ${gaps.join(', ')})`)
  const stats = app.wsGuard.stats()
  t.equal(stats.open, 1, 'counted open')
  t.equal(stats.closed.heartbeatTimeout, 0, 'no heartbeat timeout')
})

const frames: Array<[string, (socket: WebSocket) => void]> = [
  ['a data message', (socket) => socket.send('still here')],
  ['a ping from the client', (socket) => socket.ping()],
  ['an unsolicited pong', (socket) => socket.pong()]
]
for (const [name, sendFrame] of frames) {
  test(`${name} moves the read deadline`, async (t) => {
    const { app, url } = await startApp(t, async (app) => {
      await app.register(wsGuard, { heartbeat })
      app.wsRoute('/ws', () => {})
    })
    // It never answers pings: only its own frames keep it alive.
    const client = await openClient(t, url('/ws'), [], { autoPong: false })
    const closed = whenClosed(client)
    let lastFrameAt = Date.now()
    const timer = setInterval(() => {
      sendFrame(client)
      lastFrameAt = Date.now()
    }, 100)
    t.teardown(() => clearInterval(timer))
    await sleep(4 * heartbeat.readDeadline)
    t.equal(client.readyState, client.OPEN, 'open after four read deadlines')
    clearInterval(timer)
    const { at, code } = await closed
    t.equal(code, 1006, 'terminated once it went silent')
    t.ok(at - lastFrameAt >= heartbeat.readDeadline - 10, `not before the deadline (${at - lastFrameAt} ms after its last frame)`)
    t.ok(at - lastFrameAt <= heartbeat.readDeadline + slack, `one read deadline after its last frame (${at - lastFrameAt} ms)`)
    await waitFor(() => app.wsGuard.stats().closed.heartbeatTimeout === 1, 'the heartbeat timeout to be counted')
  })
}

test('heartbeat: false sends no pings and never times a peer out', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: false })
    app.wsRoute('/ws', () => {})
  })
  const client = await openClient(t, url('/ws'), [], { autoPong: false })
  const pings = pingLog(client)
  await sleep(600)
  t.equal(pings.length, 0, 'no pings')
  t.equal(client.readyState, client.OPEN, 'still open')
  t.equal(app.wsGuard.stats().closed.heartbeatTimeout, 0, 'no heartbeat timeout')
})

test('a route overrides the heartbeat through config.wsGuard', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: { pingInterval: 2000, readDeadline: 5000 } })
    app.wsRoute('/fast', { config: { wsGuard: { heartbeat } } }, () => {})
    app.wsRoute('/off', { config: { wsGuard: { heartbeat: false } } }, () => {})
    app.wsRoute('/default', () => {})
  })
  const fast = await openClient(t, url('/fast'), [], { autoPong: false })
  const openedAt = Date.now()
  const off = await openClient(t, url('/off'), [], { autoPong: false })
  const plain = await openClient(t, url('/default'), [], { autoPong: false })
  const offPings = pingLog(off)
  const plainPings = pingLog(plain)
  const closed = await whenClosed(fast)
  const lived = closed.at - openedAt
  t.ok(lived >= heartbeat.readDeadline - 10 && lived <= heartbeat.readDeadline + slack, `the fast route times out after its own read deadline (${lived} ms)`)
  await sleep(heartbeat.readDeadline)
  t.equal(off.readyState, off.OPEN, 'heartbeat: false on a route keeps a silent peer')
  t.equal(offPings.length, 0, 'and never pings it')
  t.equal(plain.readyState, plain.OPEN, 'the plugin-wide read deadline (5 s) applies to the other route')
  t.ok(plainPings.length <= 1, 'which pings every 2 s')
  await waitFor(() => app.wsGuard.stats().closed.heartbeatTimeout === 1, 'one heartbeat timeout')
})

test('a read deadline not longer than the ping interval is refused at registration', async (t) => {
  await t.rejects(startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: { pingInterval: 200, readDeadline: 200 } })
  }), { code: 'FST_WS_GUARD_INVALID_OPTION', message: /heartbeat\.readDeadline \(200\) must be longer than pingInterval \(200\)/ })
})

test('a route read deadline not longer than its ping interval is refused at declaration', async (t) => {
  await t.rejects(startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', { config: { wsGuard: { heartbeat: { pingInterval: 100, readDeadline: 50 } } } }, () => {})
  }), { code: 'FST_WS_GUARD_INVALID_OPTION', message: /readDeadline \(50\) must be longer than pingInterval \(100\)/ })
})

/** The most of `times` that fall within any `window` ms. */
function busiest (times: number[], window: number): number {
  let most = 0
  for (const start of times) {
    most = Math.max(most, times.filter((time) => time >= start && time < start + window).length)
  }
  return most
}

// 200 connections pinged every 200 ms: spread evenly, a 10 ms window holds about 10 pings (a
// few times that when the wheel catches up on late ticks under the load of opening 200
// clients in this process); one sweep puts them all in one.
const pingInterval = 200
const count = 200

interface Pinged {
  socket: WebSocket
  openedAt: number
  /** Arrival time of every ping. */
  pings: number[]
}

/** Opens `count` clients at once, recording pings from the first byte on. */
async function openPinged (t: Test, url: string): Promise<Pinged[]> {
  const clients: Pinged[] = []
  for (let batch = 0; batch < count; batch += 50) {
    await Promise.all(Array.from({ length: 50 }, () => new Promise<void>((resolve, reject) => {
      const socket = new WebSocket(url)
      const client: Pinged = { socket, openedAt: 0, pings: [] }
      t.teardown(() => socket.terminate())
      socket.on('ping', () => client.pings.push(Date.now()))
      socket.once('error', reject)
      socket.once('open', () => {
        client.openedAt = Date.now()
        clients.push(client)
        resolve()
      })
    })))
  }
  return clients
}

test('the first pings of many connections are spread over the interval, not sent in one tick', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: { pingInterval, readDeadline: 3000 } })
    app.wsRoute('/ws', () => {})
  })
  const clients = await openPinged(t, url('/ws'))
  await waitFor(() => clients.every((client) => client.pings.length > 0), 'a first ping on every connection', 3000)
  const delays = clients.map((client) => client.pings[0]! - client.openedAt).sort((a, b) => a - b)
  const span = delays[delays.length - 1]! - delays[0]!
  t.ok(span >= pingInterval / 2, `first pings come anywhere in the interval after the open (delays span ${span} ms of ${pingInterval})`)
  const most = busiest(clients.map((client) => client.pings[0]!), 10)
  t.ok(most <= count / 3, `no 10 ms window holds more than a third of the first pings (busiest: ${most} of ${count})`)
})

test('pings that fell due during an event-loop stall do not stay bunched afterwards', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: { pingInterval, readDeadline: 3000 } })
    app.wsRoute('/ws', () => {})
  })
  const clients = await openPinged(t, url('/ws'))
  await sleep(pingInterval * 2)
  // Half an interval of pings fall due during the stall and go out together when it ends
  // (unavoidable); on later rounds they must be spread again, or every GC pause would
  // clump more connections into one tick for good.
  const stallEnd = Date.now() + pingInterval / 2
  while (Date.now() < stallEnd) { /* a long synchronous task */ }
  await sleep(pingInterval * 3 + 50)
  const after = clients.map((client) => client.pings.filter((time) => time >= stallEnd))
  const firstAfter = after.map((pings) => pings[0]!)
  const burstEnd = Math.min(...firstAfter) + 10
  const burst = after.filter((pings) => pings[0]! <= burstEnd && pings.length >= 3)
  t.ok(burst.length >= count / 5, `the stall made a burst of pings (${burst.length} of ${count} connections)`)
  const later = burst.map((pings) => pings[2]!)
  const laterSpan = Math.max(...later) - Math.min(...later)
  t.ok(laterSpan >= pingInterval / 4, `two rounds later their pings are spread again (they span ${laterSpan} ms)`)
})
