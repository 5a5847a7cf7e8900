import { test, type Test } from 'tap'
import wsGuard, { redactQueryTokens, requestSerializer } from '../index.js'
import { startApp, type StartedApp } from './helpers/app.js'
import { LogCapture } from './helpers/logs.js'
import { handshake, rawExchange } from './helpers/raw.js'

/*
 * The README's logging setup keeps a query token out of every line Fastify or the guard logs,
 * 404s and bad URLs included, and the guard's own answers never quote it.
 */

const marker = 'MARKER0TOKEN0eyJhbGciOiJIUzI1NiJ9.x.y'

async function queryApp (t: Test, hooks: boolean): Promise<StartedApp> {
  const logs = new LogCapture()
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret: 'query-secret-0123456789-abcdefghijklmnop', tokenSources: ['query'], queryParam: 'token' } })
    app.wsRoute('/chat/:room', (socket) => { socket.send('hi') })
    app.get('/page', async () => 'page')
  }, {
    logger: {
      level: 'info',
      stream: logs,
      serializers: { req: requestSerializer },
      ...(hooks ? { hooks: { logMethod: redactQueryTokens(['token', 'access_token']) } } : {})
    },
    routerOptions: { maxParamLength: 40 }
  })
  return { ...started, logs }
}

// [what, request, whether Fastify or the guard logs anything for it]
const requests: Array<[string, string, boolean]> = [
  ['an upgrade with a trailing-slash typo', handshake(`/chat/?token=${marker}`), true],
  ['an upgrade to an unknown path', handshake(`/nope?token=${marker}`), true],
  // Answered by Fastify's router before any log line.
  ['an upgrade with a malformed URL', handshake(`/chat/%zz?token=${marker}`), false],
  ['an upgrade with a parameter too long', handshake(`/chat/${'r'.repeat(60)}?token=${marker}`), false],
  ['an upgrade refused by the guard', handshake(`/chat/1?token=${marker}&access_token=${marker}`), true],
  ['a plain request to an unknown path', `GET /nope?a=1&token=${marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`, true],
  ['a plain request to a WebSocket route', `GET /chat/1?token=${marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`, true]
]

test('with requestSerializer and redactQueryTokens, no line Fastify or the guard logs holds a query token', async (t) => {
  const app = await queryApp(t, true)
  for (const [what, request, logged] of requests) {
    const before = app.logs.raw.length
    const response = await rawExchange(app.port, request)
    t.ok(response.status >= 400, `${what}: refused with ${response.status}`)
    t.equal(app.logs.raw.length > before, logged, `${what}: ${logged ? 'logged' : 'nothing logged'}`)
    t.notOk(app.logs.raw.slice(before).join('').includes(marker), `${what}: no token in its log lines`)
  }
  t.match(app.logs.text, /\[redacted\]/, 'the 404 line says where the token was')
})

test('the guard answers an upgrade to an unknown path itself, without the query', async (t) => {
  const app = await queryApp(t, true)
  const response = await rawExchange(app.port, handshake(`/nope?token=${marker}`))
  t.equal(response.status, 404)
  t.match(JSON.parse(response.body), { code: 'FST_WS_GUARD_ROUTE_NOT_FOUND', message: 'No route matches GET /nope: check the path of the WebSocket URL' })
  t.notOk(response.text.includes(marker))
  t.equal(app.app.wsGuard.stats().rejected.FST_WS_GUARD_ROUTE_NOT_FOUND, 1, 'counted')
  const long = await rawExchange(app.port, handshake('/' + 'n'.repeat(300)))
  t.ok(long.body.length < 300, 'a long path comes back cut')
  const plain = await rawExchange(app.port, `GET /nope?token=${marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
  t.equal(plain.status, 404)
  t.notMatch(plain.body, /FST_WS_GUARD/, 'a plain request still gets Fastify\'s own 404')
})

test('without the log hook, Fastify\'s own 404 line quotes the token: the hook is what keeps it out', async (t) => {
  const app = await queryApp(t, false)
  await rawExchange(app.port, `GET /nope?token=${marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
  t.ok(app.logs.text.includes(marker))
})

test('redactQueryTokens blanks only the named parameters, in any message argument', async (t) => {
  const written: unknown[][] = []
  const hook = redactQueryTokens()
  hook([{ n: 1 }, 'GET /a?access_token=abc&b=2 and /c;access_token=d#e'], (...args) => { written.push(args) })
  hook(['no query here'], (...args) => { written.push(args) })
  t.same(written, [[{ n: 1 }, 'GET /a?access_token=[redacted]&b=2 and /c;access_token=[redacted]#e'], ['no query here']])
  const custom = redactQueryTokens(['t.k'])
  custom(['/x?t.k=1&tak=2'], (...args) => { written.push(args) })
  t.same(written[2], ['/x?t.k=[redacted]&tak=2'], 'names are matched literally')
})
