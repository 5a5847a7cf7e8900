import { randomBytes } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import { SignJWT } from 'jose'
import type { WebSocket } from 'ws'
import { bearerProtocols } from '../client.js'
import wsGuard, { requestSerializer } from '../index.js'

/** A chat room behind the guard: a page, a development token endpoint and a guarded WebSocket route. */
export interface Demo {
  app: FastifyInstance
  /** Mints a development token for `name`, valid 15 minutes. */
  mint: (name: string) => Promise<string>
}

export async function buildDemo (options: { logLevel: string }): Promise<Demo> {
  // A development key minted at start: nothing to configure, nothing to leak.
  const secret = randomBytes(32)
  const mint = async (name: string): Promise<string> => await new SignJWT({ name })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(name)
    .setIssuedAt()
    .setExpirationTime('15m')
    .sign(secret)

  const app = Fastify({ logger: { level: options.logLevel, serializers: { req: requestSerializer } } })
  await app.register(wsGuard, {
    auth: { secret },
    protocols: ['chat.v1']
  })

  const room = new Set<WebSocket>()
  app.wsRoute('/chat', (socket, request) => {
    const name = String(request.wsUser?.sub)
    room.add(socket)
    socket.on('close', () => room.delete(socket))
    socket.on('message', (data) => {
      const line = JSON.stringify({ from: name, text: String(data).slice(0, 500) })
      for (const peer of room) peer.send(line)
    })
    socket.send(JSON.stringify({ from: 'server', text: `welcome, ${name}` }))
  })

  // Development only: hands out tokens to anyone. A real app gets them from its login.
  app.get<{ Querystring: { name?: string } }>('/dev-token', async (request) => {
    const { name = 'guest' } = request.query
    return { token: await mint(/^[a-z0-9-]{1,20}$/i.test(name) ? name : 'guest') }
  })

  // The page imports the same helper the package exports as fastify-ws-guard/client.
  const clientScript = `export ${bearerProtocols.toString()}\n`
  app.get('/client.js', async (_request, reply) => reply.type('text/javascript').send(clientScript))
  app.get('/favicon.ico', async (_request, reply) => reply.code(204).send())
  app.get('/', async (_request, reply) => reply.type('text/html').send(page))
  return { app, mint }
}

const page = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>fastify-ws-guard demo</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #log { border: 1px solid #ccc; height: 16rem; overflow-y: auto; padding: .5rem; }
  .status { color: #555; }
</style>
<h1>fastify-ws-guard demo</h1>
<p class="status" id="status">connecting…</p>
<div id="log"></div>
<form id="form"><input id="text" autocomplete="off" placeholder="say something" autofocus> <button>send</button></form>
<script type="module">
  import { bearerProtocols } from '/client.js'
  const status = document.getElementById('status')
  const log = document.getElementById('log')
  const show = (text) => { const p = document.createElement('p'); p.textContent = text; log.append(p); log.scrollTop = log.scrollHeight }
  const name = 'guest-' + Math.random().toString(36).slice(2, 6)
  const { token } = await (await fetch('/dev-token?name=' + name)).json()
  // Browsers cannot set headers on a WebSocket: the token rides in the subprotocol list,
  // and the server selects chat.v1, never the token.
  const socket = new WebSocket(location.origin.replace('http', 'ws') + '/chat', bearerProtocols(token, 'chat.v1'))
  socket.onopen = () => { status.textContent = 'connected as ' + name + ' (protocol ' + socket.protocol + ')' }
  socket.onmessage = (event) => { const { from, text } = JSON.parse(event.data); show(from + ': ' + text) }
  socket.onclose = (event) => { status.textContent = 'closed: ' + event.code + ' ' + event.reason }
  document.getElementById('form').onsubmit = (event) => {
    event.preventDefault()
    const input = document.getElementById('text')
    if (input.value !== '') socket.send(input.value)
    input.value = ''
  }
</script>
`
