import { EventEmitter } from 'node:events'
import { writeFileSync, mkdtempSync } from 'node:fs'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'tap'
import * as errors from '../lib/errors.js'
import { parseDoctorArgs } from '../lib/doctor/args.js'
import { explainGuardCode } from '../lib/doctor/codes.js'
import { closePayload, encodeFrame, opcodes, parseClose, parseFrame } from '../lib/doctor/frames.js'
import { bodyComplete, bodyOf, decodeChunked, headDecided, parseHead, type ResponseHead } from '../lib/doctor/http.js'
import { cliHelp, exitCodes, runCli, runDoctor } from '../lib/doctor/index.js'
import { redact } from '../lib/doctor/redact.js'
import type { DoctorIo } from '../lib/doctor/types.js'
import type { Target } from '../lib/doctor/url.js'

function capture (env: Record<string, string> = {}): DoctorIo & { out: () => string, err: () => string } {
  const out: string[] = []
  const err: string[] = []
  return {
    stdout: { write: (text: string) => out.push(text) },
    stderr: { write: (text: string) => err.push(text) },
    env,
    out: () => out.join(''),
    err: () => err.join('')
  }
}

const target: Target = { url: new URL('ws://doctor.invalid/ws'), secure: false, host: 'doctor.invalid', port: 80, path: '/ws' }

test('arguments: defaults', async (t) => {
  const parsed = parseDoctorArgs(['ws://127.0.0.1/ws'], {})
  t.same(parsed, {
    kind: 'run',
    options: {
      url: 'ws://127.0.0.1/ws',
      token: undefined,
      tokenIn: 'header',
      origin: undefined,
      protocols: [],
      ca: undefined,
      insecure: false,
      timeout: 5000,
      listen: 3000,
      json: false
    }
  })
})

test('arguments: every option', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'doctor-args-'))
  const pem = join(dir, 'ca.pem')
  // Any valid certificate will do: the test CA of the TLS tests is made with openssl there.
  const { execFileSync } = await import('node:child_process')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', pem, '-days', '1', '-subj', '/CN=args'], { stdio: 'ignore' })
  const parsed = parseDoctorArgs([
    'wss://example.test/chat', '--token-env', 'TOKEN', '--token-in', 'protocol', '--origin', 'https://app.example',
    '--protocol', 'chat.v1', '--protocol', 'chat.v2', '--ca', pem, '--insecure', '--timeout', '1500', '--listen', '0', '--json'
  ], { TOKEN: 'secret-token-value' })
  t.equal(parsed.kind, 'run')
  if (parsed.kind !== 'run') return
  t.match(parsed.options, {
    url: 'wss://example.test/chat',
    token: 'secret-token-value',
    tokenIn: 'protocol',
    origin: 'https://app.example',
    protocols: ['chat.v1', 'chat.v2'],
    ca: /-----BEGIN CERTIFICATE-----/,
    insecure: true,
    timeout: 1500,
    listen: 0,
    json: true
  })
  t.same(parseDoctorArgs(['--help'], {}), { kind: 'help' })
  t.same(parseDoctorArgs(['ws://x', '-h'], {}), { kind: 'help' })

  const notPem = join(dir, 'not.pem')
  writeFileSync(notPem, 'hello')
  const usage: Array<[string[], Record<string, string>, RegExp]> = [
    [[], {}, /expected one ws:\/\/ or wss:\/\/ URL, got 0 arguments/],
    [['ws://a', 'ws://b'], {}, /got 2 arguments/],
    [['ws://a', '--bogus'], {}, /Unknown option '--bogus'/],
    [['ws://a', '--token'], {}, /argument missing/],
    [['ws://a', '--token', 'a', '--token-env', 'T'], { T: 'b' }, /not both/],
    [['ws://a', '--token-env', 'T'], {}, /environment variable T is unset, empty/],
    [['ws://a', '--token-env', 'T'], { T: '' }, /environment variable T is unset, empty/],
    [['ws://a', '--token', 'has space'], {}, /--token contains spaces or control characters$/],
    [['ws://a', '--token', 't', '--token-in', 'cookie'], {}, /--token-in must be one of header, protocol, query, got cookie/],
    [['ws://a', '--token-in', 'query'], {}, /--token-in needs --token or --token-env/],
    [['ws://a', '--origin', 'https://a\r\nX-Injected: 1'], {}, /--origin contains spaces or control characters/],
    [['ws://a', '--protocol', 'a b'], {}, /--protocol contains spaces/],
    [['ws://a', '--timeout', '0'], {}, /--timeout must be a whole number of milliseconds >= 1, got 0/],
    [['ws://a', '--listen=-5'], {}, /--listen must be a whole number of milliseconds >= 0, got -5/],
    [['ws://a', '--listen', '1e3'], {}, /--listen must be a whole number/],
    [['ws://a', '--ca', join(dir, 'missing.pem')], {}, /cannot read --ca .*missing\.pem: ENOENT/],
    [['ws://a', '--ca', notPem], {}, /--ca .*not\.pem holds no PEM certificate/]
  ]
  for (const [argv, env, message] of usage) {
    const parsed = parseDoctorArgs(argv, env)
    t.equal(parsed.kind, 'error', argv.join(' '))
    t.match(parsed, { message }, argv.join(' '))
  }
  // The token never appears in a usage error.
  const secretError = parseDoctorArgs(['ws://a', '--token', 'sup3r secret'], {})
  t.notMatch(JSON.stringify(secretError), /sup3r/)
})

