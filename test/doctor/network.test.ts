import { spawn } from 'node:child_process'
import { EventEmitter, once } from 'node:events'
import * as net from 'node:net'
import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { connectTcp } from '../../lib/doctor/tcp.js'
import type { Target } from '../../lib/doctor/url.js'
import { doctor, expect, stage, wsServer } from '../helpers/doctor.js'
import { freePort } from '../helpers/raw.js'

/*
 * The url, dns and tcp stages: nothing listening, a name that cannot resolve, a port that
 * drops connection attempts, IPv6, bad URLs; and the lookup and connect failures loopback
 * cannot produce, with node:dns and node:net mocked.
 */

test('nothing listening: tcp fails, refused (exit 5)', async (t) => {
  const port = await freePort()
  const run = await doctor([`ws://127.0.0.1:${port}/ws`, '--timeout', '1000'])
  expect(t, run, 'tcp', 'fail', 5)
  t.equal(run.report.failedStage, 'tcp')
  t.match(stage(run, 'tcp').findings, [{ code: 'ECONNREFUSED', cause: `nothing is listening on 127.0.0.1:${port}`, fix: new RegExp(`ss -ltnp \\| grep :${port}`) }])
  t.same(run.report.stages.map((s) => s.verdict), ['ok', 'skip', 'fail', 'skip', 'skip', 'skip'])
  t.match(stage(run, 'dns').summary, '127.0.0.1 is an IP address')
  t.equal(stage(run, 'upgrade').summary, 'not reached')
})

test('a .invalid name: dns fails (exit 4)', async (t) => {
  const run = await doctor(['ws://doctor-test.invalid/ws', '--timeout', '3000'])
  expect(t, run, 'dns', 'fail', 4)
  t.match(stage(run, 'dns').summary, /^doctor-test\.invalid did not resolve \((ENOTFOUND|EAI_AGAIN)\)$/)
  t.match(stage(run, 'url').data, { port: 80, secure: false })
  t.equal(stage(run, 'tcp').verdict, 'skip')

  const secure = await doctor(['wss://doctor-test.invalid/ws', '--timeout', '3000'])
  expect(t, secure, 'dns', 'fail', 4)
  t.match(stage(secure, 'url').data, { port: 443, secure: true })
})

