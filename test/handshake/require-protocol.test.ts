import { test } from 'tap'
import { guardedApp, registrationError } from '../helpers/app.js'
import { tryConnect } from '../helpers/clients.js'
import { assertRefusal } from '../helpers/refusals.js'

/* `requireProtocol`: a route that must speak one of its subprotocols. */

test('without requireProtocol, a client that offers no subprotocol is accepted with none selected', async (t) => {
  const app = await guardedApp(t, { protocols: ['chat.v1'] })
  const outcome = await tryConnect(app.url('/ws'))
  t.equal(outcome.kind, 'open')
  if (outcome.kind === 'open') {
    t.equal(outcome.protocol, '', 'no subprotocol')
    outcome.socket.terminate()
  }
})

test('with requireProtocol, only a client that offers one of the route\'s protocols gets through', async (t) => {
  const app = await guardedApp(t, { protocols: ['chat.v2', 'chat.v1'], requireProtocol: true })
  for (const offered of [[], ['bearer'], ['chat.v0']]) {
    const refusal = assertRefusal(t, await tryConnect(app.url('/ws'), offered), 400, 'FST_WS_GUARD_UNSUPPORTED_PROTOCOL')
    t.match(refusal.body.message, /offer one of: chat\.v2, chat\.v1/, `offered ${JSON.stringify(offered)}`)
  }
  const outcome = await tryConnect(app.url('/ws'), ['chat.v0', 'chat.v1'])
  t.equal(outcome.kind === 'open' ? outcome.protocol : outcome.kind, 'chat.v1')
  if (outcome.kind === 'open') outcome.socket.terminate()
  t.equal(app.echo.calls, 1)
})

test('a route overrides it, and it needs protocols', async (t) => {
  const app = await guardedApp(t, { protocols: ['chat.v1'], requireProtocol: true }, {
    setup: (app) => { app.wsRoute('/lenient', { config: { wsGuard: { requireProtocol: false } } }, (socket) => { socket.close() }) }
  })
  const lenient = await tryConnect(app.url('/lenient'))
  t.not(lenient.kind, 'refused', 'the lenient route accepts a client without a subprotocol')
  const error = await registrationError(t, { requireProtocol: true })
  t.equal(error?.code, 'FST_WS_GUARD_INVALID_OPTION')
  t.match(error?.message, /options\.requireProtocol needs the subprotocols the route speaks: add protocols, as in protocols: \['chat\.v1'\]/)
  t.match((await registrationError(t, { protocols: ['a'], requireProtocol: 'yes' }))?.message, /options\.requireProtocol must be true or false/)
})
