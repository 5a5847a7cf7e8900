import { test, type Test } from 'tap'
import { InvalidOptionError, MemoryStore } from '../../index.js'
import { defaultWebSocketOptions, normalizeOptions, resolveRouteSettings } from '../../lib/setup/options.js'
import { countingEcho, registrationError } from '../helpers/app.js'
import { secret } from '../helpers/tokens.js'

function assertInvalidOption (t: Test, err: unknown, message: RegExp): void {
  t.ok(err instanceof InvalidOptionError, 'an InvalidOptionError')
  t.ok(err instanceof TypeError, 'also a TypeError')
  t.equal((err as { code?: string }).code, 'FST_WS_GUARD_INVALID_OPTION')
  t.match((err as Error).message, /^fastify-ws-guard: /)
  t.match((err as Error).message, message)
}

const invalidOptions: Array<[name: string, options: unknown, message: RegExp]> = [
  ['unknown key', { origin: ['https://a.example.com'] }, /unknown option origin; known options are origins, allowMissingOrigin, originReportOnly, rejectWith, handshakeTimeout, protocols, .*websocket/],
  ['unknown key in a typo', { handshakeTimout: 10 }, /unknown option handshakeTimout/],
  ['store: a string', { store: 'redis' }, /store must be a ConnectionStore such as new RedisStore\(\{ client \}\), got the string "redis"/],
  ['store: null', { store: null }, /store must be a ConnectionStore such as new RedisStore\(\{ client \}\), got null/],
  ['store without its methods', { store: { acquire: () => true } }, /store lacks renew, release, count, publish, revocations, listen: it must implement ConnectionStore \(leases and a control channel\), as MemoryStore and RedisStore \(fastify-ws-guard\/redis\) do/],
  ['store of the old contract', { store: { acquire: () => true, release: () => {} } }, /store lacks renew, count, publish, revocations, listen: it must implement ConnectionStore/],
  ['store without leaseTtl', { store: { acquire: () => true, renew: () => {}, release: () => {}, count: () => 0, publish: () => {}, revocations: () => [], listen: async () => async () => {} } }, /store\.leaseTtl must be a number of ms > 0 \(Infinity for leases that never lapse\), got undefined/],
  ['store with leaseTtl 0', { store: { ...{ acquire: () => true, renew: () => {}, release: () => {}, count: () => 0, publish: () => {}, revocations: () => [], listen: async () => async () => {} }, leaseTtl: 0 } }, /store\.leaseTtl must be a number of ms > 0 \(Infinity for leases that never lapse\), got number/],
  ['store with leaseTtl NaN', { store: { ...{ acquire: () => true, renew: () => {}, release: () => {}, count: () => 0, publish: () => {}, revocations: () => [], listen: async () => async () => {} }, leaseTtl: Number.NaN } }, /store\.leaseTtl must be a number of ms > 0/],
  ['store with leaseTtl a string', { store: { ...{ acquire: () => true, renew: () => {}, release: () => {}, count: () => 0, publish: () => {}, revocations: () => [], listen: async () => async () => {} }, leaseTtl: '30000' } }, /store\.leaseTtl must be a number of ms > 0 \(Infinity for leases that never lapse\), got the string "30000"/],
  ['onStoreError: unknown', { onStoreError: 'ignore' }, /onStoreError must be one of 'reject', 'local', got the string "ignore"/],
  ['onStoreError: a boolean', { onStoreError: true }, /onStoreError must be one of 'reject', 'local', got boolean/],
  ['revocationTtl: 0', { revocationTtl: 0 }, /revocationTtl must be a whole number >= 1, got number 0/],
  ['revocationTtl: fractional', { revocationTtl: 1.5 }, /revocationTtl must be a whole number >= 1, got number 1\.5/],
  ['revocationTtl: a string', { revocationTtl: '3600' }, /revocationTtl must be a whole number >= 1, got the string "3600"/],
  ['auth.recheck: a number', { auth: { secret, recheck: 60_000 } }, /options\.auth\.recheck must be an object, got number/],
  ['auth.recheck without interval', { auth: { secret, recheck: {} } }, /options\.auth\.recheck\.interval is required: a whole number of ms, as in interval: 60000/],
  ['auth.recheck.interval below 1000', { auth: { secret, recheck: { interval: 999 } } }, /options\.auth\.recheck\.interval must be a whole number >= 1000, got number 999/],
  ['auth.recheck.interval: a string', { auth: { secret, recheck: { interval: '60000' } } }, /options\.auth\.recheck\.interval must be a whole number >= 1000, got the string "60000"/],
  ['auth.recheck: an unknown key', { auth: { secret, recheck: { interval: 1000, every: 5 } } }, /unknown option options\.auth\.recheck\.every; known options are interval/],
  ['origins: a number', { origins: 42 }, /options\.origins must be an array of origins and RegExps, a function or '\*', got number/],
  ['origins: a single origin string', { origins: 'https://a.example.com' }, /options\.origins must be an array .* got the string "https:\/\/a\.example\.com"/],
  ['origins: an object', { origins: { 'https://a.example.com': true } }, /options\.origins must be an array/],
  ['origins: null', { origins: null }, /options\.origins must be an array .* got null/],
  ['origins entry: a number', { origins: [42] }, /options\.origins entries must be strings or RegExps, got number/],
  ['origins entry: an array', { origins: [['https://a.example.com']] }, /entries must be strings or RegExps, got an array/],
  ['https://*', { origins: ['https://*'] }, /"https:\/\/\*" is not a valid wildcard; a wildcard stands alone as the leftmost label, as in "https:\/\/\*\.example\.com"/],
  ['https://*.', { origins: ['https://*.'] }, /"https:\/\/\*\." is not a valid wildcard; write a domain after "\*\.", as in "https:\/\/\*\.example\.com"/],
  ['a wildcard inside a label', { origins: ['https://app-*.example.com'] }, /is not a valid wildcard/],
  ['a wildcard not leftmost', { origins: ['https://a.*.example.com'] }, /is not a valid wildcard/],
  ['two wildcards', { origins: ['https://*.*.example.com'] }, /is not a valid wildcard/],
  ['a wildcard port', { origins: ['https://*.example.com:*'] }, /is not a valid wildcard/],
  ['*.example.com without scheme', { origins: ['*.example.com'] }, /"\*\.example\.com" has no scheme; write "https:\/\/\*\.example\.com"/],
  ['an origin without scheme', { origins: ['app.example.com'] }, /"app\.example\.com" has no scheme; write "https:\/\/app\.example\.com"/],
  ['an origin with a path', { origins: ['https://app.example.com/chat'] }, /"https:\/\/app\.example\.com\/chat" has a path; an origin is scheme:\/\/host\[:port\], write "https:\/\/app\.example\.com"/],
  ['an origin with a trailing slash', { origins: ['https://app.example.com/'] }, /has a path; .* write "https:\/\/app\.example\.com"/],
  ['an origin with a query', { origins: ['https://app.example.com?x=1'] }, /has a path; .* write "https:\/\/app\.example\.com"/],
  ['a wildcard with a path', { origins: ['https://*.example.com/'] }, /has a path; .* write "https:\/\/\*\.example\.com"/],
  ['an origin with credentials', { origins: ['https://user@app.example.com'] }, /"https:\/\/user@app\.example\.com" is not an origin; write scheme:\/\/host\[:port\], as in "https:\/\/app\.example\.com"/],
  ['an origin with a bad port', { origins: ['https://app.example.com:70000'] }, /is not an origin/],
  ["'*' mixed into an array", { origins: ['https://a.example.com', '*'] }, /'\*' cannot be mixed with other origins; write origins: '\*' to allow every origin/],
  ['allowMissingOrigin: a string', { allowMissingOrigin: 'yes' }, /options\.allowMissingOrigin must be true or false, got the string "yes"/],
  ['originReportOnly: a number', { originReportOnly: 1 }, /options\.originReportOnly must be true or false, got number/],
  ['rejectWith: unknown', { rejectWith: 'reset' }, /options\.rejectWith must be one of 'http', 'close', got the string "reset"/],
  ['rejectWith: a boolean', { rejectWith: true }, /options\.rejectWith must be one of 'http', 'close', got boolean/],
  ['handshakeTimeout: 0', { handshakeTimeout: 0 }, /options\.handshakeTimeout must be a whole number >= 1, got number 0/],
  ['handshakeTimeout: negative', { handshakeTimeout: -5 }, /handshakeTimeout must be a whole number >= 1, got number -5/],
  ['handshakeTimeout: fractional', { handshakeTimeout: 1.5 }, /handshakeTimeout must be a whole number >= 1, got number 1\.5/],
  ['handshakeTimeout: NaN', { handshakeTimeout: Number.NaN }, /handshakeTimeout must be a whole number >= 1, got number NaN/],
  ['handshakeTimeout: Infinity', { handshakeTimeout: Number.POSITIVE_INFINITY }, /handshakeTimeout must be a whole number >= 1, got number Infinity/],
  ['handshakeTimeout: a string', { handshakeTimeout: '5000' }, /handshakeTimeout must be a whole number >= 1, got the string "5000"$/],
  ['protocols: a string', { protocols: 'chat.v1' }, /options\.protocols must be an array of subprotocol names, got the string "chat\.v1"/],
  ['protocols: a name with a space', { protocols: ['chat v1'] }, /options\.protocols: the string "chat v1" is not a valid subprotocol name/],
  ['protocols: an empty name', { protocols: [''] }, /options\.protocols: the string "" is not a valid subprotocol name/],
  ['protocols: a number', { protocols: [1] }, /options\.protocols: number is not a valid subprotocol name/],
  ['protocols: a comma', { protocols: ['a,b'] }, /is not a valid subprotocol name/],
  ["protocols: 'bearer'", { protocols: ['bearer'] }, /options\.protocols: "bearer" is reserved for bearer tokens; name the application protocol, as in "chat\.v1"/],
  ["protocols: 'bearer.x'", { protocols: ['chat', 'bearer.x'] }, /"bearer\.x" is reserved for bearer tokens/],
  ['websocket: a string', { websocket: 'yes' }, /websocket must be an object, got the string "yes"/],
  ['websocket: an array', { websocket: [] }, /websocket must be an object, got an array/]
]

