import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { test } from 'tap'
import { chromiumPath, launchBrowser, newContext } from '../e2e/browser-harness.js'
import { boundClose, requireBinary } from '../e2e/system.js'
import { mint, secret, secretBytes } from '../helpers/tokens.js'
import { recordingApp } from './recorder.js'

/*
 * connect() in headless Chromium, as a page loads it: dist/client.js as a plain ES module, no
 * bundler, its token from the app's own endpoint. One session walks the contract end to end:
 * open, a message, the token expires, a fresh token and an immediate reconnect, then a 4403
 * that stops it. Debian's Chromium: skipped loudly without it, failed under CI=true.
 */

const dist = fileURLToPath(new URL('../../dist/', import.meta.url))

/** The page: imports connect() from the built client and records every callback in `window.events`. */
const page = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>connect() e2e</title>
<script type="module">
  import { connect } from '/dist/client.js'
  const events = window.events = []
  const chat = window.chat = connect('ws://' + location.host + '/chat', {
    token: async () => (await fetch('/token')).text(),
    protocols: ['chat.v1'],
    minDelay: 50,
    maxDelay: 1000,
    onOpen: (socket) => {
      events.push({ type: 'open', protocol: socket.protocol })
      chat.send('hi')
    },
    onMessage: (event) => events.push({ type: 'message', data: event.data }),
    onClose: (report) => events.push({ type: 'close', ...report }),
    onFailure: (report) => events.push({ type: 'failure', error: String(report.error) })
  })
</script>
`

interface PageWindow { events: Array<Record<string, unknown>>, chat: { state: string } }

test('Chromium: connect() from dist/client.js opens, receives, renews an expired token at once, and stops on 4403', async (t) => {
  if (!requireBinary(t, chromiumPath, 'chromium')) return
  const minted: string[] = []
  // clockTolerance 0: the guard closes the first connection the moment its token's exp passes.
  const app = await recordingApp(t, { auth: { secret, clockTolerance: 0 }, rejectWith: 'close' }, (app) => {
    app.get('/page', async (_request, reply) => reply.type('text/html; charset=utf-8').send(page))
    app.get('/favicon.ico', async (_request, reply) => reply.code(204).send())
    app.get('/dist/*', async (request, reply) => {
      const file = (request.params as { '*': string })['*']
      if (!/^[\w/-]+\.js$/.test(file)) return reply.code(404).send()
      return reply.type('text/javascript; charset=utf-8').send(await readFile(dist + file, 'utf8'))
    })
    app.get('/token', async (_request, reply) => {
      const n = minted.length + 1
      // The first token lives one to two seconds (exp has a one-second grain); the next, ten minutes.
      const token = await mint(secretBytes, { sub: 'alice', n }, { exp: n === 1 ? Math.floor(Date.now() / 1000) + 2 : '10m' })
      minted.push(token)
      return reply.type('text/plain').send(token)
    })
    app.wsRoute('/chat', { config: { wsGuard: { protocols: ['chat.v1'] } } }, (socket, request) => {
      const n = request.wsUser?.n
      socket.send(`hello ${String(n)}`)
      socket.on('message', (data) => {
        socket.send(`echo ${String(data)}`)
        if (n === 2) socket.close(4403, 'disconnected')
      })
    })
  })
  boundClose(t, app.app.server)

  const browser = await launchBrowser(t)
  const tab = await (await newContext(t, browser)).newPage()
  const errors: string[] = []
  tab.on('pageerror', (error) => errors.push(error.message))
  const response = await tab.goto(`http://127.0.0.1:${app.port}/page`)
  t.equal(response?.status(), 200, 'the page loaded')
  await tab.waitForFunction(() => (window as unknown as PageWindow).events?.some((event) => event.type === 'close' && event.willRetry === false), null, { timeout: 10_000 })
    .catch(() => t.fail('the session did not end with a close that stops'))
  const events = await tab.evaluate(() => (window as unknown as PageWindow).events)
  t.same(errors, [], 'no page errors (dist/client.js and its imports loaded as modules)')
  t.same(events, [
    { type: 'open', protocol: 'chat.v1' },
    { type: 'message', data: 'hello 1' },
    { type: 'message', data: 'echo hi' },
    { type: 'close', code: 4401, reason: 'token expired', willRetry: true, delay: 0 },
    { type: 'open', protocol: 'chat.v1' },
    { type: 'message', data: 'hello 2' },
    { type: 'message', data: 'echo hi' },
    { type: 'close', code: 4403, reason: 'disconnected', willRetry: false }
  ], 'open, messages, an expired token renewed at once, a 4403 that stops')
  t.equal(await tab.evaluate(() => (window as unknown as PageWindow).chat.state), 'closed', "the handle is 'closed'")
  t.equal(minted.length, 2, 'the page fetched a token before each connection')
  t.same(app.handshakes.map((handshake) => handshake.token), minted, 'each handshake offered the token just fetched')
})