test('runDoctor: help, usage errors, and process.env by default', async (t) => {
  const help = capture()
  t.equal(await runDoctor(['--help'], help), exitCodes.ok)
  t.match(help.out(), /Usage: fastify-ws-guard doctor <ws:\/\/ or wss:\/\/ URL>/)
  t.match(help.out(), /7 {2}upgrade stage failed/)

  const bad = capture()
  t.equal(await runDoctor(['ws://a', '--timeout', 'soon'], bad), exitCodes.usage)
  t.match(bad.err(), /^fastify-ws-guard doctor: --timeout must be a whole number/)
  t.equal(bad.out(), '')

  const variable = 'FASTIFY_WS_GUARD_DOCTOR_TEST_UNSET'
  const io = { stdout: capture().stdout, stderr: capture().stderr }
  t.equal(await runDoctor(['ws://a', '--token-env', variable], io), exitCodes.usage)
})

test('runCli dispatches doctor and explains itself', async (t) => {
  const help = capture()
  t.equal(await runCli(['--help'], help), 0)
  t.equal(help.out(), cliHelp)
  for (const word of ['-h', 'help']) t.equal(await runCli([word], capture()), 0)

  const none = capture()
  t.equal(await runCli([], none), 2)
  t.match(none.err(), /^a command is required\n\nUsage: fastify-ws-guard <command>/)

  const unknown = capture()
  t.equal(await runCli(['doktor'], unknown), 2)
  t.match(unknown.err(), /^unknown command: doktor/)

  const doctor = capture()
  t.equal(await runCli(['doctor', '--help'], doctor), 0)
  t.match(doctor.out(), /Usage: fastify-ws-guard doctor/)
})

test('the bin runs the CLI on process.argv and exits with its code once stdout is flushed', async (t) => {
  const calls: Array<readonly string[]> = []
  let exited: (code: number) => void = () => {}
  const exit = new Promise<number>((resolve) => { exited = resolve })
  t.intercept(process, 'argv', { value: ['node', 'fastify-ws-guard', 'doctor', 'ws://127.0.0.1:9/'] })
  t.intercept(process, 'exit', { value: (code: number) => exited(code) })
  // The bin sets exitCode too (stdout may be a closed pipe): keep this process's own.
  const exitCode = process.exitCode
  t.teardown(() => { process.exitCode = exitCode })
  await t.mockImport('../lib/doctor/cli.js', {
    '../lib/doctor/index.js': {
      runCli: async (argv: readonly string[], io: DoctorIo) => {
        calls.push(argv)
        t.equal(io, process)
        return 7
      }
    }
  })
  t.equal(await exit, 7)
  t.equal(process.exitCode, 7)
  t.same(calls, [['doctor', 'ws://127.0.0.1:9/']])
})

test('every FST_WS_GUARD_* code of lib/errors.ts is explained', async (t) => {
  const codes = Object.values(errors)
    .filter((value) => typeof value === 'function')
    .map((ErrorClass) => new (ErrorClass as unknown as new () => { code: string })().code)
    .filter((code) => code.startsWith('FST_WS_GUARD_'))
  t.ok(codes.length >= 20, `${codes.length} codes`)
  t.same(codes.filter((code) => explainGuardCode(code) === undefined), [])
})

