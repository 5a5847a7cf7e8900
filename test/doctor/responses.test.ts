import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import Fastify from 'fastify'
import { test, type Test } from 'tap'
import { doctor, doctorText, expect, stage, wsServer, type Run } from '../helpers/doctor.js'

/*
 * Every answer the upgrade and listen stages interpret, from servers on loopback: raw TCP
 * servers that write exactly the bytes under test, and ws servers for the frames after a 101.
 */

interface RawRequest { path: string, headers: Record<string, string>, accept: string }

/** A TCP server that hands each request head, parsed, to `respond`, with the 101 accept it calls for. */
async function rawServer (t: Test, respond: (socket: Socket, request: RawRequest) => void): Promise<number> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    let head = ''
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1')
      const end = head.indexOf('\r\n\r\n')
      if (end === -1) return
      socket.off('data', onData)
      const [first = '', ...lines] = head.slice(0, end).split('\r\n')
      const headers = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]))
      const key = headers['sec-websocket-key'] ?? ''
      const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64')
      respond(socket, { path: first.split(' ')[1]!, headers, accept })
    }
    socket.on('data', onData)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  return (server.address() as AddressInfo).port
}

const empty = 'Content-Length: 0\r\n\r\n'

test('refusals by status, without a fastify-ws-guard code (exit 7)', async (t) => {
  const responses: Record<string, string> = {
    '/200': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello',
    '/302': 'HTTP/1.1 302 Found\r\nLocation: https://example.test/ws\r\n' + empty,
    '/307': 'HTTP/1.1 307 Temporary Redirect\r\n' + empty,
    '/400': 'HTTP/1.1 400 Bad Request\r\nContent-Length: 22\r\n\r\nMissing Sec-WebSocket-Key',
    '/401': 'HTTP/1.1 401 Unauthorized\r\n' + empty,
    '/401-expired': 'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error="invalid_token", error_description="token expired"\r\n' + empty,
    '/401-realm': 'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="api"\r\n' + empty,
    '/403': 'HTTP/1.1 403 Forbidden\r\n' + empty,
    '/403-scope': 'HTTP/1.1 403 Forbidden\r\nWWW-Authenticate: Bearer error="insufficient_scope"\r\n' + empty,
    '/404': 'HTTP/1.1 404 Not Found\r\n' + empty,
    '/418': 'HTTP/1.1 418 I\'m a teapot\r\n' + empty,
    '/426': 'HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\n' + empty,
    '/429': 'HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\n' + empty,
    '/500': 'HTTP/1.1 500 Internal Server Error\r\n' + empty,
    '/502': 'HTTP/1.1 502 Bad Gateway\r\n' + empty,
    '/503': 'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n' + empty,
    '/504': 'HTTP/1.1 504 Gateway Timeout\r\n' + empty,
    '/100': 'HTTP/1.1 100 Continue\r\n\r\n'
  }
  const port = await rawServer(t, (socket, request) => socket.write(responses[request.path.replace(/\?.*/, '')]!))
  const cases: Array<[path: string, args: string[], cause: RegExp, fix: RegExp]> = [
    ['/200', [], /^a plain HTTP handler answered \(200\)/, /proxy_set_header Upgrade \$http_upgrade/],
    ['/302', [], /^a redirect \(302\) to https:\/\/example\.test\/ws: WebSocket clients do not follow redirects/, /use wss:\/\//],
    ['/307', [], /^a redirect \(307\) to \(no Location\)/, /final URL/],
    ['/400', [], /^the server refused the handshake as malformed \(400\)/, /read the body/],
    ['/401', [], /^the server requires authentication \(401\)$/, /^send a token: --token T or --token-env VAR/],
    ['/401-expired', ['--token', 'a.b.c'], /^the server requires authentication \(401\) and refused the token \(error="invalid_token"\); it says "token expired"$/, /get a fresh one/],
    ['/401-realm', ['--token', 'a.b.c'], /^the server requires authentication \(401\)$/, /try --token-in protocol or --token-in query/],
    ['/403', [], /usually the Origin is not allowed/, /rerun with --origin/],
    ['/403', ['--origin', 'https://app.example'], /usually the Origin is not allowed/, /check that https:\/\/app\.example is on the server's origin allowlist/],
    ['/403-scope', [], /the token lacks the required scope/, /--origin/],
    ['/404', [], /^nothing at \/404 on this server/, /printRoutes/],
    ['/418', [], /^the server refused the handshake \(418\)$/, /server log/],
    ['/426', [], /a proxy in between dropped the Upgrade\/Connection headers/, /proxy_http_version 1\.1/],
    ['/429', [], /^too many requests/, /Retry-After/],
    ['/500', [], /^the server failed \(500\)$/, /server log/],
    ['/502', [], /could not reach the app/, /proxy_pass/],
    ['/503', [], /^service unavailable/, /Retry-After/],
    ['/504', [], /timed out waiting for the app/, /proxy_read_timeout/],
    ['/100', [], /^status 100 is no answer to a WebSocket handshake$/, /101/]
  ]
  for (const [path, args, cause, fix] of cases) {
    const run = await doctor([`ws://127.0.0.1:${port}${path}`, ...args, '--timeout', '300'])
    expect(t, run, 'upgrade', 'fail', 7)
    t.match(stage(run, 'upgrade').findings, [{ code: undefined, cause, fix }], `${path} ${args.join(' ')}`)
  }
  const redirect = await doctor([`ws://127.0.0.1:${port}/302`])
  t.ok(stage(redirect, 'upgrade').details.includes('< location: https://example.test/ws'))
  t.equal(stage(redirect, 'upgrade').data.body, '')
})

test('refusal bodies: chunked, until close, long, and an unknown guard code (exit 7)', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.get('/chunked', (_request, reply) => reply.code(400).send(Readable.from(['{"code":"FST_WS_GUARD_', 'INVALID_KEY"}'])))
  app.get('/long', async () => 'x'.repeat(800))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo

  const chunked = await doctor([`ws://127.0.0.1:${port}/chunked`])
  expect(t, chunked, 'upgrade', 'fail', 7)
  t.match(stage(chunked, 'upgrade').findings, [{ code: 'FST_WS_GUARD_INVALID_KEY', cause: /Sec-WebSocket-Key was missing/ }])
  t.match(stage(chunked, 'upgrade').details, ['> GET /chunked HTTP/1.1'])
  t.ok(stage(chunked, 'upgrade').details.includes('< body: {"code":"FST_WS_GUARD_INVALID_KEY"}'))

  const long = await doctor([`ws://127.0.0.1:${port}/long`])
  t.equal(stage(long, 'upgrade').data.body, `${'x'.repeat(500)}...`)

  const raw = await rawServer(t, (socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nServer: \x1b[31mevil\r\n\r\n{"code":"FST_WS_GUARD_FROM_THE_FUTURE",\n"message":"a\tb"}')
  })
  const future = await doctor([`ws://127.0.0.1:${raw}/`])
  expect(t, future, 'upgrade', 'fail', 7)
  t.match(stage(future, 'upgrade').findings, [{ code: 'FST_WS_GUARD_FROM_THE_FUTURE', cause: /a code this doctor does not know/ }])
  t.equal(stage(future, 'upgrade').data.body, '{"code":"FST_WS_GUARD_FROM_THE_FUTURE", "message":"a b"}')
  const { text } = await doctorText([`ws://127.0.0.1:${raw}/`])
  t.match(text, /< server: \?\[31mevil\n/, 'control characters from the server are masked')
})

test('no HTTP answer: silence, a hang-up, another protocol, a broken head (exit 7)', async (t) => {
  const silent = await rawServer(t, () => {})
  const silence = await doctor([`ws://127.0.0.1:${silent}/`, '--timeout', '300'])
  expect(t, silence, 'upgrade', 'fail', 7)
  t.match(stage(silence, 'upgrade').findings, [{ code: 'ETIMEDOUT', cause: 'no response in 300 ms: the server accepted the connection and said nothing' }])

  const hangUp = await rawServer(t, (socket) => socket.end())
  const closed = await doctor([`ws://127.0.0.1:${hangUp}/`, '--timeout', '300'])
  expect(t, closed, 'upgrade', 'fail', 7)
  t.match(stage(closed, 'upgrade').findings, [{ code: undefined, cause: 'the server closed the connection without answering' }])

  const ssh = await rawServer(t, (socket) => socket.end('SSH-2.0-OpenSSH_9.2p1\r\n'))
  const other = await doctor([`ws://127.0.0.1:${ssh}/`, '--timeout', '300'])
  expect(t, other, 'upgrade', 'fail', 7)
  t.match(stage(other, 'upgrade').findings, [{ cause: 'the server does not speak HTTP: it sent SSH-2.0-OpenSSH_9.2p1' }])

  const truncated = await rawServer(t, (socket) => socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'))
  const broken = await doctor([`ws://127.0.0.1:${truncated}/`, '--timeout', '1000'])
  expect(t, broken, 'upgrade', 'fail', 7)
  t.match(stage(broken, 'upgrade').findings, [{ cause: /^the response is not valid HTTP\/1\.1 \(incomplete, or headers over 64 KiB\): HTTP\/1\.1 101 Switching Protocols Upgrade: websocket$/ }])
})

test('a 101 that breaks the rules: every defect named (exit 7)', async (t) => {
  const port = await rawServer(t, (socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: bm90IHRoZSBhY2NlcHQ=\r\nSec-WebSocket-Protocol: other\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n')
  })
  const run = await doctor([`ws://127.0.0.1:${port}/`])
  expect(t, run, 'upgrade', 'fail', 7)
  t.same(stage(run, 'upgrade').findings.map((f) => f.code), ['BAD_UPGRADE', 'BAD_CONNECTION', 'BAD_ACCEPT', 'UNOFFERED_PROTOCOL', 'UNOFFERED_EXTENSION'])
  t.match(stage(run, 'upgrade').findings, [
    { cause: /Upgrade: \(missing\), not websocket/ },
    { cause: /Connection: \(missing\), without "upgrade"/ },
    { cause: /Sec-WebSocket-Accept is bm90IHRoZSBhY2NlcHQ=, expected [A-Za-z0-9+/]{27}=/ },
    { cause: /selected subprotocol other, which was not offered/ },
    { cause: /enabled extension permessage-deflate/ }
  ])
  t.equal(stage(run, 'listen').verdict, 'skip')

  const wrongValues = await rawServer(t, (socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: keep-alive\r\n\r\n')
  })
  const values = await doctor([`ws://127.0.0.1:${wrongValues}/`])
  t.match(stage(values, 'upgrade').findings, [{ cause: /Upgrade: h2c, not websocket/ }, { cause: /Connection: keep-alive, without/ }, { cause: /Sec-WebSocket-Accept is \(missing\)/ }])
})

test('offered subprotocols, none selected: Chrome and ws fail the connection (exit 7)', async (t) => {
  const port = await wsServer(t, { handleProtocols: () => false }, () => {})
  const run = await doctor([`ws://127.0.0.1:${port}/`, '--protocol', 'chat.v1'])
  expect(t, run, 'upgrade', 'fail', 7)
  t.match(stage(run, 'upgrade').findings, [{ code: 'NO_PROTOCOL', cause: /Chrome fails the connection .* and so does the ws client \("Server sent no subprotocol"\)/ }])
  t.equal(stage(run, 'listen').verdict, 'skip')
})

test('listen: a server that answers no ping and sends no heartbeat (exit 0, a warning and a note)', async (t) => {
  const port = await rawServer(t, (socket, request) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${request.accept}\r\n\r\n`)
  })
  const run = await doctor([`ws://127.0.0.1:${port}/`, '--listen', '300'])
  expect(t, run, 'listen', 'warn', 0)
  t.equal(run.report.warnings, 1)
  t.match(stage(run, 'listen').findings, [{ verdict: 'warn', cause: 'the server did not answer our ping in 300 ms; RFC 6455 requires a pong' }])
  t.match(stage(run, 'listen').details, ['server pings at: -', 'unsolicited server pongs at: -', /^note: no ping arrived within 300 ms, /])
  t.match(stage(run, 'listen').summary, /no server ping, no pong to our ping, 0 data frame\(s\)$/)
})

test('listen: masked frames, messages of every length, one ping (exit 0)', async (t) => {
  const port = await rawServer(t, (socket, request) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${request.accept}\r\n\r\n`)
    const large = Buffer.alloc(10)
    large[0] = 0x82
    large[1] = 127
    large.writeBigUInt64BE(70000n, 2)
    // In one write with the 101's tail: a text frame, a 16-bit and a 64-bit binary, a masked ping.
    socket.write(Buffer.concat([
      Buffer.from([0x81, 2]), Buffer.from('hi'),
      Buffer.from([0x82, 126, 0x01, 0x2c]), Buffer.alloc(300),
      large, Buffer.alloc(70000),
      Buffer.from([0x89, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2])
    ]))
    socket.on('data', (chunk: Buffer) => {
      // Answer the doctor's ping (masked, 8 bytes) with its payload.
      if ((chunk[0]! & 0x0f) === 0x9) {
        const mask = chunk.subarray(2, 6)
        const payload = Buffer.from(chunk.subarray(6, 14).map((byte, i) => byte ^ mask[i % 4]!))
        socket.write(Buffer.concat([Buffer.from([0x8a, payload.length]), payload]))
      }
    })
  })
  const run = await doctor([`ws://127.0.0.1:${port}/`, '--listen', '300'])
  expect(t, run, 'listen', 'ok', 0)
  t.match(stage(run, 'listen').data, { dataFrames: 3, serverPingsAtMs: [Number] })
  t.match(stage(run, 'listen').summary, /: 1 server ping\(s\), ping round trip/)
})

test('listen: unsolicited pongs count as heartbeats (exit 0)', async (t) => {
  const port = await wsServer(t, {}, (socket) => {
    socket.pong()
    const timer = setInterval(() => socket.pong(), 100)
    socket.on('close', () => clearInterval(timer))
  })
  const run = await doctor([`ws://127.0.0.1:${port}/`, '--listen', '350'])
  expect(t, run, 'listen', 'ok', 0)
  const pongs = stage(run, 'listen').data.unsolicitedPongsAtMs as number[]
  t.ok(pongs.length >= 2, `${pongs.length} unsolicited pongs`)
  t.type(stage(run, 'listen').data.pingRoundTripMs, 'number')
  t.match(stage(run, 'listen').details, ['server pings at: -', /^unsolicited server pongs at: \d+ ms, \d+ ms/])
})

test('listen: how a connection can end (exit 8)', async (t) => {
  const port = await wsServer(t, {}, (socket, request) => {
    const path = request.url
    setTimeout(() => {
      if (path === '/terminate') socket.terminate()
      else if (path === '/no-code') socket.close()
      else if (path === '/app-code') socket.close(4001, 'room closed')
      // What the guard sends on app.close(): the reason ends with a retry hint.
      else socket.close(1001, 'server shutting down; retry-after=732')
    }, 30)
  })
  const paths = async (path: string): Promise<Run> => await doctor([`ws://127.0.0.1:${port}${path}`, '--listen', '800'])

  const dropped = await paths('/terminate')
  expect(t, dropped, 'listen', 'fail', 8)
  t.match(stage(dropped, 'listen').findings, [{ code: '1006', cause: /cut without a close frame/ }])
  t.match(stage(dropped, 'listen').summary, /^dropped after/)
  t.notOk(stage(dropped, 'listen').details.some((line) => line.startsWith('note:')), 'a drop is no window to note')

  const noCode = await paths('/no-code')
  expect(t, noCode, 'listen', 'fail', 8)
  t.equal(stage(noCode, 'listen').details.length, 2, 'nor is a close')
  t.match(stage(noCode, 'listen').findings, [{ code: '1005', cause: /1005 "": closed without a status code/ }])

  const appCode = await paths('/app-code')
  expect(t, appCode, 'listen', 'fail', 8)
  t.match(stage(appCode, 'listen').findings, [{ code: '4001', cause: /4001 "room closed": a code outside the standard ones/, fix: /documentation/ }])

  const shutdown = await paths('/shutdown')
  expect(t, shutdown, 'listen', 'fail', 8)
  t.match(stage(shutdown, 'listen').findings, [{ code: '1001', cause: /going away/ }])
  t.match(stage(shutdown, 'listen').findings, [{ cause: /^the server closed the connection: 1001 "server shutting down; retry-after=732": / }], 'the reason, hint included, is quoted whole')
})
