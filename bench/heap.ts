/*
 * `--heap`: where an idle connection's memory goes. Each server takes a heap snapshot (after
 * GC) with no connection open and another with N open; the difference, divided by N and
 * grouped by constructor, is what one connection keeps. Native memory (libuv handles, socket
 * buffers) is not in a heap snapshot: compare with the RSS figures of the idle suite.
 */
import { readFileSync, rmSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import type { IdleCase } from './cases.js'
import { ServerProcess, type Placement } from './children.js'
import type { Log } from './handshakes.js'
import { IdlePool, runHandshakes } from './load.js'
import type { HeapReply, SampleReply } from './protocol.js'
import { fixed, int, table } from './stats.js'

interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[], node_types: [string[], ...unknown[]] } }
  nodes: number[]
  strings: string[]
}

type Groups = Map<string, { count: number, bytes: number }>

// Types whose name is content (a string's text, a regexp's source), not a constructor.
const namelessTypes = new Set(['string', 'concatenated string', 'sliced string', 'number', 'heap number', 'code', 'regexp', 'bigint', 'symbol'])

/** Counts and self sizes by `type: constructor name`. */
export function groupHeap (file: string): Groups {
  const snapshot = JSON.parse(readFileSync(file, 'utf8')) as HeapSnapshot
  const fields = snapshot.snapshot.meta.node_fields
  const types = snapshot.snapshot.meta.node_types[0]
  const stride = fields.length
  const typeAt = fields.indexOf('type')
  const nameAt = fields.indexOf('name')
  const sizeAt = fields.indexOf('self_size')
  const groups: Groups = new Map()
  const { nodes, strings } = snapshot
  for (let i = 0; i < nodes.length; i += stride) {
    const type = types[nodes[i + typeAt]!] ?? 'unknown'
    const key = namelessTypes.has(type) ? `(${type})` : `${type}: ${strings[nodes[i + nameAt]!]!.slice(0, 60)}`
    const group = groups.get(key) ?? { count: 0, bytes: 0 }
    group.count++
    group.bytes += nodes[i + sizeAt]!
    groups.set(key, group)
  }
  return groups
}

interface PerConnection { key: string, count: number, bytes: number }

function perConnection (before: Groups, after: Groups, open: number): PerConnection[] {
  const keys = new Set([...before.keys(), ...after.keys()])
  const rows: PerConnection[] = []
  for (const key of keys) {
    const a = after.get(key) ?? { count: 0, bytes: 0 }
    const b = before.get(key) ?? { count: 0, bytes: 0 }
    rows.push({ key, count: (a.count - b.count) / open, bytes: (a.bytes - b.bytes) / open })
  }
  return rows.sort((x, y) => y.bytes - x.bytes)
}

export async function runHeapAttribution (
  cases: readonly IdleCase[], placement: Placement, settings: { connections: number, concurrency: number, warmup: number }, outDir: string, log: Log
): Promise<{ text: string, json: unknown }> {
  const results: Array<{ id: string, label: string, open: number, rows: PerConnection[] }> = []
  for (const kase of cases) {
    const server = await ServerProcess.start(kase.server, placement)
    const pool = new IdlePool()
    try {
      await runHandshakes(server.port, Math.min(settings.warmup, 1000), settings.concurrency, (i) => ({ headers: kase.headersFor(i), expectStatus: 101 }))
      const empty = await server.request<HeapReply>('heapSnapshot', { dir: outDir }, 120_000)
      await pool.open(server.port, settings.connections, settings.concurrency * 2, kase.headersFor)
      for (let waited = 0; waited < 10_000; waited += 100) {
        if ((await server.request<SampleReply>('sample')).open >= settings.connections - pool.errors) break
        await sleep(100)
      }
      await sleep(500)
      const full = await server.request<HeapReply>('heapSnapshot', { dir: outDir }, 120_000)
      const rows = perConnection(groupHeap(empty.file), groupHeap(full.file), full.open)
      rmSync(empty.file, { force: true })
      rmSync(full.file, { force: true })
      results.push({ id: kase.id, label: kase.label, open: full.open, rows })
      log(`heap ${kase.id}: ${full.open} open, ${int(rows.reduce((sum, row) => sum + row.bytes, 0))} B/conn in the heap snapshot`)
    } finally {
      // The server closes first, so the load generator's ports are not left in TIME_WAIT.
      await server.stop()
      pool.destroy()
    }
  }
  return { text: render(results), json: results.map((result) => ({ ...result, rows: result.rows.filter((row) => Math.abs(row.bytes) >= 1 || Math.abs(row.count) >= 0.01) })) }
}

function render (results: ReadonlyArray<{ id: string, label: string, open: number, rows: PerConnection[] }>): string {
  const out: string[] = []
  const bare = results.find((result) => result.id === 'idle-bare')
  for (const result of results) {
    const total = result.rows.reduce((sum, row) => sum + row.bytes, 0)
    out.push('', `${result.label}: ${int(result.open)} connections, ${fixed(total, 0)} B per connection in the heap`, '', table([
      ['type: constructor', 'objects/conn', 'B/conn'],
      ...result.rows.slice(0, 25).map((row) => [row.key, fixed(row.count, 2), fixed(row.bytes, 0)])
    ]))
    if (bare !== undefined && result !== bare) {
      const base = new Map(bare.rows.map((row) => [row.key, row]))
      const diff = result.rows.map((row) => ({ key: row.key, count: row.count - (base.get(row.key)?.count ?? 0), bytes: row.bytes - (base.get(row.key)?.bytes ?? 0) }))
      for (const row of bare.rows) {
        if (!result.rows.some((mine) => mine.key === row.key)) diff.push({ key: row.key, count: -row.count, bytes: -row.bytes })
      }
      diff.sort((x, y) => y.bytes - x.bytes)
      const extra = total - bare.rows.reduce((sum, row) => sum + row.bytes, 0)
      out.push('', `${result.label} minus bare: ${fixed(extra, 0)} B per connection`, '', table([
        ['type: constructor', 'objects/conn', 'B/conn'],
        ...diff.filter((row) => Math.abs(row.bytes) >= 4).slice(0, 25).map((row) => [row.key, fixed(row.count, 2), fixed(row.bytes, 0)])
      ]))
    }
  }
  return out.join('\n').trimStart()
}
