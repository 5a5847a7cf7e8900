import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import websocket from '@fastify/websocket'
import type WebSocket from 'ws'
import wsGuard, { type WsGuardOptions, type WsGuardRouteOptions } from '../../index.js'
import { startApp, type StartedApp } from '../helpers/app.js'
import { openClient, pauseReading, resumeReading, stream, whenClosed, type Stream, type StreamOptions } from '../helpers/clients.js'
import { rawUpgrade } from '../helpers/raw.js'
import { waitFor } from '../helpers/wait.js'

const writeDeadline = 300
// A heartbeat that never fires during these tests: a client that stops reading never answers
// pings either, and it is the write deadline that is under test.
const quietHeartbeat = { pingInterval: 5000, readDeadline: 60_000 }
const chunk = 64 * 1024
// One 64 KiB binary frame as sent: the payload and a 10-byte header.
const frame = chunk + 10

interface StreamingApp extends StartedApp {
  /** The server side of each connection, and its producer once the client asked for data. */
  streams: Stream[]
}

/**
 * An app whose `/stream` route starts producing 64 KiB frames when the client sends anything;
 * `/other` does the same with `route` as its config.wsGuard. `ownWebsocket`: the app registers
 * @fastify/websocket itself, before the guard.
 */
async function streamingApp (t: Parameters<typeof startApp>[0], options: WsGuardOptions, streamOptions: StreamOptions = {}, route: WsGuardRouteOptions = {}, ownWebsocket = false): Promise<StreamingApp> {
  const streams: Stream[] = []
  const handler = (socket: WebSocket): void => {
    socket.once('message', () => {
      const producer = stream(socket, { maxMs: 5000, ...streamOptions })
      streams.push(producer)
      t.teardown(producer.stop)
    })
  }
  const started = await startApp(t, async (app) => {
    if (ownWebsocket) await app.register(websocket)
    await app.register(wsGuard, options)
    app.wsRoute('/stream', handler)
    app.wsRoute('/other', { config: { wsGuard: route } }, handler)
  })
  return { ...started, streams }
}

/** A client, and how many messages it has read. */
interface Reader {
  client: WebSocket
  received: () => number
}

/** Opens a client on `path`, stops it reading, and asks for the stream. */
async function stalledClient (t: Parameters<typeof startApp>[0], app: StreamingApp, path = '/stream'): Promise<Reader> {
  const client = await openClient(t, app.url(path))
  let received = 0
  client.on('message', () => { received++ })
  pauseReading(client)
  client.send('go')
  return { client, received: () => received }
}

test('a client that stops reading while the server streams is terminated by the write deadline', async (t) => {
  const app = await streamingApp(t, { heartbeat: quietHeartbeat, writeDeadline, maxBufferedBytes: 32 * 1024 * 1024 })
  const { client } = await stalledClient(t, app)
  await waitFor(() => app.streams.length === 1, 'the stream to start')
  const producer = app.streams[0]!
  await waitFor(() => producer.closedAt !== 0, 'the server to end the connection', 5000)
  const stuckFor = producer.closedAt - producer.lastProgressAt
  t.ok(stuckFor >= writeDeadline - 40, `not before the write deadline (${stuckFor} ms after the last byte left)`)
  t.ok(stuckFor <= 2 * writeDeadline + 150, `soon after it (${stuckFor} ms after the last byte left)`)
  t.ok(producer.peakBuffered > 0, 'bytes had backed up on the server')
  t.ok(producer.peakBuffered < 32 * 1024 * 1024, `the buffer never came near maxBufferedBytes (peak ${producer.peakBuffered})`)
  const stats = app.app.wsGuard.stats()
  t.equal(stats.closed.writeDeadline, 1, 'recorded as a write deadline')
  t.equal(stats.closed.limit, 0, 'not as a buffer limit')
  t.equal(stats.open, 0, 'no longer counted open')
  const closed = whenClosed(client)
  resumeReading(client)
  t.equal((await closed).code, 1006, 'the client sees an abnormal closure once it reads again')
})

