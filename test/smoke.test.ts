import { test } from 'tap'
import wsGuard from '../index.js'
import { countingEcho, handshake, nextMessage, openClient, rawExchange, startApp, tryConnect } from './helpers.js'

test('smoke', async (t) => {
  const echo = countingEcho()
  const { port, url, logs } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', echo.handler)
    app.get('/plain', async () => 'hi')
  })
  const socket = await openClient(t, url('/ws'))
  socket.send('hello')
  t.equal(await nextMessage(socket), 'hello')
  const plain = await rawExchange(port, 'GET /ws HTTP/1.1\r\nHost: x\r\n\r\n')
  t.equal(plain.status, 426)
  console.error(plain.text)
  const bad = await rawExchange(port, handshake('/ws', { 'Sec-WebSocket-Key': 'abc' }))
  console.error(bad.text)
  const cross = await tryConnect(url('/ws'), [], { origin: 'https://evil.example' })
  console.error(cross)
  const notws = await tryConnect(url('/plain'))
  console.error(notws)
  console.error(logs.text)
  t.equal(echo.calls, 1)
})
