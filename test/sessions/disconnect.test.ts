import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { MemoryStore } from '../../index.js'
import { startApp, type StartedApp } from '../helpers/app.js'
import { ask, openClient, whenClosed, type Closed } from '../helpers/clients.js'
import { bearer, mint, secret, secretBytes } from '../helpers/tokens.js'
import { waitFor } from '../helpers/wait.js'

// app.wsGuard.disconnect(): closes the matching sessions on every instance that shares the
// store. Two apps sharing one MemoryStore stand for a fleet.

function echo (socket: WebSocket): void {
  socket.on('message', (data) => socket.send(String(data)))
}

async function instance (t: Test, store: MemoryStore): Promise<StartedApp> {
  return await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, store })
    app.wsRoute('/ws', echo)
    app.wsRoute('/rooms/:room', echo)
    app.wsRoute('/public', { config: { wsGuard: { auth: false } } }, echo)
  })
}

async function fleet (t: Test): Promise<{ store: MemoryStore, a: StartedApp, b: StartedApp }> {
  const store = new MemoryStore()
  return { store, a: await instance(t, store), b: await instance(t, store) }
}

async function connect (t: Test, started: StartedApp, path: string, claims?: Record<string, unknown>): Promise<WebSocket> {
  return await openClient(t, started.url(path), [], claims === undefined ? {} : bearer(await mint(secretBytes, claims)))
}

/** The instance's info lines about disconnects. */
function disconnectLines (started: StartedApp): Array<Record<string, unknown>> {
  return started.logs.lines.filter((line) => line.msg === 'websocket sessions disconnected')
}

/** Each client still answers an echo. */
async function stillOpen (t: Test, clients: Record<string, WebSocket>): Promise<void> {
  for (const [name, client] of Object.entries(clients)) t.equal(await ask(client, name), name, `${name} is still open`)
}

function closeOf (closed: Closed): [number, string] {
  return [closed.code, closed.reason]
}

test('disconnect() closes the matching sessions on this instance and on the others, with the code and reason given', async (t) => {
  const { a, b } = await fleet(t)
  const aliceA = await connect(t, a, '/ws', { sub: 'alice' })
  const aliceB1 = await connect(t, b, '/ws', { sub: 'alice' })
  const aliceB2 = await connect(t, b, '/rooms/7', { sub: 'alice' })
  const bobA = await connect(t, a, '/ws', { sub: 'bob' })
  const bobB = await connect(t, b, '/ws', { sub: 'bob' })
  const anonymous = await connect(t, a, '/public')
  const closes = [aliceA, aliceB1, aliceB2].map(whenClosed)

  const closedHere = await a.app.wsGuard.disconnect({ sub: 'alice' }, { code: 4000, reason: 'moved to another room' })
  t.equal(closedHere, 1, 'resolves with how many closed on this instance')
  for (const closed of await Promise.all(closes)) t.same(closeOf(closed), [4000, 'moved to another room'], 'each of alice\'s sessions sees the code and reason')
  await stillOpen(t, { bobA, bobB, anonymous })

  await waitFor(() => a.app.wsGuard.stats().open === 2 && b.app.wsGuard.stats().open === 1, 'the closes to be counted')
  t.equal(a.app.wsGuard.stats().closed.disconnected, 1, 'counted as disconnected on a')
  t.equal(b.app.wsGuard.stats().closed.disconnected, 2, 'and on b')
  t.match(disconnectLines(a), [{ level: 30, wsGuard: { closed: 1, code: 4000 } }], 'an info line on a')
  t.match(disconnectLines(b), [{ level: 30, wsGuard: { closed: 2, code: 4000 } }], 'and on b')
})

test('the default close is 4403 "disconnected"; a filter by route or by jti', async (t) => {
  const { a, b } = await fleet(t)
  const roomA = await connect(t, a, '/rooms/1', { sub: 'alice' })
  const roomB = await connect(t, b, '/rooms/2', { sub: 'bob' })
  const plain = await connect(t, b, '/ws', { sub: 'bob', jti: 'b-1' })
  const other = await connect(t, b, '/ws', { sub: 'bob', jti: 'b-2' })
  const carol = await connect(t, a, '/ws', { sub: 'carol', jti: 'b-1' })
  const rooms = [roomA, roomB].map(whenClosed)
  t.equal(await b.app.wsGuard.disconnect({ route: '/rooms/:room' }), 1, 'one room session on b')
  for (const closed of await Promise.all(rooms)) t.same(closeOf(closed), [4403, 'disconnected'], 'every room session, on both')
  await stillOpen(t, { plain, other, carol })

  const byJti = whenClosed(plain)
  t.equal(await a.app.wsGuard.disconnect({ sub: 'bob', jti: 'b-1' }), 0, 'none on a')
  t.same(closeOf(await byJti), [4403, 'disconnected'], 'bob\'s b-1 session closes')
  await stillOpen(t, { other, carol })
  t.match(disconnectLines(a), [{ wsGuard: { closed: 1, code: 4403 } }], 'a logged its room close, and nothing when nothing closed')
})