test('the write deadline holds when it is the only timer (heartbeat: false)', async (t) => {
  const app = await streamingApp(t, { heartbeat: false, writeDeadline, maxBufferedBytes: 32 * 1024 * 1024 })
  // An idle moment first: nothing is scheduled while the connection only sits there.
  const client = await openClient(t, app.url('/stream'))
  await sleep(200)
  pauseReading(client)
  client.send('go')
  await waitFor(() => app.streams.length === 1, 'the stream to start')
  const producer = app.streams[0]!
  await waitFor(() => producer.closedAt !== 0, 'the server to end the connection', 4000).catch((err: Error) => t.fail(err.message))
  t.equal(app.app.wsGuard.stats().closed.writeDeadline, 1, 'terminated by the write deadline')
  if (producer.closedAt !== 0) {
    const stuckFor = producer.closedAt - producer.firstBufferedAt
    t.ok(stuckFor >= writeDeadline - 40, `not before the write deadline (${stuckFor} ms after bytes first backed up)`)
    t.ok(producer.closedAt - producer.lastProgressAt <= 2 * writeDeadline + 150, 'soon after it')
  }
})

test('a buffer growing past maxBufferedBytes is terminated and server memory stays bounded', async (t) => {
  const maxBufferedBytes = 1024 * 1024
  // Fast, with a fresh buffer per frame: buffered data costs memory.
  const app = await streamingApp(t, { heartbeat: quietHeartbeat, writeDeadline: 60_000, maxBufferedBytes }, { perRound: 8, every: 5, fresh: true })
  const { client } = await stalledClient(t, app)
  await waitFor(() => app.streams.length === 1, 'the stream to start')
  const producer = app.streams[0]!
  await waitFor(() => producer.closedAt !== 0, 'the server to end the connection', 5000)
  t.ok(producer.peakBuffered > 0, 'bytes had backed up on the server')
  t.ok(producer.peakBuffered <= maxBufferedBytes + frame, `the server-side buffer never exceeded maxBufferedBytes plus one frame (peak ${producer.peakBuffered})`)
  t.ok(producer.peakMemoryGrowth < 64 * 1024 * 1024, `buffer memory stayed bounded (grew at most ${Math.round(producer.peakMemoryGrowth / 1024 / 1024)} MiB)`)
  const stats = app.app.wsGuard.stats()
  t.equal(stats.closed.limit, 1, 'recorded as a limit')
  t.equal(stats.closed.writeDeadline, 0, 'not as a write deadline')
  client.terminate()
})

test('the buffer limit holds when the app registered @fastify/websocket itself', async (t) => {
  const maxBufferedBytes = 1024 * 1024
  const app = await streamingApp(t, { heartbeat: quietHeartbeat, writeDeadline: 60_000, maxBufferedBytes }, { perRound: 8, every: 5 }, {}, true)
  const { client } = await stalledClient(t, app)
  await waitFor(() => app.streams.length === 1, 'the stream to start')
  const producer = app.streams[0]!
  await waitFor(() => producer.closedAt !== 0, 'the server to end the connection', 5000)
  t.ok(producer.peakBuffered > 0 && producer.peakBuffered <= maxBufferedBytes + frame, `the buffer never exceeded maxBufferedBytes plus one frame (peak ${producer.peakBuffered})`)
  t.equal(app.app.wsGuard.stats().closed.limit, 1, 'recorded as a limit')
  client.terminate()
})

test('control frames that fill the buffer past maxBufferedBytes are caught at the next check', async (t) => {
  const maxBufferedBytes = 64 * 1024
  let peak = 0
  let closedAt = 0
  let filledAt = 0
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: { pingInterval: 100, readDeadline: 5000 }, writeDeadline: 60_000, maxBufferedBytes })
    app.wsRoute('/ws', (socket) => {
      socket.on('close', () => { closedAt = Date.now() })
      socket.once('message', () => {
        // Pings do not go through send(): only the periodic check sees what they buffer.
        const payload = Buffer.alloc(125)
        for (let i = 0; i < 200_000 && socket.bufferedAmount <= maxBufferedBytes; i++) socket.ping(payload)
        peak = socket.bufferedAmount
        filledAt = Date.now()
      })
    })
  })
  const client = await openClient(t, url('/ws'))
  pauseReading(client)
  client.send('go')
  await waitFor(() => closedAt !== 0, 'the server to end the connection', 3000)
  t.ok(peak > maxBufferedBytes, 'the pings filled the buffer past the limit')
  t.ok(closedAt - filledAt <= 100 + 150, `terminated at the next check (${closedAt - filledAt} ms later)`)
  t.equal(app.wsGuard.stats().closed.limit, 1, 'recorded as a limit')
})

