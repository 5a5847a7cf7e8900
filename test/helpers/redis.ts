import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { createClient, type RedisClientType } from 'redis'
import type { Test } from 'tap'
import type { ControlMessage, StoreListener } from '../../lib/store/contract.js'
import { ioredisClient } from '../../lib/store/redis-ioredis.js'
import type { RedisStoreOptions } from '../../lib/store/redis.js'
import { requireBinary } from '../e2e/system.js'
import { freePort } from './raw.js'

/*
 * A real Redis for the store's tests: Debian's redis-server on its own port and directory,
 * nothing written to disk, stopped in teardown. Beside it, a client of each kind the store
 * supports, and a listener that records what a store tells.
 */

/** Debian's redis-server; `REDIS_SERVER_BIN` points elsewhere (or at a missing path, to see the skip). */
export const redisServerPath = process.env.REDIS_SERVER_BIN ?? '/usr/bin/redis-server'

export interface RunningRedis {
  readonly port: number
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string
  /** Stops the server (its data is gone: persistence is off). */
  stop: () => Promise<void>
  /** Starts it again on the same port, empty, as after a crash. */
  restart: () => Promise<void>
  /** One command over a fresh connection, for assertions that must not go through the client under test. */
  command: (...args: string[]) => Promise<string | number>
  /** How many keys start with `prefix`: 0 when a test left nothing behind. */
  keysUnder: (prefix: string) => Promise<number>
}

/**
 * Starts Debian's redis-server on a free port of 127.0.0.1, in a temporary directory, with
 * persistence off, and stops it in teardown. Returns `undefined` when the binary is missing:
 * the test is then skipped with a reason naming the Debian package, or failed under `CI=true`.
 *
 * @example
 * ```ts
 * const redis = await startRedis(t)
 * if (redis === undefined) return
 * const client = await createClient({ url: redis.url }).connect()
 * ```
 */
export async function startRedis (t: Test): Promise<RunningRedis | undefined> {
  if (!requireBinary(t, redisServerPath, 'redis-server')) return undefined
  const dir = await mkdtemp(join(tmpdir(), 'ws-guard-redis-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  // The free port is found by binding port 0, then handed to redis-server: another process can
  // take it in between, so a first start is tried on up to three ports.
  let port = 0
  let child: ChildProcess | undefined
  for (let attempt = 1; child === undefined; attempt++) {
    port = await freePort()
    child = await spawnServer(dir, port).catch((err: unknown) => {
      if (attempt === 3) throw err
      return undefined
    })
  }
  const stop = async (): Promise<void> => {
    const running = child
    child = undefined
    if (running !== undefined) await stopProcess(running)
  }
  t.teardown(stop)
  const command = async (...args: string[]): Promise<string | number> => await rawCommand(port, args)
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    restart: async () => {
      await stop()
      child = await spawnServer(dir, port)
    },
    command,
    keysUnder: async (prefix) => {
      // KEYS is fine on a test server; the pattern's glob characters are escaped.
      const pattern = prefix.replace(/[*?[\]\\]/g, '\\$&') + '*'
      return Number(await command('EVAL', "return #redis.call('KEYS', ARGV[1])", '0', pattern))
    }
  }
}

async function spawnServer (dir: string, port: number): Promise<ChildProcess> {
  const child = spawn(redisServerPath, [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'
  ], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const until = Date.now() + 5000
  while (Date.now() < until) {
    if (child.exitCode !== null) break
    if (await rawCommand(port, ['PING']).then((reply) => reply === 'PONG', () => false)) return child
    await sleep(20)
  }
  await stopProcess(child)
  throw new Error(`redis-server did not answer on 127.0.0.1:${port} within 5 s (exit ${String(child.exitCode)}): ${stderr}`)
}

async function stopProcess (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const killer = setTimeout(() => child.kill('SIGKILL'), 3000)
  await exited
  clearTimeout(killer)
}

/** Sends one command in RESP and reads a simple, error, integer or bulk string reply (what the helpers need). */
async function rawCommand (port: number, args: readonly string[]): Promise<string | number> {
  const socket = connect(port, '127.0.0.1')
  socket.setTimeout(2000)
  try {
    socket.write(`*${args.length}\r\n` + args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join(''))
    let reply = Buffer.alloc(0)
    return await new Promise((resolve, reject) => {
      socket.on('data', (chunk: Buffer) => {
        reply = Buffer.concat([reply, chunk])
        const end = reply.indexOf('\r\n')
        if (end === -1) return
        const line = reply.subarray(1, end).toString()
        const type = String.fromCharCode(reply[0] as number)
        if (type === '+') resolve(line)
        else if (type === ':') resolve(Number(line))
        else if (type === '$' && reply.length >= end + 2 + Number(line)) resolve(reply.subarray(end + 2, end + 2 + Number(line)).toString())
        else if (type !== '$') reject(new Error(`redis replied ${reply.subarray(0, end).toString()}`))
      })
      socket.on('timeout', () => reject(new Error(`no reply from redis on port ${port} within 2 s`)))
      socket.on('error', reject)
      socket.on('close', () => reject(new Error(`redis on port ${port} closed without a reply`)))
    })
  } finally {
    socket.destroy()
  }
}

/**
 * A connected node-redis client, destroyed in teardown (before the server stops: teardowns
 * run last-registered first).
 */
export async function nodeRedisClient (t: Test, redis: RunningRedis): Promise<RedisClientType> {
  const client: RedisClientType = createClient({ url: redis.url })
  // Outage tests stop the server: the client's reconnection errors are expected.
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => { if (client.isOpen) client.destroy() })
  return client
}

/** A connected ioredis client, disconnected in teardown. */
export async function ioredisClientFor (t: Test, redis: RunningRedis): Promise<Redis> {
  const client = new Redis(redis.port, '127.0.0.1', { lazyConnect: true })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => { client.disconnect() })
  return client
}

/** A connection of each client the store supports, by name, for tests run against both. */
export const clientFlavors = {
  'node-redis': async (t: Test, redis: RunningRedis): Promise<RedisStoreOptions['client']> => await nodeRedisClient(t, redis),
  ioredis: async (t: Test, redis: RunningRedis): Promise<RedisStoreOptions['client']> => ioredisClient(await ioredisClientFor(t, redis))
}

/** The number on a line of `INFO clients`: how many connections the server holds. */
export async function connectedClients (redis: RunningRedis): Promise<number> {
  const info = String(await redis.command('INFO', 'clients'))
  // Less the connection that asks.
  return Number(/connected_clients:(\d+)/.exec(info)?.[1]) - 1
}

/** Everything a store reported to its listener, in order. */
export interface Recorded {
  readonly messages: ControlMessage[]
  readonly events: string[]
  readonly listener: StoreListener
}

export function recordingListener (): Recorded {
  const messages: ControlMessage[] = []
  const events: string[] = []
  return {
    messages,
    events,
    listener: {
      message: (message) => { messages.push(message) },
      available: () => { events.push('available') },
      unavailable: (err) => { events.push(`unavailable: ${(err as Error).message}`) }
    }
  }
}
