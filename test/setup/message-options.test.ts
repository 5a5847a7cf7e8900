import websocket from '@fastify/websocket'
import Fastify from 'fastify'
import { test, type Test } from 'tap'
import wsGuard from '../../index.js'
import { InvalidOptionError } from '../../index.js'
import { normalizeOptions, resolveRouteSettings } from '../../lib/setup/options.js'
import { registrationError } from '../helpers/app.js'

/*
 * Validation of the message guards, the connection age, the drain spread and the expiry
 * notice: each mistake fails `register` (or the route's declaration) with a message that says
 * which option, what arrived and what to write.
 */

function assertInvalidOption (t: Test, err: unknown, message: RegExp): void {
  t.ok(err instanceof InvalidOptionError, 'an InvalidOptionError')
  t.equal((err as { code?: string }).code, 'FST_WS_GUARD_INVALID_OPTION')
  t.match((err as Error).message, /^fastify-ws-guard: /)
  t.match((err as Error).message, message)
}

const notify = (): void => {}

const invalidPluginOptions: Array<[name: string, options: unknown, message: RegExp]> = [
  // maxMessageBytes
  ['maxMessageBytes: 0', { maxMessageBytes: 0 }, /options\.maxMessageBytes must be a whole number >= 1, got number 0$/],
  ['maxMessageBytes: a string', { maxMessageBytes: '1kb' }, /options\.maxMessageBytes must be a whole number >= 1, got the string "1kb"$/],
  ['maxMessageBytes: fractional', { maxMessageBytes: 1.5 }, /options\.maxMessageBytes must be a whole number >= 1, got number 1\.5$/],
  // messageRate
  ['messageRate: a number', { messageRate: 20 }, /options\.messageRate must be an object, got number$/],
  ['messageRate: without messages', { messageRate: { interval: 1000 } }, /options\.messageRate needs messages and interval \(ms\), as in \{ messages: 20, interval: 1000 \}$/],
  ['messageRate: without interval', { messageRate: { messages: 20 } }, /options\.messageRate needs messages and interval \(ms\), as in \{ messages: 20, interval: 1000 \}$/],
  ['messageRate: empty', { messageRate: {} }, /options\.messageRate needs messages and interval/],
  ['messageRate: an unknown key', { messageRate: { messages: 20, interval: 1000, per: 'user' } }, /unknown option options\.messageRate\.per; known options are messages, interval, burst, perUser, onExcess$/],
  ['messageRate: onExcess unknown', { messageRate: { messages: 20, interval: 1000, onExcess: 'queue' } }, /options\.messageRate\.onExcess must be one of 'close', 'drop', got the string "queue"$/],
  ['messageRate: onExcess a boolean', { messageRate: { messages: 20, interval: 1000, onExcess: true } }, /options\.messageRate\.onExcess must be one of 'close', 'drop', got boolean$/],
  ['messageRate: burst 0', { messageRate: { messages: 20, interval: 1000, burst: 0 } }, /options\.messageRate\.burst must be a whole number >= 1, got number 0$/],
  ['messageRate: messages 0', { messageRate: { messages: 0, interval: 1000 } }, /options\.messageRate\.messages must be a whole number >= 1, got number 0$/],
  ['messageRate: interval a string', { messageRate: { messages: 20, interval: '1s' } }, /options\.messageRate\.interval must be a whole number >= 1, got the string "1s"$/],
  ['messageRate: perUser a string', { messageRate: { messages: 20, interval: 1000, perUser: 'yes' } }, /options\.messageRate\.perUser must be true or false, got the string "yes"$/],
  // maxConnectionAge
  ['maxConnectionAge: 999', { maxConnectionAge: 999 }, /options\.maxConnectionAge must be a whole number >= 1000, got number 999$/],
  ['maxConnectionAge: 0', { maxConnectionAge: 0 }, /options\.maxConnectionAge must be a whole number >= 1000, got number 0$/],
  ['maxConnectionAge: a string', { maxConnectionAge: '1h' }, /options\.maxConnectionAge must be a whole number >= 1000, got the string "1h"$/],
  // drainSpread
  ['drainSpread over the default shutdownGrace', { drainSpread: 10_001 }, /^fastify-ws-guard: drainSpread \(10001\) must not exceed shutdownGrace \(10000\): the last 1001 would go out after the grace is over; lower drainSpread or raise shutdownGrace$/],
  ['drainSpread over shutdownGrace', { drainSpread: 600, shutdownGrace: 500 }, /drainSpread \(600\) must not exceed shutdownGrace \(500\)/],
  ['drainSpread: negative', { drainSpread: -1 }, /drainSpread must be a whole number >= 0, got number -1$/],
  ['drainSpread: a string', { drainSpread: '1s' }, /drainSpread must be a whole number >= 0, got the string "1s"$/],
  // auth.expiryNotice
  ['expiryNotice: a function', { auth: { secret: 'x'.repeat(32), expiryNotice: notify } }, /options\.auth\.expiryNotice must be an object, got function$/],
  ['expiryNotice: without before', { auth: { secret: 'x'.repeat(32), expiryNotice: { notify } } }, /options\.auth\.expiryNotice\.before is required: a whole number of ms ahead of exp, as in before: 60000$/],
  ['expiryNotice: before 0', { auth: { secret: 'x'.repeat(32), expiryNotice: { before: 0, notify } } }, /options\.auth\.expiryNotice\.before must be a whole number >= 1, got number 0$/],
  ['expiryNotice: before a string', { auth: { secret: 'x'.repeat(32), expiryNotice: { before: '1m', notify } } }, /options\.auth\.expiryNotice\.before must be a whole number >= 1, got the string "1m"$/],
  ['expiryNotice: without notify', { auth: { secret: 'x'.repeat(32), expiryNotice: { before: 60_000 } } }, /options\.auth\.expiryNotice\.notify must be a function \(socket, request, expiresAt\) => \{\}, got undefined$/],
  ['expiryNotice: notify a string', { auth: { secret: 'x'.repeat(32), expiryNotice: { before: 60_000, notify: 'refresh' } } }, /options\.auth\.expiryNotice\.notify must be a function \(socket, request, expiresAt\) => \{\}, got the string "refresh"$/],
  ['expiryNotice: an unknown key', { auth: { secret: 'x'.repeat(32), expiryNotice: { before: 60_000, notify, after: 1 } } }, /unknown option options\.auth\.expiryNotice\.after; known options are before, notify$/]
]