test('a slow client that keeps draining is not terminated', async (t) => {
  // The server would write 50 MB/s, keeping at most 4 MiB buffered; the client reads 2 MiB
  // every 50 ms (40 MB/s): bytes back up on the server, but they keep leaving. A client that
  // reads in tiny amounts would not do: the kernel wakes a blocked writer only once half its
  // send buffer (up to 4 MiB) is free, and Node hands the whole backlog to the kernel as one
  // write that counts as flushed only once complete, so the server would see progress less
  // often than the write deadline. Nor would a ws client that pauses and resumes: reading at
  // full speed, its receive buffer grows until nothing backs up.
  const streams: Stream[] = []
  const { app, port } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: quietHeartbeat, writeDeadline, maxBufferedBytes: 128 * 1024 * 1024 })
    app.wsRoute('/firehose', (socket) => {
      const producer = stream(socket, { perRound: 8, maxMs: 1500, maxBuffered: 4 * 1024 * 1024 })
      streams.push(producer)
      t.teardown(producer.stop)
    })
  })
  const client = await rawUpgrade(t, port, '/firehose')
  let read = 0
  let budget = 0
  client.on('data', (chunk: Buffer) => {
    read += chunk.length
    budget -= chunk.length
    if (budget <= 0) client.pause()
  })
  const reader = setInterval(() => {
    budget = 2 * 1024 * 1024
    client.resume()
  }, 50)
  t.teardown(() => clearInterval(reader))
  await sleep(1600)
  const producer = streams[0]!
  t.ok(producer.peakBuffered > 0, `the client was slower than the server: bytes backed up (peak ${producer.peakBuffered})`)
  t.ok(read > 0, `the client kept reading (${read} bytes)`)
  t.equal(producer.closedAt, 0, 'the server kept the connection')
  t.equal(app.wsGuard.stats().closed.writeDeadline, 0, 'no write deadline')
  t.equal(app.wsGuard.stats().open, 1, 'still counted open')
})

test('writeDeadline: false disables the stuck check (per route)', async (t) => {
  const app = await streamingApp(t, { heartbeat: { pingInterval: 100, readDeadline: 60_000 }, writeDeadline, maxBufferedBytes: 32 * 1024 * 1024 }, { maxBuffered: 1024 * 1024 }, { writeDeadline: false })
  const checked = await stalledClient(t, app, '/stream')
  await waitFor(() => app.streams.length === 1, 'the first stream to start')
  const { client: unchecked, received } = await stalledClient(t, app, '/other')
  await waitFor(() => app.streams.length === 2, 'the second stream to start')
  const [checkedStream, uncheckedStream] = app.streams as [Stream, Stream]
  await waitFor(() => uncheckedStream.firstBufferedAt !== 0, 'bytes to back up', 5000)
  await sleep(3 * writeDeadline)
  t.not(checkedStream.closedAt, 0, 'the same stall ends a connection with a write deadline')
  t.equal(uncheckedStream.closedAt, 0, 'not one without')
  resumeReading(unchecked)
  await waitFor(() => received() === uncheckedStream.sent, 'the client to read everything', 5000)
  const closed = whenClosed(unchecked)
  unchecked.close()
  t.equal((await closed).code, 1005, 'it closes normally')
  await waitFor(() => app.app.wsGuard.stats().open === 0, 'both connections to be counted closed')
  const stats = app.app.wsGuard.stats()
  t.equal(stats.closed.writeDeadline, 1, 'one write deadline')
  t.equal(stats.closed.normal, 1, 'one normal close')
  checked.client.terminate()
})
