import { test } from 'tap'
import { RedisStore, type RedisConnection, type SubscriptionEvents } from '../../redis.js'
import { recordingListener } from '../helpers/redis.js'
import { waitFor } from '../helpers/wait.js'

// The order of availability events, whatever order a client reports its connections in: a
// stand-in connection plays the client's part, so each case is exact.

function fakeConnection (): { connection: RedisConnection, ready: (value: boolean) => void, events: () => SubscriptionEvents, closed: () => number } {
  let isReady = true
  let events: SubscriptionEvents | undefined
  let closed = 0
  return {
    connection: {
      get isReady () { return isReady },
      command: async (args) => args[0] === 'INFO' ? 'redis_version:7.2.0' : 1,
      subscribe: async (_channel, _sharded, subscription) => {
        events = subscription
        return async () => { closed++ }
      }
    },
    ready: (value) => { isReady = value },
    events: () => events as SubscriptionEvents,
    closed: () => closed
  }
}

test('available and unavailable alternate, once per change', async (t) => {
  const fake = fakeConnection()
  const heard = recordingListener()
  const stop = await new RedisStore({ client: fake.connection }).listen(heard.listener)
  t.same(heard.events, ['available'], 'available once subscribed')
  fake.ready(false)
  fake.events().dropped(new Error('first'))
  fake.events().dropped(new Error('retry failed'))
  t.same(heard.events, ['available', 'unavailable: first'], 'one unavailable, with the first error')
  fake.events().resubscribed()
  await new Promise((resolve) => setTimeout(resolve, 60))
  t.same(heard.events.length, 2, 'resubscribed, but the app\'s client is still away: not available yet')
  fake.ready(true)
  await waitFor(() => heard.events.length === 3, 'available')
  t.equal(heard.events[2], 'available', 'available once both connections are back')
  fake.events().resubscribed()
  await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(heard.events.length, 3, 'not twice')
  await stop()
  t.equal(fake.closed(), 1, 'stop closes the subscription')
  fake.events().dropped(new Error('after stop'))
  fake.events().message(JSON.stringify({ type: 'disconnect', from: 'x', filter: {}, code: 4000, reason: '' }))
  t.equal(heard.events.length, 3, 'nothing told after stop')
  t.same(heard.messages, [], 'no message after stop')
})

test('a drop while waiting for the app\'s client cancels the available', async (t) => {
  const fake = fakeConnection()
  const heard = recordingListener()
  const stop = await new RedisStore({ client: fake.connection }).listen(heard.listener)
  fake.ready(false)
  fake.events().dropped(new Error('down'))
  fake.events().resubscribed()
  fake.events().dropped(new Error('down again'))
  fake.ready(true)
  await new Promise((resolve) => setTimeout(resolve, 60))
  t.same(heard.events, ['available', 'unavailable: down'], 'still unavailable: the subscription went away again')
  fake.ready(false)
  fake.events().resubscribed()
  await stop()
  fake.ready(true)
  await new Promise((resolve) => setTimeout(resolve, 60))
  t.same(heard.events, ['available', 'unavailable: down'], 'and a stop while waiting for the app\'s client tells nothing more')
})