test('every invalid option fails register with an InvalidOptionError that says what to write', async (t) => {
  for (const [name, options, message] of invalidOptions) {
    await t.test(name, async (t) => {
      assertInvalidOption(t, await registrationError(t, options), message)
    })
  }
})

test('valid options register', async (t) => {
  const valid: unknown[] = [
    undefined,
    {},
    { origins: '*' },
    { origins: [] },
    { origins: ['https://app.example.com', 'https://*.example.com', 'http://localhost:3000', 'null', /^https:\/\/pr-\d+\.x\.dev$/] },
    { origins: ['https://*.example.com:8443', 'http://[::1]:8080', 'chrome-extension://abcdef'] },
    { origins: () => true },
    { origins: async () => true },
    { allowMissingOrigin: false, originReportOnly: true, rejectWith: 'close', handshakeTimeout: 1, protocols: ['chat.v2', 'chat.v1', 'bearerish'] },
    { rejectWith: 'http', handshakeTimeout: 60_000, protocols: [] },
    { websocket: { maxPayload: 4096 } },
    { store: new MemoryStore(), onStoreError: 'local', revocationTtl: 1 },
    { store: { ...{ acquire: () => true, renew: () => {}, release: () => {}, count: () => 0, publish: () => {}, revocations: () => [], listen: async () => async () => {} }, leaseTtl: 30_000 }, onStoreError: 'reject', revocationTtl: 86_400 },
    { auth: { secret, recheck: { interval: 1000 } } }
  ]
  for (const options of valid) {
    await t.test(JSON.stringify(options) ?? 'undefined', async (t) => {
      t.equal(await registrationError(t, options), undefined)
    })
  }
})