test('frames: parse what servers send', async (t) => {
  t.equal(parseFrame(Buffer.from([0x89])), undefined, 'one byte')
  t.same(parseFrame(Buffer.from([0x89, 0x02, 0x68, 0x69])), { opcode: opcodes.ping, payload: Buffer.from('hi'), size: 4 })
  t.equal(parseFrame(Buffer.from([0x89, 0x02, 0x68])), undefined, 'payload incomplete')

  const medium = Buffer.alloc(300, 0x61)
  const mediumFrame = Buffer.concat([Buffer.from([0x81, 126, 0x01, 0x2c]), medium])
  t.equal(parseFrame(mediumFrame.subarray(0, 3)), undefined, '16-bit length incomplete')
  t.same(parseFrame(mediumFrame), { opcode: opcodes.text, payload: medium, size: 304 })

  const large = Buffer.alloc(70000, 0x62)
  const header = Buffer.alloc(10)
  header[0] = 0x82
  header[1] = 127
  header.writeBigUInt64BE(70000n, 2)
  const largeFrame = Buffer.concat([header, large])
  t.equal(parseFrame(largeFrame.subarray(0, 9)), undefined, '64-bit length incomplete')
  t.same(parseFrame(largeFrame), { opcode: opcodes.binary, payload: large, size: 70010 })

  // Masked frames (clients send them; a broken server might): unmasked on read.
  const masked = encodeFrame(opcodes.pong, Buffer.from('probe'))
  t.equal(masked[0], 0x8a)
  t.equal(masked[1], 0x80 | 5)
  t.same(parseFrame(masked), { opcode: opcodes.pong, payload: Buffer.from('probe'), size: 11 })
  t.equal(parseFrame(masked.subarray(0, 8)), undefined, 'masked payload incomplete')
  t.equal(encodeFrame(opcodes.ping, Buffer.alloc(200)).length, 6 + 125, 'control payloads are capped at 125 bytes')
})

test('frames: close payloads', async (t) => {
  t.same(parseClose(closePayload(4401, 'token expired')), { code: 4401, reason: 'token expired' })
  t.same(parseClose(Buffer.alloc(0)), { code: 1005, reason: '' })
})

