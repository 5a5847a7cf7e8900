import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { test } from 'tap'
import wsGuard from '../../index.js'
import { startApp } from '../helpers/app.js'
import { mint, secret, secretBytes } from '../helpers/tokens.js'
import { boundClose, requireBinary } from './system.js'

const run = promisify(execFile)

/**
 * Debian's Python, not whatever `python3` comes first on PATH (a pyenv, a venv): that is where
 * python3-websockets is installed. `PYTHON3_BIN` points elsewhere.
 */
const pythonPath = process.env.PYTHON3_BIN ?? '/usr/bin/python3'
const clientScript = fileURLToPath(new URL('fixtures/ws_client.py', import.meta.url))

interface Case { name: string, headers?: Record<string, string>, subprotocols?: string[], origin?: string, send?: string }
type Result =
  | { name: string, outcome: 'open', subprotocol: string | null, echo: string | null }
  | { name: string, outcome: 'refused', status: number, headers: Record<string, string> }
  | { name: string, outcome: 'error', type: string, message: string }

/** Runs the Python client on `cases`, bounded, and returns its results by case name. */
async function python (url: string, cases: Case[]): Promise<{ version: string, results: Map<string, Result> }> {
  const { stdout } = await run(pythonPath, [clientScript, JSON.stringify({ url, cases })], { timeout: 30_000 })
  const output = JSON.parse(stdout) as { websockets: string, results: Result[] }
  return { version: output.websockets, results: new Map(output.results.map((result) => [result.name, result])) }
}

test('a Python client (python3-websockets) against the guard', async (t) => {
  if (!requireBinary(t, pythonPath, 'python3-websockets', { probe: ['-c', 'import websockets'] })) return
  let calls = 0
  const { app, port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, protocols: ['chat.v1'], shutdownGrace: 500 })
    app.wsRoute('/ws', (socket, request) => {
      calls++
      socket.on('message', (data) => socket.send(`${request.wsUser?.sub}:${String(data)}`))
    })
  })
  boundClose(t, app.server)
  const token = await mint(secretBytes, { sub: 'py-user' }, { exp: '10m' })
  const forged = await mint(new TextEncoder().encode('another-secret-0123456789-abcdefghijklmnopqrs'), { sub: 'py-user' }, { exp: '10m' })

  const { version, results } = await python(url('/ws'), [
    { name: 'header', headers: { Authorization: `Bearer ${token}` }, send: 'hi' },
    { name: 'subprotocol', subprotocols: ['chat.v1', `bearer.${token}`], send: 'hi' },
    { name: 'same origin', headers: { Authorization: `Bearer ${token}` }, origin: `http://127.0.0.1:${port}`, send: 'hi' },
    { name: 'no token' },
    { name: 'forged token', headers: { Authorization: `Bearer ${forged}` } },
    { name: 'bad origin', headers: { Authorization: `Bearer ${token}` }, origin: 'https://evil.example' }
  ])
  t.match(version, /^\d+\.\d+/, `websockets ${version}`)

  t.same(results.get('header'), { name: 'header', outcome: 'open', subprotocol: null, echo: 'py-user:hi' }, 'a header token opens the socket')
  t.same(results.get('subprotocol'), { name: 'subprotocol', outcome: 'open', subprotocol: 'chat.v1', echo: 'py-user:hi' },
    'a subprotocol token opens it and the selected subprotocol is the app\'s, never the token')
  t.same(results.get('same origin'), { name: 'same origin', outcome: 'open', subprotocol: null, echo: 'py-user:hi' }, 'a same-origin Origin is accepted')

  t.match(results.get('no token'), { outcome: 'refused', status: 401, headers: { 'www-authenticate': 'Bearer realm="websocket"' } }, 'no token: 401 with a bare challenge')
  t.match(results.get('forged token'), { outcome: 'refused', status: 401, headers: { 'www-authenticate': /error="invalid_token"/ } }, 'a forged token: 401 invalid_token')
  t.match(results.get('bad origin'), { outcome: 'refused', status: 403 }, 'another origin: 403, even with a valid token')
  t.equal(calls, 3, 'the handler ran for the three accepted connections only')
  t.same(app.wsGuard.stats().rejected, { FST_WS_GUARD_TOKEN_MISSING: 1, FST_WS_GUARD_TOKEN_INVALID: 1, FST_WS_GUARD_ORIGIN_NOT_ALLOWED: 1 }, 'the guard counted each refusal under its code')
})
