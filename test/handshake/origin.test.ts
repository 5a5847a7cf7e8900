import { test, type Test } from 'tap'
import type { FastifyRequest } from 'fastify'
import type { ClientOptions } from 'ws'
import { checkOrigin } from '../../lib/handshake/origin.js'
import { compileOrigins, isSameOrigin, listAllows, parseOrigin, type OriginPolicy } from '../../lib/handshake/origin-policy.js'
import { guardedApp, type StartedApp } from '../helpers/app.js'
import { tryConnect } from '../helpers/clients.js'
import { guardLines } from '../helpers/logs.js'
import { handshake, rawExchange } from '../helpers/raw.js'
import { assertRefusal, type RefusalBody } from '../helpers/refusals.js'

/** Connects with `origin` (or none when undefined) and asserts the upgrade succeeded. */
async function assertAllowed (t: Test, app: StartedApp, origin: string | undefined, options: ClientOptions = {}): Promise<void> {
  const outcome = await tryConnect(app.url('/ws'), [], origin === undefined ? options : { ...options, origin })
  if (outcome.kind === 'open') outcome.socket.terminate()
  t.equal(outcome.kind, 'open', `${String(origin)} is allowed`)
}

/** Connects with `origin` and asserts a 403 FST_WS_GUARD_ORIGIN_NOT_ALLOWED. */
async function assertRefused (t: Test, app: StartedApp, origin: string | undefined, options: ClientOptions = {}): Promise<RefusalBody> {
  const outcome = await tryConnect(app.url('/ws'), [], origin === undefined ? options : { ...options, origin })
  return assertRefusal(t, outcome, 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED').body
}

test('default: same origin only, the Origin host and port must equal Host', async (t) => {
  const app = await guardedApp(t)
  await assertAllowed(t, app, `http://127.0.0.1:${app.port}`)
  await assertAllowed(t, app, `HTTP://127.0.0.1:${app.port}`)
  const other = await assertRefused(t, app, `http://127.0.0.1:${app.port + 1}`)
  t.match(other.message, /is not the same origin as Host/)
  t.match(other.message, /trustProxy/, 'the message says what to do behind a proxy')
  await assertRefused(t, app, `http://localhost:${app.port}`)
  await assertRefused(t, app, 'http://127.0.0.1')
  await assertRefused(t, app, 'https://evil.example')
  t.equal(app.echo.calls, 2)
})

test('default: default ports are dropped on both sides', async (t) => {
  const app = await guardedApp(t)
  const host = (value: string): ClientOptions => ({ headers: { Host: value } })
  await assertAllowed(t, app, 'http://app.example.com', host('app.example.com'))
  await assertAllowed(t, app, 'http://app.example.com:80', host('app.example.com'))
  await assertAllowed(t, app, 'http://app.example.com', host('app.example.com:80'))
  await assertAllowed(t, app, 'https://app.example.com:443', host('APP.example.com'))
  await assertAllowed(t, app, 'https://app.example.com', host('app.example.com:443'))
  await assertAllowed(t, app, 'http://app.example.com:8080', host('app.example.com:8080'))
  await assertRefused(t, app, 'http://app.example.com', host('app.example.com:8080'))
  await assertRefused(t, app, 'http://app.example.com:8080', host('app.example.com'))
  await assertRefused(t, app, 'https://app.example.com', host('app.example.com:80'))
  await assertRefused(t, app, 'http://app.example.com.evil.com', host('app.example.com'))
  t.equal(app.echo.calls, 6)
})

test('default behind a proxy: with trustProxy, X-Forwarded-Host is the host to match', async (t) => {
  const app = await guardedApp(t, undefined, { server: { trustProxy: true } })
  const forwarded: ClientOptions = { headers: { 'X-Forwarded-Host': 'app.example.com' } }
  await assertAllowed(t, app, 'https://app.example.com', forwarded)
  await assertRefused(t, app, `http://127.0.0.1:${app.port}`, forwarded)
  await assertRefused(t, app, 'https://evil.example.com', forwarded)
  t.equal(app.echo.calls, 1)
})

test('default without trustProxy: X-Forwarded-Host is ignored', async (t) => {
  const app = await guardedApp(t)
  await assertRefused(t, app, 'https://app.example.com', { headers: { 'X-Forwarded-Host': 'app.example.com' } })
  await assertAllowed(t, app, `http://127.0.0.1:${app.port}`, { headers: { 'X-Forwarded-Host': 'app.example.com' } })
  t.equal(app.echo.calls, 1)
})

test('allowlist of exact origins compares normalized values', async (t) => {
  const app = await guardedApp(t, { origins: ['https://app.example.com', 'http://localhost:3000'] })
  await assertAllowed(t, app, 'https://app.example.com')
  await assertAllowed(t, app, 'HTTPS://App.Example.com:443')
  await assertAllowed(t, app, 'http://localhost:3000')
  await assertAllowed(t, app, 'http://LOCALHOST:03000')
  const body = await assertRefused(t, app, 'https://app.example.com:8443')
  t.match(body.message, /https:\/\/app\.example\.com:8443 is not in the allowlist/)
  await assertRefused(t, app, 'http://app.example.com')
  await assertRefused(t, app, 'https://app.example.com.evil.com')
  await assertRefused(t, app, 'https://evilapp.example.com')
  await assertRefused(t, app, 'https://sub.app.example.com')
  await assertRefused(t, app, 'http://localhost:3001')
  await assertRefused(t, app, `http://127.0.0.1:${app.port}`, {})
  t.equal(app.echo.calls, 4)
})

test('allowlist entries are normalized too', async (t) => {
  const app = await guardedApp(t, { origins: ['HTTPS://App.Example.COM:443'] })
  await assertAllowed(t, app, 'https://app.example.com')
  await assertRefused(t, app, 'https://app.example.com:444')
  t.equal(app.echo.calls, 1)
})

test('wildcard https://*.example.com: any subdomain depth, never the apex, a suffix trick, another scheme or port', async (t) => {
  const app = await guardedApp(t, { origins: ['https://*.example.com'] })
  await assertAllowed(t, app, 'https://a.example.com')
  await assertAllowed(t, app, 'https://a.b.example.com')
  await assertAllowed(t, app, 'https://A.Example.Com:443')
  for (const origin of [
    'https://example.com',
    'https://example.com.evil.com',
    'https://a.example.com.evil.com',
    'https://evilexample.com',
    'https://a.evilexample.com',
    'http://a.example.com',
    'wss://a.example.com',
    'https://a.example.com:8443',
    'https://.example.com'
  ]) {
    await assertRefused(t, app, origin)
  }
  t.equal(app.echo.calls, 3)
})

test('wildcard with a port matches that port only', async (t) => {
  const app = await guardedApp(t, { origins: ['https://*.example.com:8443', 'https://example.com'] })
  await assertAllowed(t, app, 'https://a.example.com:8443')
  await assertAllowed(t, app, 'https://example.com', {})
  await assertRefused(t, app, 'https://a.example.com')
  await assertRefused(t, app, 'https://example.com:8443')
  t.equal(app.echo.calls, 2)
})

test('RegExps are tested against the normalized origin, and a /g RegExp gives the same answer twice in a row', async (t) => {
  const app = await guardedApp(t, { origins: [/^https:\/\/pr-\d+\.preview\.dev$/g, /^http:\/\/localhost:\d+$/y] })
  await assertAllowed(t, app, 'https://pr-12.preview.dev')
  await assertAllowed(t, app, 'https://pr-12.preview.dev')
  await assertAllowed(t, app, 'HTTPS://PR-13.preview.dev:443')
  await assertAllowed(t, app, 'http://localhost:5173')
  await assertAllowed(t, app, 'http://localhost:5173')
  await assertRefused(t, app, 'https://pr-x.preview.dev')
  await assertRefused(t, app, 'https://pr-12.preview.dev.evil.com')
  t.equal(app.echo.calls, 5)
})

test('exact origins, wildcards and RegExps mix in one list', async (t) => {
  const app = await guardedApp(t, { origins: ['https://app.example.com', 'https://*.cdn.example.net', /^https:\/\/pr-\d+\.preview\.dev$/] })
  await assertAllowed(t, app, 'https://app.example.com')
  await assertAllowed(t, app, 'https://x.cdn.example.net')
  await assertAllowed(t, app, 'https://pr-1.preview.dev')
  await assertRefused(t, app, 'https://cdn.example.net')
  t.equal(app.echo.calls, 3)
})

test('an empty allowlist refuses every origin but still lets clients without Origin in', async (t) => {
  const app = await guardedApp(t, { origins: [] })
  await assertRefused(t, app, `http://127.0.0.1:${app.port}`)
  await assertAllowed(t, app, undefined)
  t.equal(app.echo.calls, 1)
})

test('a sync origin function gets the normalized origin and the request', async (t) => {
  const seen: Array<{ origin: string, host: string | undefined, url: string }> = []
  const app = await guardedApp(t, {
    origins: (origin: string, request: FastifyRequest) => {
      seen.push({ origin, host: request.headers.host, url: request.url })
      return origin === 'https://ok.example'
    }
  })
  await assertAllowed(t, app, 'HTTPS://OK.example:443')
  const body = await assertRefused(t, app, 'https://nope.example')
  t.match(body.message, /https:\/\/nope\.example is not allowed by the origins function/)
  t.same(seen.map((s) => s.origin), ['https://ok.example', 'https://nope.example'])
  t.equal(seen[0]?.host, `127.0.0.1:${app.port}`)
  t.equal(seen[0]?.url, '/ws')
  t.equal(app.echo.calls, 1)
})

test('an async origin function is awaited', async (t) => {
  const app = await guardedApp(t, {
    origins: async (origin) => {
      await new Promise((resolve) => setTimeout(resolve, 5))
      return origin.endsWith('.trusted.example')
    }
  })
  await assertAllowed(t, app, 'https://a.trusted.example')
  await assertRefused(t, app, 'https://a.untrusted.example')
  t.equal(app.echo.calls, 1)
})

test('an async origin function must resolve to true exactly: truthy values are refusals', async (t) => {
  const app = await guardedApp(t, { origins: (async () => 'yes') as unknown as () => Promise<boolean> })
  await assertRefused(t, app, 'https://a.example')
  t.equal(app.echo.calls, 0)
})

test("origins '*' allows every origin, null included", async (t) => {
  const app = await guardedApp(t, { origins: '*' })
  await assertAllowed(t, app, 'https://anything.example')
  await assertAllowed(t, app, 'null')
  await assertAllowed(t, app, 'not even an origin')
  await assertAllowed(t, app, undefined)
  t.equal(app.echo.calls, 4)
})

test("Origin: null is refused unless 'null' is listed", async (t) => {
  await t.test('same-origin default', async (t) => {
    const app = await guardedApp(t)
    const body = await assertRefused(t, app, 'null')
    t.match(body.message, /Origin "null" \(an opaque origin\) is not listed/)
  })
  await t.test('list without null', async (t) => {
    const app = await guardedApp(t, { origins: ['https://app.example.com'] })
    await assertRefused(t, app, 'null')
    t.equal(app.echo.calls, 0)
  })
  await t.test("list with 'null'", async (t) => {
    const app = await guardedApp(t, { origins: ['https://app.example.com', 'null'] })
    await assertAllowed(t, app, 'null')
    await assertAllowed(t, app, 'https://app.example.com')
    await assertRefused(t, app, 'https://other.example.com')
    t.equal(app.echo.calls, 2)
  })
  await t.test("a function decides on 'null' itself", async (t) => {
    const seen: string[] = []
    const app = await guardedApp(t, { origins: (origin) => { seen.push(origin); return origin === 'null' } })
    await assertAllowed(t, app, 'null')
    t.same(seen, ['null'])
  })
})

test('two Origin headers, or one comma-joined value, are refused even when each is allowed', async (t) => {
  for (const origins of [['https://a.example.com', 'https://b.example.com'], '*'] as const) {
    await t.test(`origins: ${JSON.stringify(origins)}`, async (t) => {
      const app = await guardedApp(t, { origins })
      const twice = handshake('/ws', { Origin: 'https://a.example.com' }).replace('\r\n\r\n', '\r\nOrigin: https://b.example.com\r\n\r\n')
      const { body } = assertRefusal(t, await rawExchange(app.port, twice), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
      t.match(body.message, /more than one Origin value/)
      const joined = handshake('/ws', { Origin: 'https://a.example.com, https://b.example.com' })
      assertRefusal(t, await rawExchange(app.port, joined), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
      const bare = handshake('/ws', { Origin: 'https://a.example.com,https://b.example.com' })
      assertRefusal(t, await rawExchange(app.port, bare), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
      t.equal(app.echo.calls, 0)
    })
  }
})

test('a malformed Origin is refused, and a long one is truncated in the message', async (t) => {
  const app = await guardedApp(t, { origins: ['https://app.example.com'] })
  for (const origin of ['app.example.com', 'https://app.example.com/', 'https://user@app.example.com', 'https://app.example.com:99999', '']) {
    const response = await rawExchange(app.port, handshake('/ws', { Origin: origin }))
    const { body } = assertRefusal(t, response, 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
    t.match(body.message, /malformed Origin/, `${JSON.stringify(origin)} is malformed`)
  }
  const long = 'https://' + 'a'.repeat(300) + '/x'
  const { body } = assertRefusal(t, await rawExchange(app.port, handshake('/ws', { Origin: long })), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.ok(body.message.includes(long.slice(0, 100) + '...'), 'the value is cut at 100 characters')
  t.notOk(body.message.includes(long.slice(0, 101)), 'nothing past 100 characters is echoed')
  t.equal(app.echo.calls, 0)
})

test('missing Origin: allowed by default, refused with allowMissingOrigin: false', async (t) => {
  await t.test('default', async (t) => {
    const app = await guardedApp(t, { origins: ['https://app.example.com'] })
    await assertAllowed(t, app, undefined)
    t.equal(app.echo.calls, 1)
  })
  await t.test('allowMissingOrigin: false', async (t) => {
    const app = await guardedApp(t, { allowMissingOrigin: false })
    const body = await assertRefused(t, app, undefined)
    t.match(body.message, /no Origin header/)
    await assertAllowed(t, app, `http://127.0.0.1:${app.port}`)
    t.equal(app.echo.calls, 1)
  })
})

test('originReportOnly: a refused origin is logged and let through', async (t) => {
  const app = await guardedApp(t, { origins: ['https://app.example.com'], originReportOnly: true })
  await assertAllowed(t, app, 'https://evil.example')
  await assertAllowed(t, app, 'https://app.example.com')
  t.equal(app.echo.calls, 2)
  const lines = guardLines(app.logs)
  t.equal(lines.length, 1, 'one line, for the origin that would be refused')
  t.equal(lines[0]?.level, 30)
  t.same(lines[0]?.wsGuard, { code: 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', route: '/ws', reportOnly: true })
  t.match(String(lines[0]?.msg), /would be rejected: https:\/\/evil\.example is not in the allowlist/)
})

test('originReportOnly with an async function and with a missing Origin', async (t) => {
  const app = await guardedApp(t, { origins: async () => false, originReportOnly: true, allowMissingOrigin: false })
  await assertAllowed(t, app, 'https://evil.example')
  await assertAllowed(t, app, undefined)
  t.equal(app.echo.calls, 2)
  const lines = guardLines(app.logs)
  t.equal(lines.length, 2)
  t.ok(lines.every((line) => line.wsGuard.reportOnly === true && line.wsGuard.code === 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED'))
})

test('originReportOnly still refuses what is not an origin decision', async (t) => {
  const app = await guardedApp(t, { originReportOnly: true })
  const response = await rawExchange(app.port, handshake('/ws', { 'Sec-WebSocket-Key': 'short', Origin: 'https://evil.example' }))
  assertRefusal(t, response, 400, 'FST_WS_GUARD_INVALID_KEY')
  t.equal(app.echo.calls, 0)
})

test('an origin function that throws or rejects gets 500 FST_WS_GUARD_INTERNAL, its message is never logged', async (t) => {
  const secret = 'SECRET-db-password-hunter2'
  const cases: Array<{ name: string, fn: () => boolean | Promise<boolean> }> = [
    { name: 'sync throw', fn: () => { throw new Error(secret) } },
    { name: 'async throw', fn: async () => { throw new Error(secret) } },
    { name: 'rejected promise', fn: () => Promise.reject(Object.assign(new RangeError(secret), { code: 'E_LOOKUP' })) },
    { name: 'thrown string', fn: () => { throw secret } }
  ]
  for (const { name, fn } of cases) {
    await t.test(name, async (t) => {
      const app = await guardedApp(t, { origins: fn })
      const response = await rawExchange(app.port, handshake('/ws', { Origin: 'https://a.example' }))
      const { body } = assertRefusal(t, response, 500, 'FST_WS_GUARD_INTERNAL')
      t.notOk(body.message.includes(secret), 'the body does not carry the thrown message')
      t.notOk(app.logs.text.includes(secret), 'no log line carries the thrown message')
      const failure = guardLines(app.logs).find((line) => line.level === 50)
      t.ok(failure, 'the failure is logged at error level')
      t.notOk(JSON.stringify(failure).includes(secret))
      t.equal(app.echo.calls, 0)
    })
  }
  await t.test('the error line names the error type and code', async (t) => {
    const app = await guardedApp(t, { origins: () => Promise.reject(Object.assign(new RangeError(secret), { code: 'E_LOOKUP' })) })
    assertRefusal(t, await rawExchange(app.port, handshake('/ws', { Origin: 'https://a.example' })), 500, 'FST_WS_GUARD_INTERNAL')
    const failure = guardLines(app.logs).find((line) => line.level === 50)
    t.same(failure?.wsGuard, { err: { name: 'RangeError', code: 'E_LOOKUP' } })
  })
})

test('an origin function that throws or rejects with null or undefined still gets 500 FST_WS_GUARD_INTERNAL', async (t) => {
  const cases: Array<{ name: string, fn: () => boolean | Promise<boolean> }> = [
    // eslint-disable-next-line no-throw-literal
    { name: 'throw null', fn: () => { throw null } },
    // eslint-disable-next-line prefer-promise-reject-errors
    { name: 'reject undefined', fn: () => Promise.reject(undefined) }
  ]
  for (const { name, fn } of cases) {
    await t.test(name, async (t) => {
      const app = await guardedApp(t, { origins: fn, handshakeTimeout: 300 })
      const response = await rawExchange(app.port, handshake('/ws', { Origin: 'https://a.example' }))
      assertRefusal(t, response, 500, 'FST_WS_GUARD_INTERNAL')
      t.equal(app.echo.calls, 0)
    })
  }
})

test('parseOrigin', async (t) => {
  t.same(parseOrigin('HTTPS://App.Example.com:443'), { scheme: 'https', host: 'app.example.com', port: '', normalized: 'https://app.example.com' })
  t.same(parseOrigin('http://example.com:0080'), { scheme: 'http', host: 'example.com', port: '', normalized: 'http://example.com' })
  t.same(parseOrigin('http://example.com:443'), { scheme: 'http', host: 'example.com', port: '443', normalized: 'http://example.com:443' })
  t.same(parseOrigin('ws://example.com:80'), { scheme: 'ws', host: 'example.com', port: '', normalized: 'ws://example.com' })
  t.same(parseOrigin('wss://example.com:443'), { scheme: 'wss', host: 'example.com', port: '', normalized: 'wss://example.com' })
  t.same(parseOrigin('http://[::1]:8080'), { scheme: 'http', host: '[::1]', port: '8080', normalized: 'http://[::1]:8080' })
  t.same(parseOrigin('chrome-extension://abcdef'), { scheme: 'chrome-extension', host: 'abcdef', port: '', normalized: 'chrome-extension://abcdef' })
  t.equal(parseOrigin('http://example.com:65535')?.port, '65535')
  for (const bad of ['null', '', 'example.com', 'https://', 'https://a.com/', 'https://a.com?x', 'https://a.com#x', 'https://u@a.com',
    'https://a.com:', 'https://a.com:65536', 'https://a.com:123456', 'https://a b.com', 'https://a.com:80:80', '1http://a.com']) {
    t.equal(parseOrigin(bad), undefined, `${JSON.stringify(bad)} is not an origin`)
  }
})

test('compileOrigins', async (t) => {
  t.same(compileOrigins(undefined, 'origins'), { kind: 'same' })
  t.same(compileOrigins('*', 'origins'), { kind: 'any' })
  const predicate = () => true
  t.same(compileOrigins(predicate, 'origins'), { kind: 'function', predicate })
  const list = compileOrigins(['HTTPS://A.example.com:443', 'null', 'https://*.Example.ORG:8443', /^x$/gimsy], 'origins') as Extract<OriginPolicy, { kind: 'list' }>
  t.same([...list.exact], ['https://a.example.com', 'null'])
  t.same(list.wildcards, [{ scheme: 'https', suffix: '.example.org', port: '8443' }])
  t.equal(list.patterns[0]?.flags, 'ims', 'g and y are dropped, other flags kept')
  t.equal(list.patterns[0]?.source, '^x$')
  const origin = (value: string) => parseOrigin(value)!
  t.equal(listAllows(list, origin('https://b.a.example.com')), false)
  t.equal(listAllows(list, origin('https://x.y.example.org:8443')), true)
  t.equal(listAllows(list, origin('https://example.org:8443')), false)
  t.throws(() => compileOrigins(['https://*'], 'plugin.origins'), { code: 'FST_WS_GUARD_INVALID_OPTION', message: /plugin\.origins/ })
})

test('isSameOrigin', async (t) => {
  const origin = parseOrigin('https://app.example.com')!
  t.equal(isSameOrigin(origin, undefined), false)
  t.equal(isSameOrigin(origin, ''), false)
  t.equal(isSameOrigin(origin, 'app.example.com'), true)
  t.equal(isSameOrigin(origin, 'app.example.com:443'), true)
  t.equal(isSameOrigin(origin, 'app.example.com:80'), false)
  t.equal(isSameOrigin(parseOrigin('chrome-extension://app.example.com')!, 'app.example.com'), true)
  t.equal(isSameOrigin(parseOrigin('chrome-extension://app.example.com')!, 'app.example.com:443'), false)
})

test('checkOrigin without a Host header under the same-origin default', async (t) => {
  const request = { headers: { origin: 'https://a.example' }, host: undefined } as unknown as FastifyRequest
  const reason = checkOrigin(request, { policy: { kind: 'same' }, allowMissingOrigin: true })
  t.match(reason, /is not the same origin as Host ""/)
})