test('http: response heads', async (t) => {
  const wire = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-A: 1\r\nx-a: 2\r\nbroken line\r\n: no name\r\n\r\nrest'
  const head = parseHead(Buffer.from(wire))
  t.same(head, {
    statusLine: 'HTTP/1.1 101 Switching Protocols',
    status: 101,
    headers: { upgrade: 'websocket', 'x-a': '1, 2' },
    size: wire.length - 'rest'.length
  })
  t.match(parseHead(Buffer.from('HTTP/1.0 200\r\n\r\n')), { status: 200, statusLine: 'HTTP/1.0 200' }, 'no reason phrase')
  t.equal(parseHead(Buffer.from('HTTP/1.1 200 OK\r\n')), undefined, 'incomplete')
  t.equal(parseHead(Buffer.from('HTTP/1.1 two hundred\r\n\r\n')), undefined, 'not a status line')
  t.equal(parseHead(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nX: '), Buffer.alloc(70 * 1024, 0x61), Buffer.from('\r\n\r\n')])), undefined, 'over 64 KiB')

  t.equal(headDecided(Buffer.from('HTTP/1.1 200')), false)
  t.equal(headDecided(Buffer.from('HTT')), false)
  t.equal(headDecided(Buffer.from('SSH-2.0')), true)
  t.equal(headDecided(Buffer.from('HTTP/1.1 200 OK\r\n\r\n')), true)
  t.equal(headDecided(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\n'), Buffer.alloc(65 * 1024, 0x61)])), true)
})

test('http: bodies', async (t) => {
  const headOf = (headers: Record<string, string>): ResponseHead => ({ statusLine: 'HTTP/1.1 400 Bad Request', status: 400, headers, size: 0 })
  const sized = headOf({ 'content-length': '5' })
  t.equal(bodyComplete(sized, Buffer.from('hell')), false)
  t.equal(bodyComplete(sized, Buffer.from('hello')), true)
  const untilClose = headOf({})
  t.equal(bodyComplete(untilClose, Buffer.from('anything')), false)
  t.equal(bodyComplete(untilClose, Buffer.alloc(8 * 1024)), true, 'bounded')
  t.equal(bodyOf(untilClose, Buffer.alloc(10 * 1024)).length, 8 * 1024)

  const chunked = headOf({ 'transfer-encoding': 'chunked' })
  const wire = Buffer.from('5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n')
  t.equal(bodyComplete(chunked, wire), true)
  t.equal(bodyOf(chunked, wire).toString(), 'hello world')
  t.same(decodeChunked(Buffer.from('5\r\nhel')), { body: Buffer.from('hel'), complete: false })
  t.same(decodeChunked(Buffer.from('5\r\nhello\r\n')), { body: Buffer.from('hello'), complete: false })
  t.same(decodeChunked(Buffer.from('5')), { body: Buffer.alloc(0), complete: false })
  t.same(decodeChunked(Buffer.from('zz\r\n')), { body: Buffer.alloc(0), complete: true }, 'garbage ends the body')
})

test('redact: the token and credential-like query parameters', async (t) => {
  t.equal(redact('GET /ws?access_token=abc&room=1 HTTP/1.1', undefined), 'GET /ws?access_token=<redacted>&room=1 HTTP/1.1')
  t.equal(redact('ws://h/?x=1&token=abc#f', undefined), 'ws://h/?x=1&token=<redacted>#f')
  t.equal(redact('ws://alice:s3cret@h:8080/ws and wss://bob@h/', undefined), 'ws://alice:<redacted>@h:8080/ws and wss://bob@h/')
  t.equal(redact('Authorization: Bearer eyJabc.def; bearer.eyJabc.def', 'eyJabc.def'), 'Authorization: Bearer <redacted>; bearer.<redacted>')
})

test('dns: a lookup that never answers times out, other errors are named', async (t) => {
  const hanging = await t.mockImport<typeof import('../lib/doctor/dns.js')>('../lib/doctor/dns.js', {
    'node:dns/promises': { lookup: async () => await new Promise(() => {}) }
  })
  const slow = await hanging.resolveHost(target, 50)
  t.equal(slow.result.verdict, 'fail')
  t.match(slow.result.findings, [{ code: 'ETIMEOUT', cause: /no answer from the resolver in 50 ms/ }])
  t.equal(slow.addresses, undefined)

  const failing = await t.mockImport<typeof import('../lib/doctor/dns.js')>('../lib/doctor/dns.js', {
    'node:dns/promises': { lookup: async () => { throw Object.assign(new Error('getaddrinfo EAI_FAIL'), { code: 'EAI_FAIL' }) } }
  })
  const failed = await failing.resolveHost(target, 1000)
  t.match(failed.result, { verdict: 'fail', summary: 'doctor.invalid did not resolve (EAI_FAIL)' })
  t.match(failed.result.findings, [{ code: 'EAI_FAIL', cause: /the lookup failed/ }])

  const again = await t.mockImport<typeof import('../lib/doctor/dns.js')>('../lib/doctor/dns.js', {
    'node:dns/promises': { lookup: async () => { throw Object.assign(new Error('getaddrinfo EAI_AGAIN'), { code: 'EAI_AGAIN' }) } }
  })
  t.match((await again.resolveHost(target, 1000)).result.findings, [{ code: 'EAI_AGAIN', cause: /could not answer for now/ }])
})

test('tcp: an error without a known explanation is still named', async (t) => {
  // EACCES (a local firewall rule, a sandbox) cannot be produced on loopback here.
  const tcp = await t.mockImport<typeof import('../lib/doctor/tcp.js')>('../lib/doctor/tcp.js', {
    'node:net': {
      ...net,
      connect: () => {
        const socket = new EventEmitter() as EventEmitter & { destroy: () => void }
        socket.destroy = () => {}
        setImmediate(() => socket.emit('error', Object.assign(new Error('connect EACCES'), { code: 'EACCES' })))
        return socket
      }
    }
  })
  const outcome = await tcp.connectTcp([{ address: '127.0.0.1', family: 4 }], 9, 1000)
  t.match(outcome.result, { verdict: 'fail', summary: 'could not connect to 127.0.0.1:9 (EACCES)' })
  t.match(outcome.result.findings, [{ code: 'EACCES', cause: 'connecting to 127.0.0.1:9 failed' }])
})