test('invalid plugin options fail register with a message that says what to write', async (t) => {
  for (const [name, options, message] of invalidPluginOptions) {
    await t.test(name, async (t) => {
      assertInvalidOption(t, await registrationError(t, options), message)
    })
  }
})

const invalidRouteOptions: Array<[name: string, config: unknown, message: RegExp]> = [
  ['maxMessageBytes above maxPayload', { maxMessageBytes: 1025 }, /^fastify-ws-guard: maxMessageBytes \(1025\) of GET \/ws is above the ws server's maxPayload \(1024\), the hard bound every route shares: lower maxMessageBytes, or raise websocket\.maxPayload$/],
  ['messageRate without interval', { messageRate: { messages: 5 } }, /config\.wsGuard of GET \/ws\.messageRate needs messages and interval/],
  ['messageRate: onExcess unknown', { messageRate: { messages: 5, interval: 1000, onExcess: 'ignore' } }, /config\.wsGuard of GET \/ws\.messageRate\.onExcess must be one of 'close', 'drop'/],
  ['maxConnectionAge under a second', { maxConnectionAge: 500 }, /config\.wsGuard of GET \/ws\.maxConnectionAge must be a whole number >= 1000, got number 500$/],
  ['drainSpread: plugin-wide only', { drainSpread: 100 }, /unknown option config\.wsGuard of GET \/ws\.drainSpread/],
  ['expiryNotice without before', { auth: { expiryNotice: { notify } } }, /config\.wsGuard of GET \/ws\.auth\.expiryNotice\.before is required/]
]

test('invalid route options fail at the route\'s declaration, naming the route', async (t) => {
  for (const [name, config, message] of invalidRouteOptions) {
    await t.test(name, async (t) => {
      assertInvalidOption(t, await registrationError(t, { websocket: { maxPayload: 1024 }, auth: { secret: 'x'.repeat(32) } }, (app) => {
        app.wsRoute('/ws', { config: { wsGuard: config as never } }, () => {})
      }), message)
    })
  }
})

test('a plugin-wide maxMessageBytes above maxPayload fails at the first route\'s declaration', async (t) => {
  for (const [name, options, message] of [
    ['above the default maxPayload', { maxMessageBytes: 2 * 1024 * 1024 }, /^fastify-ws-guard: maxMessageBytes \(2097152\) of GET \/ws is above the ws server's maxPayload \(1048576\), the hard bound every route shares: lower maxMessageBytes, or raise websocket\.maxPayload$/],
    ['above websocket.maxPayload', { websocket: { maxPayload: 100 }, maxMessageBytes: 101 }, /maxMessageBytes \(101\) of GET \/ws is above the ws server's maxPayload \(100\)/]
  ] as const) {
    await t.test(name, async (t) => {
      assertInvalidOption(t, await registrationError(t, options, (app) => { app.wsRoute('/ws', () => {}) }), message)
    })
  }
})

test('valid options register', async (t) => {
  const valid: unknown[] = [
    { maxMessageBytes: 1 },
    { maxMessageBytes: 1024 * 1024 },
    // maxPayload 0: ws sets no bound, the route's is the only one.
    { websocket: { maxPayload: 0 }, maxMessageBytes: 64 * 1024 * 1024 },
    { messageRate: { messages: 1, interval: 1 } },
    { messageRate: { messages: 20, interval: 1000, burst: 1, perUser: true, onExcess: 'drop' } },
    { maxConnectionAge: 1000 },
    { drainSpread: 0 },
    { drainSpread: 10_000 },
    { drainSpread: 0, shutdownGrace: 0 },
    { auth: { secret: 'x'.repeat(32), expiryNotice: { before: 1, notify } } }
  ]
  for (const options of valid) {
    await t.test(JSON.stringify(options), async (t) => {
      t.equal(await registrationError(t, options), undefined)
    })
  }
})

test('the message guards are normalized once: defaults, frozen, undefined without any', async (t) => {
  t.equal(normalizeOptions({}).route.messages, undefined, 'no guard: nothing to check per message')
  t.equal(normalizeOptions({}).route.maxConnectionAge, undefined, 'no age by default')

  const sizeOnly = normalizeOptions({ maxMessageBytes: 512 }).route.messages
  t.same(sizeOnly, { maxBytes: 512, rate: undefined }, 'a size bound alone')
  t.ok(Object.isFrozen(sizeOnly))

  const rate = normalizeOptions({ messageRate: { messages: 20, interval: 1000 } }).route.messages
  t.match(rate, { maxBytes: undefined, rate: { messages: 20, interval: 1000, burst: 20, perUser: false, onExcess: 'close' } }, 'burst defaults to messages, perUser to false, onExcess to close')
  t.ok(Object.isFrozen(rate) && Object.isFrozen(rate?.rate), 'frozen')

  const custom = normalizeOptions({ messageRate: { messages: 5, interval: 100, burst: 50, perUser: true, onExcess: 'drop' } }).route.messages?.rate
  t.match(custom, { messages: 5, interval: 100, burst: 50, perUser: true, onExcess: 'drop' })
})

test('a route\'s message guards merge over the plugin\'s', async (t) => {
  const defaults = normalizeOptions({ maxMessageBytes: 64, messageRate: { messages: 5, interval: 1000 } })
  const bigger = resolveRouteSettings(defaults, { maxMessageBytes: 128 }, 'GET /big')
  t.equal(bigger.messages?.maxBytes, 128, 'the route\'s bound')
  t.match(bigger.messages?.rate, { messages: 5, interval: 1000 }, 'the plugin\'s rate')
  const own = resolveRouteSettings(defaults, { messageRate: { messages: 1, interval: 10 } }, 'GET /own')
  t.equal(own.messages?.maxBytes, 64, 'the plugin\'s bound')
  t.match(own.messages?.rate, { messages: 1, interval: 10, burst: 1 }, 'the route\'s rate, with its own defaults')
  t.equal(resolveRouteSettings(defaults, { maxConnectionAge: 5000 }, 'GET /aged').maxConnectionAge, 5000)
})

test('drainSpread and its default', async (t) => {
  t.same([normalizeOptions({}).drainSpread, normalizeOptions({}).maxDefaultDrainSpread], [undefined, 5000], 'by default: scaled at close time, up to 5000 ms')
  t.equal(normalizeOptions({ shutdownGrace: 3000 }).maxDefaultDrainSpread, 1500, 'up to half of shutdownGrace')
  t.equal(normalizeOptions({ shutdownGrace: 3001 }).maxDefaultDrainSpread, 1500, 'rounded down')
  t.equal(normalizeOptions({ shutdownGrace: 60_000 }).maxDefaultDrainSpread, 5000, 'and never past 5000')
  t.equal(normalizeOptions({ drainSpread: 0 }).drainSpread, 0, '0: all at once')
  t.equal(normalizeOptions({ drainSpread: 750, shutdownGrace: 1000 }).drainSpread, 750)
})

test('auth.expiryNotice is kept as given, on the plugin and merged into a route\'s auth', async (t) => {
  const defaults = normalizeOptions({ auth: { secret: 'x'.repeat(32), expiryNotice: { before: 60_000, notify } } })
  t.same(defaults.route.auth?.expiryNotice, { before: 60_000, notify })
  t.ok(Object.isFrozen(defaults.route.auth?.expiryNotice), 'frozen')
  const inherited = resolveRouteSettings(defaults, { auth: { clockTolerance: 0 } }, 'GET /ws')
  t.equal(inherited.auth?.expiryNotice?.notify, notify, 'a route\'s auth keeps the plugin\'s notice')
  const other = (): void => {}
  t.equal(resolveRouteSettings(defaults, { auth: { expiryNotice: { before: 1000, notify: other } } }, 'GET /ws').auth?.expiryNotice?.notify, other, 'or names its own')
})

test('maxMessageBytes is checked against the maxPayload of the ws server in use', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(websocket, { options: { maxPayload: 4 * 1024 * 1024 } })
  let err: unknown
  try {
    await app.register(wsGuard, { maxMessageBytes: 2 * 1024 * 1024 })
    app.wsRoute('/ws', () => {})
    await app.ready()
  } catch (error) {
    err = error
  }
  t.equal(err, undefined, '2 MiB is within the 4 MiB the app\'s ws server enforces')
  t.equal(app.websocketServer.options.maxPayload, 4 * 1024 * 1024, 'the app\'s maxPayload is the one in force')
})
