import { writeFileSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'tap'
import { parseDoctorArgs } from '../../lib/doctor/args.js'
import { cliHelp, exitCodes, runCli, runDoctor } from '../../lib/doctor/index.js'
import type { DoctorIo } from '../../lib/doctor/types.js'
import { capture } from '../helpers/doctor.js'

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
    [['ws://a', '--bogus'], {}, /^unknown option --bogus$/],
    [['ws://a', '--token'], {}, /^--token needs a value$/],
    [['ws://a', '--tokn', 't'], {}, /^unknown option --tokn; did you mean --token\?$/],
    [['ws://a', '--timout=9', '--json'], {}, /^unknown option --timout; did you mean --timeout\?$/],
    [['ws://a', '--insecure', '--protocols', 'chat'], {}, /^unknown option --protocols; did you mean --protocol\?$/],
    [['ws://a', '-x'], {}, /^unknown option -x$/],
    [['ws://a', '--origin', 'https://a', '--timeout'], {}, /^--timeout needs a value$/],
    [['ws://a', '--token', '--json'], {}, /^--token needs a value$/],
    [['ws://a', '--json=yes'], {}, /^--json takes no value$/],
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

  const typo = capture()
  t.equal(await runDoctor(['ws://a', '--tokn', 'secret-value'], typo), exitCodes.usage)
  t.match(typo.err(), /^fastify-ws-guard doctor: unknown option --tokn; did you mean --token\?\n\nUsage: fastify-ws-guard doctor /)
  t.notMatch(typo.err(), /secret-value/)
  const noValue = capture()
  t.equal(await runDoctor(['ws://a', '--timeout'], noValue), exitCodes.usage)
  t.match(noValue.err(), /^fastify-ws-guard doctor: --timeout needs a value\n\nUsage: /)

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
  await t.mockImport('../../lib/doctor/cli.js', {
    '../../lib/doctor/index.js': {
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
