import { execFile } from 'node:child_process'
import { readdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { test } from 'tap'

/*
 * The package as users get it: `npm pack`, installed into an empty project with nothing but
 * its declared dependencies (and the fastify peer), every entry point imported, the CLI run
 * from the install, and a consumer type-checked under the strictest settings users have.
 */

const run = promisify(execFile)
const root = resolve(import.meta.dirname, '../..')

const consumer = `import Fastify from 'fastify'
import wsGuard, { TokenInvalidError, type GuardErrorCode, type WsGuardOptions } from 'fastify-ws-guard'
import { bearerProtocols, connect } from 'fastify-ws-guard/client'
import { RedisStore, type RedisStoreOptions } from 'fastify-ws-guard/redis'

// A fleet store takes a connected client; without one, the memory default counts.
declare const redisOptions: RedisStoreOptions | undefined
const options: WsGuardOptions = {
  origins: ['https://app.example.com'],
  // Unset variables are undefined: exactOptionalPropertyTypes must accept them.
  auth: { secret: process.env.WS_SECRET, audience: process.env.WS_AUDIENCE },
  maxConnectionsPerUser: undefined,
  store: redisOptions === undefined ? undefined : new RedisStore(redisOptions)
}
const app = Fastify()
await app.register(wsGuard, options)
app.wsRoute('/chat', (socket, request) => { socket.send(String(request.wsUser?.sub)) })
const code: GuardErrorCode = new TokenInvalidError('x').code
console.log(code, bearerProtocols('a.b.c', 'chat.v1'), typeof connect, await app.wsGuard.count({ sub: 'alice' }))
`

const tsconfig = {
  compilerOptions: {
    strict: true,
    exactOptionalPropertyTypes: true,
    lib: ['ES2023'],
    types: ['node'],
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    target: 'ES2022',
    noEmit: true,
    skipLibCheck: false
  },
  files: ['consumer.ts']
}

test('the packed tarball installs, imports, runs and type-checks on its own', async (t) => {
  const dir = t.testdir({ 'package.json': JSON.stringify({ name: 'consumer', private: true, type: 'module' }) })
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: root })
  const [packed] = JSON.parse(stdout) as Array<{ filename: string, files: Array<{ path: string }> }>
  const files = packed!.files.map((file) => file.path)
  for (const needed of ['dist/index.js', 'dist/index.d.ts', 'dist/client.js', 'dist/client.d.ts', 'dist/testing.js', 'dist/testing.d.ts', 'dist/redis.js', 'dist/redis.d.ts', 'dist/lib/doctor/cli.js', 'README.md', 'CHANGELOG.md', 'package.json']) {
    t.ok(files.includes(needed), `the tarball holds ${needed}`)
  }
  t.same(files.filter((file) => /^dist\/(example|bench|fuzz|test)\/|\.map$|^(lib|test|bench|example)\/|\.ts$/.test(file) && !file.endsWith('.d.ts')), [], 'and nothing users do not need')

  await run('npm', ['install', '--no-audit', '--no-fund', '--no-package-lock', join(dir, packed!.filename), 'fastify@5'], { cwd: dir })
  const installed = readdirSync(join(dir, 'node_modules'))
  t.ok(installed.includes('fastify-ws-guard') && installed.includes('jose'), 'installed with its dependencies')

  const imported = await run(process.execPath, ['--input-type=module', '-e', `
    const main = await import('fastify-ws-guard')
    const client = await import('fastify-ws-guard/client')
    const testing = await import('fastify-ws-guard/testing')
    const redis = await import('fastify-ws-guard/redis')
    console.log(JSON.stringify({ main: Object.keys(main).sort(), client: Object.keys(client), testing: Object.keys(testing), redis: Object.keys(redis).sort() }))
  `], { cwd: dir })
  const entries = JSON.parse(imported.stdout) as { main: string[], client: string[], testing: string[], redis: string[] }
  for (const name of ['default', 'fastifyWsGuard', 'MemoryStore', 'channels', 'requestSerializer', 'redactQueryTokens', 'TokenInvalidError']) {
    t.ok(entries.main.includes(name), `fastify-ws-guard exports ${name}`)
  }
  t.same(entries.client.sort(), ['bearerProtocols', 'connect'], 'fastify-ws-guard/client exports bearerProtocols and connect')
  t.ok(entries.redis.includes('RedisStore') && entries.redis.includes('ioredisClient'), 'fastify-ws-guard/redis exports RedisStore and ioredisClient, without the redis package installed')
  t.same(entries.testing, ['injectGuarded'], 'fastify-ws-guard/testing exports injectGuarded')

  const cli = join(dir, 'node_modules/.bin/fastify-ws-guard')
  t.match((await run(cli, ['--help'])).stdout, /fastify-ws-guard <command>/, 'the CLI runs from the install')
  const minted = await run(cli, ['token', '--secret-env', 'WS_SECRET', '--sub', 'alice'], { env: { ...process.env, WS_SECRET: 'package-test-secret-0123456789-abcdef' } })
  t.match(minted.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/, 'and mints a token')

  // The type check: this checkout's TypeScript; @types/node comes with the package's @types/ws.
  t.ok(readdirSync(join(dir, 'node_modules/@types')).includes('node'), '@types/node is installed')
  writeFileSync(join(dir, 'consumer.ts'), consumer)
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig))
  const tsc = join(root, 'node_modules/typescript/bin/tsc')
  const checked = await run(process.execPath, [tsc, '-p', dir]).then(() => '', (err: { stdout: string }) => err.stdout)
  t.equal(checked, '', 'a consumer type-checks under strict, exactOptionalPropertyTypes, lib ES2023 and @types/node')
  // The check can fail: an option of the wrong type is an error.
  writeFileSync(join(dir, 'consumer.ts'), consumer.replace('maxConnectionsPerUser: undefined', "maxConnectionsPerUser: 'three'"))
  const wrong = await run(process.execPath, [tsc, '-p', dir]).then(() => '', (err: { stdout: string }) => err.stdout)
  t.match(wrong, /consumer\.ts\(12,3\): error TS2322/, 'and a wrong option is caught')
})
