/*
 * The fleet suite's Redis: Debian's redis-server on a free port of 127.0.0.1, in a temporary
 * directory, persistence off, pinned to the load generator's CPU (the servers under test keep
 * theirs), killed with the servers on any exit of the bench. Its CPU time is read from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { trackChild, wrapCommand, type Placement } from './children.js'

/** Debian's redis-server; `REDIS_SERVER_BIN` points elsewhere. */
export const redisServerPath = process.env.REDIS_SERVER_BIN ?? '/usr/bin/redis-server'

export interface BenchRedis {
  readonly url: string
  readonly pid: number
  /** CPU time of the whole redis-server process so far, µs. */
  cpuUs: () => number
  /** How the CPU time is read: `schedstat` (ns, every thread) or `stat` (10 ms ticks). */
  readonly cpuSource: 'schedstat' | 'stat'
  stop: () => Promise<void>
}

/** Whether the binary is there; without it the fleet suite is skipped. */
export function redisAvailable (): boolean {
  return existsSync(redisServerPath)
}

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise<void>((resolve) => server.close(() => resolve()))
  if (typeof address !== 'object' || address === null) throw new Error('no free port')
  return address.port
}

/** PING over a fresh connection: true on +PONG within a second. */
async function ping (port: number): Promise<boolean> {
  const socket = connect(port, '127.0.0.1')
  socket.setTimeout(1000)
  try {
    return await new Promise<boolean>((resolve) => {
      let reply = ''
      socket.on('connect', () => socket.write('*1\r\n$4\r\nPING\r\n'))
      socket.on('data', (chunk: Buffer) => {
        reply += chunk.toString('latin1')
        if (reply.includes('\r\n')) resolve(reply.startsWith('+PONG'))
      })
      socket.on('timeout', () => resolve(false))
      socket.on('error', () => resolve(false))
      socket.on('close', () => resolve(false))
    })
  } finally {
    socket.destroy()
  }
}

// /proc/<pid>/stat counts in clock ticks: 100 per second on every common Linux.
const usPerTick = 10_000

/** utime + stime of the process (fields 14 and 15), µs: 10 ms steps. */
function statCpuUs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * usPerTick
}

/** Time on CPU of every thread (the first field of each task's schedstat, ns), µs. */
function schedstatCpuUs (pid: number): number {
  let ns = 0
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'latin1').split(' ')[0])
    } catch {
      // A thread that ended meanwhile.
    }
  }
  return ns / 1000
}

export async function startRedis (placement: Placement): Promise<BenchRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'ws-guard-bench-redis-'))
  const removeDir = (): void => rmSync(dir, { recursive: true, force: true })
  process.once('exit', removeDir)
  const port = await freePort()
  const [command, args] = wrapCommand(placement, placement.clientCpu, [
    redisServerPath, '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'
  ])
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  trackChild(child)
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
      child.kill('SIGTERM')
      const killer = setTimeout(() => child.kill('SIGKILL'), 3000)
      await exited
      clearTimeout(killer)
    }
    removeDir()
  }
  for (const until = Date.now() + 10_000; Date.now() < until && child.exitCode === null;) {
    if (await ping(port)) {
      // bash and taskset exec into redis-server: the child's pid is Redis's own.
      const pid = child.pid!
      const cpuSource = existsSync(`/proc/${pid}/task/${pid}/schedstat`) ? 'schedstat' : 'stat'
      return {
        url: `redis://127.0.0.1:${port}`,
        pid,
        cpuUs: () => cpuSource === 'schedstat' ? schedstatCpuUs(pid) : statCpuUs(pid),
        cpuSource,
        stop
      }
    }
    await sleep(20)
  }
  await stop()
  throw new Error(`redis-server did not answer on 127.0.0.1:${port} within 10 s (exit ${String(child.exitCode)}): ${stderr.trim()}`)
}
