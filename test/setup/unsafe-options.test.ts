import type { WebSocketServer } from 'ws'
import { test, type Test } from 'tap'
import wsGuard, { type WsGuardOptions } from '../../index.js'
import { countingEcho, startApp } from '../helpers/app.js'
import { nextMessage, openClient } from '../helpers/clients.js'

type WebSocketOptions = NonNullable<WsGuardOptions['websocket']>

/** Starts a guarded app with `websocket` options; returns its warn-level lines, after an echo over a real socket. */
async function warningsOf (t: Test, websocket: WebSocketOptions | undefined): Promise<{ warnings: Array<Record<string, unknown>>, server: WebSocketServer | undefined }> {
  let server: WebSocketServer | undefined
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, websocket === undefined ? {} : { websocket })
    app.wsRoute('/ws', countingEcho().handler)
    server = app.websocketServer
  })
  const client = await openClient(t, started.url('/ws'))
  client.send('hello')
  t.equal(await nextMessage(client), 'hello', 'the app serves')
  client.close()
  return { warnings: started.logs.lines.filter((line) => line.level === 40), server }
}

const unsafe: Array<{ option: keyof WebSocketOptions & string, value: number, safe: number }> = [
  { option: 'maxFragments', value: 100_000, safe: 1024 },
  { option: 'maxBufferedChunks', value: 1e6, safe: 16 * 1024 },
  { option: 'maxPayload', value: 64 * 1024 * 1024, safe: 16 * 1024 * 1024 },
  { option: 'maxFragments', value: 0, safe: 1024 }
]

for (const { option, value, safe } of unsafe) {
  test(`websocket.${option}: ${value} logs one warning naming the option and the safe value`, async (t) => {
    const { warnings, server } = await warningsOf(t, { [option]: value })
    t.equal((server?.options as Record<string, unknown> | undefined)?.[option], value, 'the option is applied all the same')
    t.equal(warnings.length, 1, 'exactly one warn-level line')
    const [warning] = warnings
    t.match(warning?.msg, `websocket.${option}`, 'the message names the option')
    t.match(warning?.msg, `keep it at ${safe} or less`, 'and the safe value')
    if (value === 0) t.match(warning?.msg, 'no limit', '0 is called out as no limit')
    t.same(warning?.wsGuard, { option: `websocket.${option}`, value, safe }, 'and the structured fields')
  })
}

const safeValues: Array<{ name: string, websocket: WebSocketOptions | undefined }> = [
  { name: 'the defaults', websocket: undefined },
  { name: 'every limit at its safe value', websocket: { maxFragments: 1024, maxBufferedChunks: 16 * 1024, maxPayload: 16 * 1024 * 1024 } },
  { name: 'limits below the safe values', websocket: { maxFragments: 10, maxBufferedChunks: 100, maxPayload: 4096 } }
]

for (const { name, websocket } of safeValues) {
  test(`${name}: no warning`, async (t) => {
    const { warnings } = await warningsOf(t, websocket)
    t.same(warnings, [], 'no warn-level line')
  })
}
