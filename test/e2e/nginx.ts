import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { freePort } from '../helpers/raw.js'
import { requireBinary } from './system.js'

/** Debian's nginx; `NGINX_BIN` points elsewhere (or at a missing path, to see the skip). */
export const nginxPath = process.env.NGINX_BIN ?? '/usr/sbin/nginx'

export interface NginxOptions {
  /** Directives inside `server {}`, after its `listen`: usually one or more `location` blocks. */
  server: string
  /** Extra directives inside `http {}` (upstream, map...). */
  http?: string
}

export interface RunningNginx {
  readonly port: number
  /** nginx's prefix: config, pid, logs and temp directories all live here. */
  readonly prefix: string
  /** `ws://127.0.0.1:<port><path>`, or another scheme. */
  url: (path: string, scheme?: string) => string
  errorLog: () => Promise<string>
}

export interface WebSocketLocationOptions {
  /**
   * Forward the hop-by-hop upgrade headers (`proxy_set_header Upgrade/Connection`). Default
   * `true`; `false` is the classic broken config, where the app never sees the upgrade.
   */
  upgradeHeaders?: boolean
  /** `proxy_read_timeout`, e.g. `'2s'`: how long nginx lets a proxied connection idle. */
  readTimeout?: string
}

/** A `location` that proxies `path` to the app on 127.0.0.1:`upstreamPort`. */
export function websocketLocation (path: string, upstreamPort: number, options: WebSocketLocationOptions = {}): string {
  const lines = [
    `proxy_pass http://127.0.0.1:${upstreamPort};`,
    'proxy_http_version 1.1;',
    'proxy_set_header Host $http_host;'
  ]
  if (options.upgradeHeaders !== false) {
    lines.push('proxy_set_header Upgrade $http_upgrade;', 'proxy_set_header Connection "upgrade";')
  }
  if (options.readTimeout !== undefined) lines.push(`proxy_read_timeout ${options.readTimeout};`)
  return `location ${path} {\n      ${lines.join('\n      ')}\n    }`
}

/**
 * Starts nginx in the foreground on 127.0.0.1 with a config written to a fresh temp prefix
 * (its own pid file, error log and temp paths: nothing under /etc or /var is touched), on a
 * free port, and stops it in teardown. Returns `undefined` when nginx is missing: the test is
 * then skipped with a reason naming the Debian package, or failed under `CI=true`.
 *
 * @example
 * ```ts
 * const nginx = await startNginx(t, { server: websocketLocation('/', app.port) })
 * if (nginx === undefined) return
 * const socket = new WebSocket(nginx.url('/chat'))
 * ```
 */
export async function startNginx (t: Test, options: NginxOptions): Promise<RunningNginx | undefined> {
  if (!requireBinary(t, nginxPath, 'nginx')) return undefined
  const prefix = await mkdtemp(join(tmpdir(), 'ws-guard-nginx-'))
  t.teardown(() => rm(prefix, { recursive: true, force: true }))
  const errorLogPath = join(prefix, 'error.log')
  const errorLog = async (): Promise<string> => await readFile(errorLogPath, 'utf8').catch(() => '')
  // The free port is found by binding port 0, then handed to nginx: another process can take
  // it in between, so an "Address already in use" start is retried on a new port.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const conf = join(prefix, 'nginx.conf')
    await writeFile(conf, config(prefix, port, options))
    const child = spawn(nginxPath, ['-p', prefix, '-c', conf, '-e', errorLogPath], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
    const started = await waitForPort(child, port, 5000)
    if (started) {
      t.teardown(() => stop(child))
      return { port, prefix, url: (path, scheme = 'ws') => `${scheme}://127.0.0.1:${port}${path}`, errorLog }
    }
    await stop(child)
    const log = `${stderr}${await errorLog()}`
    if (!log.includes('Address already in use') || attempt === 3) {
      throw new Error(`nginx did not start on 127.0.0.1:${port}:\n${log}`)
    }
  }
}

function config (prefix: string, port: number, options: NginxOptions): string {
  const path = (name: string): string => join(prefix, name)
  return `daemon off;
master_process off;
worker_processes 1;
pid ${path('nginx.pid')};
error_log ${path('error.log')} info;
events { worker_connections 128; }
http {
  access_log ${path('access.log')};
  client_body_temp_path ${path('client_body')};
  proxy_temp_path ${path('proxy')};
  fastcgi_temp_path ${path('fastcgi')};
  uwsgi_temp_path ${path('uwsgi')};
  scgi_temp_path ${path('scgi')};
  ${options.http ?? ''}
  server {
    listen 127.0.0.1:${port};
    server_name localhost;
    ${options.server}
  }
}
`
}

/** Polls until nginx accepts connections; `false` if it exits or `ms` pass first. */
async function waitForPort (child: ChildProcess, port: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port })
      socket.once('connect', () => { socket.destroy(); resolve(true) })
      socket.once('error', () => resolve(false))
    })
    if (open) return true
    await sleep(20)
  }
  return false
}

/** SIGTERM (fast shutdown), then SIGKILL if nginx is still there after 2 s. */
async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000)
  await exited
  clearTimeout(timer)
}
