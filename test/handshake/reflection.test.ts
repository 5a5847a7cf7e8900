import { test } from 'tap'
import { authApp, guardedApp } from '../helpers/app.js'
import { tryConnect } from '../helpers/clients.js'
import { guardLines } from '../helpers/logs.js'
import { handshake, rawExchange, rawHead } from '../helpers/raw.js'
import { assertRefusal } from '../helpers/refusals.js'
import { bearer, mint, now, secretBytes } from '../helpers/tokens.js'

/*
 * What a client sends never comes back whole: no token in a selected subprotocol, whatever
 * its letter case, and at most about 100 characters of an Origin in a body or a log line.
 */

for (const rejectWith of ['http', 'close'] as const) {
  test(`a Bearer.<token> in any letter case is never selected nor echoed (rejectWith: '${rejectWith}')`, async (t) => {
    const token = await mint(secretBytes, { sub: 'alice', exp: now(600) })
    const app = await authApp(t, { secret: secretBytes }, { plugin: { rejectWith } })
    for (const marker of ['Bearer.', 'BEARER.', 'bEaReR.']) {
      // Offered alone: nothing safe to select, so the refusal goes over HTTP in both modes.
      const alone = await rawExchange(app.port, handshake('/ws', { 'Sec-WebSocket-Protocol': marker + token }))
      t.equal(alone.status, 400, `${marker} alone: 400`)
      t.notOk(alone.text.includes(token), `${marker} alone: the token is not in the answer`)
      // Beside an application protocol, a token in the header too: accepted, the 101 names the app's.
      const head = await rawHead(app.port, handshake('/ws', { 'Sec-WebSocket-Protocol': `chat.v1, ${marker}${token}`, Authorization: `Bearer ${token}` }))
      t.equal(head.status, 101, `${marker} beside chat.v1: accepted`)
      t.equal(head.headers['sec-websocket-protocol'], 'chat.v1', 'the 101 names chat.v1')
    }
    // A refusal in close mode that names a protocol: never the token's.
    const refused = await rawHead(app.port, handshake('/ws', { 'Sec-WebSocket-Protocol': `Bearer.${token}, chat.v1` }))
    if (rejectWith === 'close') {
      t.equal(refused.status, 101, 'close mode: the refusal upgrades to carry its close frame')
      t.equal(refused.headers['sec-websocket-protocol'], 'chat.v1')
    } else {
      t.equal(refused.status, 401)
    }
    t.notOk(JSON.stringify(refused.headers).includes(token))
  })
}

test('an unlisted Origin of 15 KB comes back as 100 characters at most, in the body and the log', async (t) => {
  const app = await guardedApp(t, { origins: ['https://app.example.com'] })
  const origin = 'https://' + 'o'.repeat(15_000) + '.example'
  const outcome = await tryConnect(app.url('/ws'), [], { origin })
  const refusal = assertRefusal(t, outcome, 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  const longestRun = (text: string): number => Math.max(0, ...(text.match(/o+/g) ?? []).map((run) => run.length))
  t.ok(longestRun(refusal.body.message) <= 100, `the body quotes ${longestRun(refusal.body.message)} characters of it`)
  t.ok(refusal.raw.length < 400, `the body is ${refusal.raw.length} bytes`)
  const [line] = guardLines(app.logs)
  t.ok(line !== undefined && longestRun(JSON.stringify(line)) <= 100, 'so does the log line')
  t.ok(longestRun(app.logs.text) <= 100, 'and nothing else logged quotes more')
})

test('a malformed Origin of 15 KB is cut the same way', async (t) => {
  const app = await guardedApp(t, { origins: ['https://app.example.com'] })
  const refusal = assertRefusal(t, await rawExchange(app.port, handshake('/ws', { Origin: 'o'.repeat(15_000) })), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.ok(refusal.raw.length < 400, `the body is ${refusal.raw.length} bytes`)
})

test('an origins function refusing a long Origin quotes 100 characters of it at most', async (t) => {
  const app = await guardedApp(t, { origins: async () => false })
  const refusal = assertRefusal(t, await tryConnect(app.url('/ws'), [], { origin: 'https://' + 'f'.repeat(5000) + '.example' }), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.ok(refusal.raw.length < 400, `the body is ${refusal.raw.length} bytes`)
  const sync = await guardedApp(t, { origins: () => false })
  t.ok(assertRefusal(t, await tryConnect(sync.url('/ws'), [], { origin: 'https://' + 'f'.repeat(5000) + '.example' }), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED').raw.length < 400)
})

test('with maxConnectionsPerUser, a token without a string sub is refused: it would escape the count', async (t) => {
  const app = await authApp(t, { secret: secretBytes }, { plugin: { maxConnectionsPerUser: 3 } })
  for (const claims of [{}, { sub: 42 }, { sub: ['a'] }]) {
    const token = await mint(secretBytes, { ...claims, exp: now(600) } as Record<string, unknown>)
    const refusal = assertRefusal(t, await tryConnect(app.url('/ws'), [], bearer(token)), 401, 'FST_WS_GUARD_TOKEN_INVALID')
    t.match(refusal.body.message, /the token has no subject/)
    t.match(String(refusal.headers['www-authenticate']), /error="invalid_token"/)
  }
  t.equal(app.calls, 0)
  // Without the limit, a token without sub is still accepted, as before.
  const open = await authApp(t, { secret: secretBytes })
  const outcome = await tryConnect(open.url('/ws'), [], bearer(await mint(secretBytes, { exp: now(600) })))
  t.equal(outcome.kind, 'open')
  if (outcome.kind === 'open') outcome.socket.terminate()
})