test('normalizeOptions validates, defaults and freezes once', async (t) => {
  const normalized = normalizeOptions(undefined)
  t.ok(Object.isFrozen(normalized))
  t.ok(Object.isFrozen(normalized.route))
  t.ok(Object.isFrozen(normalized.route.origin))
  t.match(normalized.route, {
    origin: { policy: { kind: 'same' }, allowMissingOrigin: true },
    originReportOnly: false,
    rejectWith: 'http',
    handshakeTimeout: 10_000,
    protocols: []
  })
  t.same(normalized.websocket, defaultWebSocketOptions)
  t.same(normalizeOptions(null).route, normalized.route)
  t.same(normalizeOptions({}).route, normalized.route)

  const protocols = ['chat.v1']
  const custom = normalizeOptions({ protocols, websocket: { maxPayload: 10, perMessageDeflate: true } })
  protocols.push('changed')
  t.same(custom.route.protocols, ['chat.v1'], 'later changes to the caller\'s array do not leak in')
  t.same(custom.websocket, { ...defaultWebSocketOptions, maxPayload: 10, perMessageDeflate: true }, 'user ws options override the defaults')
  t.ok(Object.isFrozen(custom.route.protocols))

  for (const bad of ['x', 1, [], true]) {
    t.throws(() => normalizeOptions(bad), { code: 'FST_WS_GUARD_INVALID_OPTION', message: /options must be an object/ })
  }
})

