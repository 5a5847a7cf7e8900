import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import { guardedApp } from '../helpers/app.js'
import { openClient, rawSocket, whenClosed } from '../helpers/clients.js'
import { recordChannels, type ChannelRecord } from '../helpers/logs.js'
import { rawUpgrade } from '../helpers/raw.js'
import { waitFor } from '../helpers/wait.js'

type Started = Awaited<ReturnType<typeof guardedApp>>

/** Waits for the one connection to be counted closed; returns the closed counters and the channel message. */
async function ended (t: Test, started: Started, record: ChannelRecord): Promise<{ closed: Record<string, number>, message: Record<string, unknown> | undefined }> {
  await waitFor(() => started.app.wsGuard.stats().open === 0 && record.closed.length === 1, 'the connection to be counted closed')
  const stats = started.app.wsGuard.stats()
  t.equal(stats.accepted, 1, 'one connection was accepted')
  return { closed: stats.closed, message: record.closed[0] }
}

/** Every counter 0 except `reason`, which is 1. */
function onlyReason (closed: Record<string, number>, reason: string): Record<string, number> {
  return Object.fromEntries(Object.keys(closed).map((key) => [key, key === reason ? 1 : 0]))
}

const invalidFrames: Array<{ name: string, frame: Buffer, code: string }> = [
  // FIN + opcode 3 (reserved), masked, empty.
  { name: 'a reserved opcode', frame: Buffer.from([0x83, 0x80, 0, 0, 0, 0]), code: 'WS_ERR_INVALID_OPCODE' },
  // A text frame 'hi' without a mask: clients must mask.
  { name: 'an unmasked frame', frame: Buffer.from([0x81, 0x02, 0x68, 0x69]), code: 'WS_ERR_EXPECTED_MASK' }
]

for (const { name, frame, code } of invalidFrames) {
  test(`a client that sends ${name} is counted as protocolError and logged once at info, without a stack`, async (t) => {
    const record = recordChannels(t)
    const started = await guardedApp(t)
    const socket = await rawUpgrade(t, started.port, '/ws')
    await waitFor(() => started.app.wsGuard.stats().open === 1, 'the connection to be tracked')
    const gone = new Promise((resolve) => socket.once('close', resolve))
    socket.resume()
    socket.write(frame)
    await gone
    const { closed, message } = await ended(t, started, record)
    t.same(closed, onlyReason(closed, 'protocolError'), 'counted as protocolError, nothing else')
    t.match(message, { route: '/ws', reason: 'protocolError' }, 'the closed channel says protocolError')
    const lines = started.logs.lines.filter((line) => line.msg === 'websocket client broke the protocol')
    t.equal(lines.length, 1, "one 'websocket client broke the protocol' line")
    t.equal(lines[0]?.level, 30, 'at info level')
    const err = (lines[0]?.wsGuard as { err?: { code?: string } } | undefined)?.err
    t.match(err?.code, /^WS_ERR_/, 'with the ws error code')
    t.equal(err?.code, code, code)
    t.equal(started.logs.lines.filter((line) => Number(line.level) >= 50).length, 0, 'no error-level line')
    t.notOk(started.logs.text.includes('stack'), 'no stack anywhere in the log')
  })
}

const abnormalEnds: Array<{ name: string, end: (client: WebSocket) => void }> = [
  { name: 'its TCP socket is destroyed', end: (client) => { rawSocket(client).destroy() } },
  { name: 'it terminates', end: (client) => { client.terminate() } }
]

for (const { name, end } of abnormalEnds) {
  test(`a client that goes without a close frame (${name}) is counted as abnormal`, async (t) => {
    const record = recordChannels(t)
    const started = await guardedApp(t)
    const client = await openClient(t, started.url('/ws'))
    end(client)
    const { closed, message } = await ended(t, started, record)
    t.same(closed, onlyReason(closed, 'abnormal'), 'counted as abnormal, not normal')
    t.match(message, { route: '/ws', reason: 'abnormal', code: 1006 }, 'the closed channel says abnormal, 1006')
    t.equal(started.logs.lines.filter((line) => Number(line.level) >= 50).length, 0, 'no error-level line')
  })
}

test('a client that closes with 1000 is counted as normal', async (t) => {
  const record = recordChannels(t)
  const started = await guardedApp(t)
  const client = await openClient(t, started.url('/ws'))
  const closed = whenClosed(client)
  client.close(1000)
  t.equal((await closed).code, 1000, 'the close handshake completes')
  const { closed: counters, message } = await ended(t, started, record)
  t.same(counters, onlyReason(counters, 'normal'), 'counted as normal')
  t.match(message, { route: '/ws', reason: 'normal', code: 1000 }, 'the closed channel says normal, 1000')
})
