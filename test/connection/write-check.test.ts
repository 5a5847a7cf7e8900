import { EventEmitter } from 'node:events'
import { PassThrough } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyRequest } from 'fastify'
import { test } from 'tap'
import type WebSocket from 'ws'
import { ConnectionTracker } from '../../lib/connection/tracker.js'
import { HandshakeState } from '../../lib/handshake/contract.js'
import { normalizeOptions, resolveRouteSettings } from '../../lib/setup/options.js'
import { StatsCounter } from '../../lib/stats.js'

/*
 * The write deadline's bookkeeping on a socket whose flushing the test controls byte by byte.
 * Over a real socket (write-deadline.test.ts) whether bytes are still queued when the wheel
 * looks depends on the kernel's buffers; here each case is certain.
 */

/** What the tracker reads of a ws socket and of the TCP socket under it. */
class ScriptedSocket extends EventEmitter {
  readyState = 1
  bufferedAmount = 0
  readonly _socket = { bytesWritten: 0, writableLength: 0 }
  terminated = false

  /** `bytes` queued, of which none has reached the kernel yet. */
  queue (bytes: number): void {
    this.bufferedAmount += bytes
    this._socket.writableLength += bytes
  }

  /** `bytes` of the queue reach the kernel. */
  flush (bytes: number): void {
    this.bufferedAmount -= bytes
    this._socket.writableLength -= bytes
    this._socket.bytesWritten += bytes
  }

  send (): void {}
  ping (): void {}
  close (): void {}
  terminate (): void {
    this.terminated = true
    this.readyState = 3
    this.emit('close', 1006)
  }
}

function track (writeDeadline: number): { socket: ScriptedSocket, tracker: ConnectionTracker, stats: StatsCounter, connection: ReturnType<ConnectionTracker['track']> } {
  const stats = new StatsCounter()
  const tracker = new ConnectionTracker(stats)
  const settings = resolveRouteSettings(normalizeOptions({ heartbeat: false, writeDeadline }), undefined, 'GET /ws')
  tracker.noteIntervals(settings)
  const socket = new ScriptedSocket()
  const request = { id: 'req-1', raw: {} } as unknown as FastifyRequest
  const state = new HandshakeState(Symbol('owner'), settings, '/ws', [], new PassThrough(), request)
  const connection = tracker.track(socket as unknown as WebSocket, state)
  return { socket, tracker, stats, connection }
}

test('bytes that keep leaving restart the write deadline; bytes that stay end the connection', async (t) => {
  const { socket, tracker, stats, connection } = track(100)
  socket.queue(64 * 1024)
  tracker.afterSend(connection)
  t.not(connection.stuckSince, 0, 'a send that leaves bytes queued starts the deadline')
  const started = connection.stuckSince
  // 1 KiB reaches the kernel every 20 ms, more often than the 100 ms deadline.
  const drain = setInterval(() => socket.flush(1024), 20)
  await sleep(450)
  clearInterval(drain)
  t.equal(socket.terminated, false, 'still open after 4.5 deadlines: bytes kept leaving')
  t.ok(connection.stuckSince > started, 'the deadline started again from the last progress')
  t.ok(socket.bufferedAmount > 0, 'and bytes were queued all along')
  await sleep(400)
  t.equal(socket.terminated, true, 'ended once the bytes stopped leaving')
  t.equal(stats.closed.writeDeadline, 1, 'counted as a write deadline')
})

test('a queue that empties clears the write deadline', async (t) => {
  const { socket, tracker, stats, connection } = track(100)
  socket.queue(1024)
  tracker.afterSend(connection)
  socket.flush(1024)
  await sleep(250)
  t.equal(connection.stuckSince, 0, 'nothing queued: no deadline running')
  t.equal(socket.terminated, false, 'and the connection stays')
  t.equal(stats.closed.writeDeadline, 0)
  socket.terminate()
})

test('a connection already closing is left to its close handshake when the wheel comes by', async (t) => {
  const { socket, tracker, stats, connection } = track(100)
  socket.queue(64 * 1024)
  tracker.afterSend(connection)
  // close() was called: ws waits for the peer's close frame, and ends the socket itself.
  socket.readyState = 2
  await sleep(300)
  t.equal(socket.terminated, false, 'not ended by the write deadline it is past')
  t.equal(stats.closed.writeDeadline, 0, 'nor counted as one')
  socket.terminate()
  t.equal(stats.closed.abnormal, 1, 'its close is counted once it comes')
})