test('a port that drops connection attempts: tcp times out (exit 5)', async (t) => {
  // A listener whose process is stopped: the kernel queues `backlog` connections, then
  // drops SYNs, as a firewall that drops packets does.
  const child = spawn(process.execPath, ['-e', `
    const server = require('node:net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
      process.stdout.write(server.address().port + '\\n')
    })`], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const [chunk] = await once(child.stdout!, 'data') as [Buffer]
  const port = Number(chunk.toString().trim())
  process.kill(child.pid!, 'SIGSTOP')
  await sleep(50)
  const fillers: Socket[] = []
  t.teardown(() => { for (const socket of fillers) socket.destroy() })
  for (let i = 0; i < 4; i++) fillers.push(connect({ port, host: '127.0.0.1' }).on('error', () => {}))
  await sleep(100)
  const run = await doctor([`ws://127.0.0.1:${port}/`, '--timeout', '400'])
  expect(t, run, 'tcp', 'fail', 5)
  t.match(stage(run, 'tcp').findings, [{ code: 'ETIMEDOUT', cause: /no answer from 127\.0\.0\.1:\d+ in 400 ms: a firewall/ }])
})

test('IPv6: a bracketed literal, and addresses tried in turn', async (t) => {
  const port = await wsServer(t, {}, () => {}, '::1')
  const run = await doctor([`ws://[::1]:${port}/`, '--listen', '0'])
  expect(t, run, 'upgrade', 'ok', 0)
  t.equal(stage(run, 'tcp').summary, `connected to [::1]:${port}`)
  t.match(stage(run, 'upgrade').details, ['> GET / HTTP/1.1', `> Host: [::1]:${port}`])
  t.equal(stage(run, 'listen').verdict, 'skip')

  // A name resolving to ::1 then 127.0.0.1, served on 127.0.0.1 only.
  const v4 = await wsServer(t, {})
  const tcp = await connectTcp([{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }], v4, 1000)
  tcp.socket!.destroy()
  t.equal(tcp.result.verdict, 'ok')
  t.equal(tcp.result.summary, `connected to 127.0.0.1:${v4}`)
  t.same(tcp.result.details, [`[::1]:${v4}: ECONNREFUSED (tried first)`])

  const none = await connectTcp([{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }], await freePort(), 1000)
  t.equal(none.result.verdict, 'fail')
  t.match(none.result.details, [/^127\.0\.0\.1:\d+: ECONNREFUSED$/])
})

test('url: http:// is converted with a warning; bad URLs fail (exit 3)', async (t) => {
  const port = await wsServer(t, {})
  const http = await doctor([`http://127.0.0.1:${port}/`, '--listen', '0'])
  expect(t, http, 'url', 'warn', 0)
  t.match(stage(http, 'url').findings, [{ verdict: 'warn', cause: /^http:\/\/ is an HTTP URL; a WebSocket URL starts with ws:\/\//, fix: `write ws://127.0.0.1:${port}/` }])
  t.equal(stage(http, 'upgrade').verdict, 'ok')

  const https = await doctor(['https://doctor-test.invalid/x', '--timeout', '3000'])
  t.match(stage(https, 'url').findings, [{ fix: 'write wss://doctor-test.invalid/x' }])

  for (const [url, summary] of [
    ['not a url', 'not a URL: not a url'],
    ['ftp://127.0.0.1/', 'ftp:// is not a WebSocket scheme'],
    ['ws://127.0.0.1:8080/ws#room', 'the URL has a fragment (#room)'],
    ['ws://127.0.0.1:0/', 'port 0 is no port to connect to']
  ]) {
    const run = await doctor([url!])
    expect(t, run, 'url', 'fail', 3)
    t.equal(stage(run, 'url').summary, summary)
    t.same(run.report.stages.slice(1).map((s) => s.verdict), ['skip', 'skip', 'skip', 'skip', 'skip'])
  }
})

test('a token pasted in the URL is redacted too', async (t) => {
  const run = await doctor(['ws://127.0.0.1:0/?access_token=pasted-secret'])
  t.equal(run.report.url, 'ws://127.0.0.1:0/?access_token=<redacted>')
  t.notOk(run.json.includes('pasted-secret'))
})

const target: Target = { url: new URL('ws://doctor.invalid/ws'), secure: false, host: 'doctor.invalid', port: 80, path: '/ws' }

test('dns: a lookup that never answers times out, other errors are named', async (t) => {
  const hanging = await t.mockImport<typeof import('../../lib/doctor/dns.js')>('../../lib/doctor/dns.js', {
    'node:dns/promises': { lookup: async () => await new Promise(() => {}) }
  })
  const slow = await hanging.resolveHost(target, 50)
  t.equal(slow.result.verdict, 'fail')
  t.match(slow.result.findings, [{ code: 'ETIMEOUT', cause: /no answer from the resolver in 50 ms/ }])
  t.equal(slow.addresses, undefined)

  const failing = await t.mockImport<typeof import('../../lib/doctor/dns.js')>('../../lib/doctor/dns.js', {
    'node:dns/promises': { lookup: async () => { throw Object.assign(new Error('getaddrinfo EAI_FAIL'), { code: 'EAI_FAIL' }) } }
  })
  const failed = await failing.resolveHost(target, 1000)
  t.match(failed.result, { verdict: 'fail', summary: 'doctor.invalid did not resolve (EAI_FAIL)' })
  t.match(failed.result.findings, [{ code: 'EAI_FAIL', cause: /the lookup failed/ }])

  const again = await t.mockImport<typeof import('../../lib/doctor/dns.js')>('../../lib/doctor/dns.js', {
    'node:dns/promises': { lookup: async () => { throw Object.assign(new Error('getaddrinfo EAI_AGAIN'), { code: 'EAI_AGAIN' }) } }
  })
  t.match((await again.resolveHost(target, 1000)).result.findings, [{ code: 'EAI_AGAIN', cause: /could not answer for now/ }])
})

test('tcp: an error without a known explanation is still named', async (t) => {
  // EACCES (a local firewall rule, a sandbox) cannot be produced on loopback here.
  const tcp = await t.mockImport<typeof import('../../lib/doctor/tcp.js')>('../../lib/doctor/tcp.js', {
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
