import { test } from 'tap'
import { buildDemo } from '../example/demo-app.js'
import { tryConnect } from './helpers/clients.js'

test('the demo serves its page, hands out development tokens and guards its chat route', async (t) => {
  const { app, mint } = await buildDemo({ logLevel: 'silent' })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const base = `127.0.0.1:${port}`

  const page = await fetch(`http://${base}/`)
  t.equal(page.status, 200)
  t.match(await page.text(), /bearerProtocols\(token, 'chat\.v1'\)/)

  const script = await (await fetch(`http://${base}/client.js`)).text()
  t.match(script, /^export function bearerProtocols/)
  t.equal((await fetch(`http://${base}/favicon.ico`)).status, 204)

  const { token } = await (await fetch(`http://${base}/dev-token?name=alice`)).json() as { token: string }
  const bad = await (await fetch(`http://${base}/dev-token?name=${encodeURIComponent('<script>')}`)).json() as { token: string }
  t.equal(JSON.parse(Buffer.from(bad.token.split('.')[1]!, 'base64url').toString()).sub, 'guest')
  const unnamed = await (await fetch(`http://${base}/dev-token`)).json() as { token: string }
  t.equal(JSON.parse(Buffer.from(unnamed.token.split('.')[1]!, 'base64url').toString()).sub, 'guest')

  const refused = await tryConnect(`ws://${base}/chat`)
  t.equal(refused.kind === 'refused' && refused.status, 401)

  const alice = await tryConnect(`ws://${base}/chat`, ['chat.v1', `bearer.${token}`])
  if (alice.kind !== 'open') throw new Error(`expected open, got ${alice.kind}`)
  t.teardown(() => alice.socket.terminate())
  t.equal(alice.protocol, 'chat.v1')
  const bob = await tryConnect(`ws://${base}/chat`, ['chat.v1'], { headers: { authorization: `Bearer ${await mint('bob')}` } })
  if (bob.kind !== 'open') throw new Error(`expected open, got ${bob.kind}`)
  t.teardown(() => bob.socket.terminate())
  const heard = new Promise((resolve) => {
    alice.socket.on('message', (data) => {
      const message = JSON.parse(String(data))
      if (message.from === 'bob') resolve(message)
    })
  })
  bob.socket.send('hi alice')
  t.same(await heard, { from: 'bob', text: 'hi alice' })
})
