import { accessSync, constants } from 'node:fs'
import { spawnSync } from 'node:child_process'
import type { Server, Socket } from 'node:net'
import type { Test } from 'tap'

/** What {@link requireBinary} needs of a test: a `Test`, or a stand-in that records the calls. */
export type Gate = Pick<Test, 'plan' | 'fail' | 'comment'>

export interface RequireBinaryOptions {
  /**
   * Arguments to run the binary with, to prove more than its presence (a Python module, for
   * example); a non-zero exit counts as missing.
   */
  probe?: readonly string[]
  /** Environment to read `CI` from. Default `process.env`. */
  env?: NodeJS.ProcessEnv
}

/**
 * Makes a test depend on a system binary. When the binary is there (and its probe, if any,
 * exits 0) it returns `true`. When it is missing, locally the test is skipped with a loud reason
 * naming the Debian package to install; under `CI=true` the test fails instead, since CI installs
 * the packages (.ci/run) and a skip there would hide a broken install step.
 *
 * @example
 * ```ts
 * test('browser', async (t) => {
 *   if (!requireBinary(t, '/usr/bin/chromium', 'chromium')) return
 * })
 * ```
 */
export function requireBinary (t: Gate, path: string, debianPackage: string, options: RequireBinaryOptions = {}): boolean {
  const problem = findProblem(path, options.probe)
  if (problem === undefined) return true
  const reason = `${problem}: install the Debian package ${debianPackage} (apt-get install -y ${debianPackage}); .ci/run installs it`
  // Loud: the reason goes to stderr too, so it shows even with a terse reporter.
  console.error(`\n*** ${reason}\n`)
  if ((options.env ?? process.env).CI === 'true') {
    t.fail(`CI=true and ${reason}`)
  } else {
    t.comment(`SKIPPED: ${reason}`)
    t.plan(0, reason)
  }
  return false
}

function findProblem (path: string, probe: readonly string[] | undefined): string | undefined {
  try {
    accessSync(path, constants.X_OK)
  } catch {
    return `${path} is missing or not executable`
  }
  if (probe === undefined) return undefined
  const result = spawnSync(path, probe, { timeout: 10_000, encoding: 'utf8' })
  if (result.status === 0) return undefined
  return `${path} ${probe.join(' ')} failed (${result.error?.message ?? `exit ${result.status}: ${result.stderr.trim().split('\n').pop()}`})`
}

/**
 * Bounds a server's close: connections still open `graceMs` after teardown starts are destroyed,
 * so a socket a failing test leaked (an upgrade nobody answered, a half-open peer) cannot hold
 * `app.close()` until the test runner's timeout. Call it after the server's own close teardown
 * is registered: teardowns run last-registered first, so this timer starts before the close.
 */
export function boundClose (t: Pick<Test, 'teardown'>, server: Server, graceMs = 2000): void {
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  t.teardown(() => {
    setTimeout(() => {
      for (const socket of sockets) socket.destroy()
    }, graceMs).unref()
  })
}
