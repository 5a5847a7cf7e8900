import { randomBytes } from 'node:crypto'
import { closeCodes } from './codes.js'
import type { ProbeConnection } from './probe-connection.js'
import { closePayload, encodeFrame, opcodes, parseClose, parseFrame } from './frames.js'
import { failed, skipped, stageResult } from './stage.js'
import { startClock } from './time.js'
import type { DoctorOptions, Finding, StageResult } from './types.js'

// After our close frame, how long the server gets to close the TCP connection.
const closeGrace = 500

/**
 * Stage 6: stay on the upgraded connection for `--listen` ms, as a well-behaved client (pongs
 * answered, a close answered), and report the server's heartbeats, the round trip of one ping
 * of ours, and any close.
 */
export async function listen (conn: ProbeConnection, options: DoctorOptions): Promise<StageResult> {
  if (options.listen === 0) return skipped('listen', '--listen 0: not listening after the upgrade')
  const elapsed = startClock()
  const probe = randomBytes(8)
  conn.write(encodeFrame(opcodes.ping, probe))
  const pings: number[] = []
  const pongs: number[] = []
  let rtt: number | undefined
  let dataFrames = 0
  let close: { code: number, reason: string } | undefined
  let dropped = false
  while (close === undefined) {
    const waited = await conn.wait((buffer) => parseFrame(buffer) !== undefined, Math.max(0, options.listen - elapsed()))
    if (waited === 'timeout') break
    if (waited === 'closed') {
      dropped = true
      break
    }
    const frame = parseFrame(conn.buffer)!
    conn.consume(frame.size)
    const at = elapsed()
    if (frame.opcode === opcodes.ping) {
      pings.push(at)
      conn.write(encodeFrame(opcodes.pong, frame.payload))
    } else if (frame.opcode === opcodes.pong) {
      // Our probe's pong gives the round trip; any other pong is an unsolicited heartbeat (RFC 6455 §5.5.3).
      if (rtt === undefined && frame.payload.equals(probe)) rtt = at
      else pongs.push(at)
    } else if (frame.opcode === opcodes.close) {
      close = parseClose(frame.payload)
      conn.write(encodeFrame(opcodes.close, frame.payload.subarray(0, 2)))
    } else {
      dataFrames++
    }
  }
  const lasted = elapsed()
  if (!dropped) {
    if (close === undefined) conn.write(encodeFrame(opcodes.close, closePayload(1000, 'doctor done')))
    await conn.wait(() => false, closeGrace)
  }
  const heartbeats = pings.length === 0 ? 'no server ping' : `${pings.length} server ping(s)${interval(pings)}`
  const roundTrip = rtt === undefined ? 'no pong to our ping' : `ping round trip ${rtt} ms`
  // No heartbeat in the window says nothing of an interval longer than it: a note, not a warning.
  const note = pings.length + pongs.length === 0 && close === undefined && !dropped
    ? [`note: no ping arrived within ${options.listen} ms, which says nothing of a longer interval: to see one, rerun with --listen longer than the server's ping interval (fastify-ws-guard pings every 30 s by default: --listen 35000)`]
    : []
  return stageResult('listen', elapsed(), `${ending(lasted, close, dropped)}: ${heartbeats}, ${roundTrip}, ${dataFrames} data frame(s)`, {
    details: [
      `server pings at: ${times(pings)}`,
      `unsolicited server pongs at: ${times(pongs)}`,
      ...note
    ],
    findings: verdicts(options.listen, close, dropped, rtt),
    data: { listenedMs: lasted, serverPingsAtMs: pings, unsolicitedPongsAtMs: pongs, pingRoundTripMs: rtt ?? null, dataFrames, close: close ?? null, dropped }
  })
}

function ending (lasted: number, close: { code: number, reason: string } | undefined, dropped: boolean): string {
  if (dropped) return `dropped after ${lasted} ms`
  if (close === undefined) return `open for ${lasted} ms`
  return `closed by the server after ${lasted} ms with ${close.code} ${JSON.stringify(close.reason)}`
}

function verdicts (listenMs: number, close: { code: number, reason: string } | undefined, dropped: boolean, rtt: number | undefined): Finding[] {
  if (close !== undefined) {
    const explain = closeCodes[close.code] ?? {
      cause: 'a code outside the standard ones: 3000-3999 belong to libraries, 4000-4999 to the application',
      fix: 'read the reason and the server\'s documentation'
    }
    return [failed(String(close.code), `the server closed the connection: ${close.code} ${JSON.stringify(close.reason)}: ${explain.cause}`, explain.fix)]
  }
  if (dropped) {
    return [failed('1006', 'the connection was cut without a close frame (a browser reports 1006): the server terminated the socket or crashed, or a proxy or load balancer timed it out', 'read the server log; if cuts come after a fixed idle time, enable heartbeats shorter than the proxy\'s timeout')]
  }
  if (rtt === undefined) {
    return [{ verdict: 'warn', cause: `the server did not answer our ping in ${listenMs} ms; RFC 6455 requires a pong`, fix: 'the server (or a proxy) is stalled, or its WebSocket implementation ignores pings' }]
  }
  return []
}

function interval (at: readonly number[]): string {
  if (at.length < 2) return ''
  const every = (at[at.length - 1]! - at[0]!) / (at.length - 1)
  return `, every ~${Math.round(every)} ms`
}

function times (at: readonly number[]): string {
  return at.length === 0 ? '-' : at.map((ms) => `${Math.round(ms)} ms`).join(', ')
}
