/*
 * Server processes: spawned pinned to their CPU with a raised file-descriptor limit, spoken to
 * over IPC, and all killed (by pid) when the bench exits, however it exits.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { cpus as listCpus } from 'node:os'
import { fileURLToPath } from 'node:url'
import type { ReadyMessage, ServerConfig, ServerRequest } from './protocol.js'

/** Where the processes run: the server on one CPU, the load generator on another. */
export interface Placement {
  readonly cpus: number
  /** `taskset` and two CPUs or more: servers on `serverCpu`, the load generator on `clientCpu`. */
  readonly pinned: boolean
  readonly serverCpu: number
  readonly clientCpu: number
  /** bash runs the commands, to raise `ulimit -n` first. */
  readonly bash: boolean
}

export function detectPlacement (): Placement {
  // Every online CPU, not availableParallelism(): this process may already be pinned to one.
  const cpus = listCpus().length
  const works = (command: string, args: string[]): boolean => spawnSync(command, args, { stdio: 'ignore' }).status === 0
  const taskset = process.platform === 'linux' && works('taskset', ['-c', '0', 'true'])
  return { cpus, pinned: taskset && cpus >= 2, serverCpu: 0, clientCpu: 1, bash: works('bash', ['-c', 'true']) }
}

/** The command that runs `argv` with `ulimit -n` raised (to the hard limit when 65536 is refused) and pinned to `cpu`. */
export function wrapCommand (placement: Placement, cpu: number, argv: readonly string[]): [string, string[]] {
  const pinned = placement.pinned ? ['taskset', '-c', String(cpu), ...argv] : [...argv]
  if (!placement.bash) return [pinned[0]!, pinned.slice(1)]
  return ['bash', ['-c', 'ulimit -n 65536 2>/dev/null || ulimit -n hard 2>/dev/null; exec "$@"', 'ws-guard-bench', ...pinned]]
}

const live = new Set<ChildProcess>()

/** Kills every server still running (each by its pid). */
export function killChildren (): void {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  live.clear()
}

/** Kills `child` with the servers, on any exit of the bench (the Redis server of the fleet suite). */
export function trackChild (child: ChildProcess): void {
  live.add(child)
  child.once('exit', () => live.delete(child))
}

const serverScript = fileURLToPath(new URL('./server.js', import.meta.url))

type Pending = { resolve: (value: unknown) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }

/** One running bench server. */
export class ServerProcess {
  readonly config: ServerConfig
  readonly port: number
  readonly pid: number
  readonly #child: ChildProcess
  readonly #pending = new Map<number, Pending>()
  #nextId = 1

  private constructor (config: ServerConfig, child: ChildProcess, ready: ReadyMessage) {
    this.config = config
    this.#child = child
    this.port = ready.port
    this.pid = ready.pid
    child.on('message', (message: { id?: number, reply?: unknown, error?: string }) => {
      const pending = message.id === undefined ? undefined : this.#pending.get(message.id)
      if (pending === undefined) return
      this.#pending.delete(message.id!)
      clearTimeout(pending.timer)
      if (message.error !== undefined) pending.reject(new Error(`${config.name}: ${message.error}`))
      else pending.resolve(message.reply)
    })
    child.once('exit', (code, signal) => {
      live.delete(child)
      for (const pending of this.#pending.values()) {
        clearTimeout(pending.timer)
        pending.reject(new Error(`server ${config.name} exited (${signal ?? code})`))
      }
      this.#pending.clear()
    })
  }

  static async start (config: ServerConfig, placement: Placement, nodeArgs: readonly string[] = []): Promise<ServerProcess> {
    const [command, args] = wrapCommand(placement, placement.serverCpu, [process.execPath, '--expose-gc', ...nodeArgs, serverScript])
    const child = spawn(command, args, {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, WS_GUARD_BENCH_SERVER: JSON.stringify(config) }
    })
    live.add(child)
    const ready = await new Promise<ReadyMessage>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`server ${config.name} did not start within 30 s`)), 30_000)
      const onMessage = (message: ReadyMessage): void => {
        if (message.ready !== true) return
        cleanup()
        resolve(message)
      }
      const onExit = (code: number | null, signal: string | null): void => fail(new Error(`server ${config.name} exited on start (${signal ?? code})`))
      const fail = (err: Error): void => {
        cleanup()
        child.kill('SIGKILL')
        reject(err)
      }
      const cleanup = (): void => {
        clearTimeout(timer)
        child.off('message', onMessage)
        child.off('exit', onExit)
        child.off('error', fail)
      }
      child.on('message', onMessage)
      child.once('exit', onExit)
      child.once('error', fail)
    })
    return new ServerProcess(config, child, ready)
  }

  request<T> (op: ServerRequest['op'], extra: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
    const id = this.#nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(new Error(`server ${this.config.name}: no answer to ${op} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer })
      this.#child.send({ id, op, ...extra })
    })
  }

  /** Asks the server to exit (it writes its `--cpu-prof` profile then), and kills it if it does not within 10 s. */
  async stop (): Promise<void> {
    const child = this.#child
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await this.request('exit', {}, 10_000).catch(() => child.kill('SIGKILL'))
    await exited
    clearTimeout(timer)
  }
}