test('codes 1000, 1001, 1008 and 4000 to 4999, and a reason of 123 bytes', async (t) => {
  const { a } = await fleet(t)
  const reason = 'é'.repeat(61) + 'x'
  t.equal(Buffer.byteLength(reason), 123)
  for (const code of [1000, 1001, 1008, 4000, 4999]) {
    const client = await connect(t, a, '/ws', { sub: `user-${code}` })
    const closed = whenClosed(client)
    t.equal(await a.app.wsGuard.disconnect({ sub: `user-${code}` }, { code, reason }), 1)
    t.same(closeOf(await closed), [code, reason], `code ${code} with the reason as given`)
  }
})

test('a disconnect as the session is closing already closes it once', async (t) => {
  const { a } = await fleet(t)
  const client = await connect(t, a, '/ws', { sub: 'alice' })
  const closed = whenClosed(client)
  const [first, second] = await Promise.all([
    a.app.wsGuard.disconnect({ sub: 'alice' }, { code: 4001 }),
    a.app.wsGuard.disconnect({ sub: 'alice' }, { code: 4002 })
  ])
  t.same([first, second], [1, 0], 'the second finds it closing')
  t.equal((await closed).code, 4001, 'with the first code')
  await waitFor(() => a.app.wsGuard.stats().open === 0, 'the close to be counted')
  t.equal(a.app.wsGuard.stats().closed.disconnected, 1, 'counted once')
})

test('disconnect() refuses what it cannot send, before closing anything anywhere', async (t) => {
  const { store, a, b } = await fleet(t)
  const aliceA = await connect(t, a, '/ws', { sub: 'alice' })
  const aliceB = await connect(t, b, '/ws', { sub: 'alice' })
  const published: unknown[] = []
  const publish = store.publish.bind(store)
  store.publish = (message) => {
    published.push(message)
    publish(message)
  }
  const tooLong = 'x'.repeat(124)
  const cases: Array<[filter: unknown, options: unknown, message: RegExp]> = [
    [{}, undefined, /disconnect\(\) needs a filter with sub, jti or route; to close every connection, close the app/],
    [{ sub: undefined }, undefined, /disconnect\(\) needs a filter with sub, jti or route/],
    [null, undefined, /disconnect\(\) takes a filter \{ sub\?, jti\?, route\? \}, got null/],
    ['alice', undefined, /disconnect\(\) takes a filter \{ sub\?, jti\?, route\? \}, got the string "alice"/],
    [{ sub: 5 }, undefined, /disconnect\(\): filter\.sub must be a string, got number/],
    [{ sub: 'alice' }, { code: 5 }, /disconnect\(\): code must be 1000, 1001, 1008 or 4000 to 4999, got number 5$/],
    [{ sub: 'alice' }, { code: 1006 }, /code must be 1000, 1001, 1008 or 4000 to 4999, got number 1006$/],
    [{ sub: 'alice' }, { code: 3000 }, /got number 3000$/],
    [{ sub: 'alice' }, { code: 5000 }, /got number 5000$/],
    [{ sub: 'alice' }, { code: 4000.5 }, /got number 4000\.5$/],
    [{ sub: 'alice' }, { code: Number.NaN }, /got number NaN$/],
    [{ sub: 'alice' }, { code: '4000' }, /code must be 1000, 1001, 1008 or 4000 to 4999, got the string "4000"$/],
    [{ sub: 'alice' }, { reason: tooLong }, /disconnect\(\): reason must be a string of at most 123 bytes, got 124 bytes/],
    [{ sub: 'alice' }, { reason: 'é'.repeat(62) }, /reason must be a string of at most 123 bytes, got 124 bytes/],
    [{ sub: 'alice' }, { reason: 42 }, /reason must be a string of at most 123 bytes, got number/]
  ]
  for (const [filter, options, message] of cases) {
    await t.rejects(a.app.wsGuard.disconnect(filter as never, options as never), { code: 'FST_WS_GUARD_INVALID_OPTION', message }, String(message))
  }
  t.same(published, [], 'nothing was sent to the other instances')
  await stillOpen(t, { aliceA, aliceB })
  t.equal(a.app.wsGuard.stats().closed.disconnected + b.app.wsGuard.stats().closed.disconnected, 0, 'nothing closed')
})