test('the store options default to one process: a MemoryStore, reject on errors, revocations kept a day', async (t) => {
  const normalized = normalizeOptions({})
  t.ok(normalized.store instanceof MemoryStore, 'a MemoryStore')
  t.not(normalizeOptions({}).store, normalized.store, 'one per registration')
  t.equal(normalized.onStoreError, 'reject')
  t.equal(normalized.revocationTtl, 86_400)
  t.equal(normalized.route.auth, undefined)
  const store = new MemoryStore()
  const custom = normalizeOptions({ store, onStoreError: 'local', revocationTtl: 60, auth: { secret, recheck: { interval: 60_000 } } })
  t.equal(custom.store, store, 'the store given, as it is')
  t.equal(custom.onStoreError, 'local')
  t.equal(custom.revocationTtl, 60)
  t.equal(custom.route.auth?.recheck, 60_000, 'recheck.interval in ms')
  t.equal(normalizeOptions({ auth: { secret } }).route.auth?.recheck, undefined, 'no recheck by default')
})

test('the safer ws defaults', async (t) => {
  t.same(defaultWebSocketOptions, { maxPayload: 1024 * 1024, perMessageDeflate: false, maxFragments: 1024, maxBufferedChunks: 16 * 1024 })
  t.ok(Object.isFrozen(defaultWebSocketOptions))
})

test('resolveRouteSettings merges route overrides over the plugin options', async (t) => {
  const defaults = normalizeOptions({ origins: ['https://a.example.com'], handshakeTimeout: 500, rejectWith: 'close' })
  t.equal(resolveRouteSettings(defaults, undefined, 'GET /x'), defaults.route)
  t.equal(resolveRouteSettings(defaults, true, 'GET /x'), defaults.route)
  const merged = resolveRouteSettings(defaults, { handshakeTimeout: 100, protocols: ['chat'] }, 'GET /x')
  t.equal(merged.handshakeTimeout, 100)
  t.equal(merged.rejectWith, 'close', 'what the route does not override comes from the plugin')
  t.same(merged.protocols, ['chat'])
  t.same(merged.origin.policy, defaults.route.origin.policy)
  t.throws(() => resolveRouteSettings(defaults, { websocket: {} }, 'GET /x'), {
    code: 'FST_WS_GUARD_INVALID_OPTION',
    message: /unknown option config\.wsGuard of GET \/x\.websocket/
  })
})

test('invalid config.wsGuard on a route fails at registration, naming the route', async (t) => {
  const cases: Array<[name: string, config: unknown, message: RegExp]> = [
    ['a string', 'on', /config\.wsGuard of GET \/ws must be an object, got the string "on"/],
    ['null', null, /config\.wsGuard of GET \/ws must be an object, got null/],
    ['an unknown key', { origin: '*' }, /unknown option config\.wsGuard of GET \/ws\.origin; known options are origins, allowMissingOrigin, originReportOnly, rejectWith, handshakeTimeout, protocols/],
    ['a plugin-only key', { websocket: { maxPayload: 1 } }, /unknown option config\.wsGuard of GET \/ws\.websocket/],
    ['an invalid wildcard', { origins: ['https://*'] }, /config\.wsGuard of GET \/ws\.origins: "https:\/\/\*" is not a valid wildcard/],
    ['a bad timeout', { handshakeTimeout: -1 }, /config\.wsGuard of GET \/ws\.handshakeTimeout must be a whole number >= 1/],
    ['a bad rejectWith', { rejectWith: 'drop' }, /config\.wsGuard of GET \/ws\.rejectWith must be one of 'http', 'close'/],
    ['bearer as a protocol', { protocols: ['bearer'] }, /config\.wsGuard of GET \/ws\.protocols: "bearer" is reserved/],
    ['a plugin-only store option', { onStoreError: 'local' }, /unknown option config\.wsGuard of GET \/ws\.onStoreError/],
    ['a recheck below 1000', { auth: { secret, recheck: { interval: 10 } } }, /config\.wsGuard of GET \/ws\.auth\.recheck\.interval must be a whole number >= 1000, got number 10/]
  ]
  for (const [name, config, message] of cases) {
    await t.test(`wsRoute, ${name}`, async (t) => {
      assertInvalidOption(t, await registrationError(t, undefined, (app) => {
        app.wsRoute('/ws', { config: { wsGuard: config as never } }, countingEcho().handler)
      }), message)
    })
    await t.test(`app.get with websocket: true, ${name}`, async (t) => {
      assertInvalidOption(t, await registrationError(t, undefined, (app) => {
        app.get('/ws', { websocket: true, config: { wsGuard: config as never } }, countingEcho().handler)
      }), message)
    })
  }
})
