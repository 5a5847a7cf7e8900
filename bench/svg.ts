/*
 * `--svg FILE`: the run as a chart, a plain SVG string (no dependency, no browser). Top panel:
 * every handshake case's handshakes/s as a ratio to bare (the median bar, min–max whisker, the
 * ratio read from server CPU as a dot, its budget as a red tick). Bottom panel: the RSS each
 * idle connection costs, with the live heap part inside it.
 */
import type { FleetResult } from './fleet.js'
import type { CaseResult } from './handshakes.js'
import type { IdleResult } from './idle.js'
import type { Spread } from './stats.js'

export interface ChartInput {
  /** One line under the title: machine, Node, mode. */
  readonly subtitle: string
  readonly handshakes: readonly CaseResult[]
  readonly fleet?: FleetResult | undefined
  readonly idle: readonly IdleResult[]
  /** Case id → the smallest ratio to bare its budget allows. */
  readonly budgets: ReadonlyMap<string, number>
  /** Case ids of the references and peers (drawn in their own colour). */
  readonly peers: ReadonlySet<string>
}

interface Bar {
  readonly label: string
  readonly color: string
  readonly ratio: Spread
  /** bare µs/hs / case µs/hs: the ratio a saturated server would reach. */
  readonly byCpu: number
  readonly budget: number | undefined
}

const width = 980
const labelWidth = 360
const plotLeft = labelWidth + 10
const plotWidth = width - plotLeft - 70
const rowHeight = 22
const font = 'font-family="Helvetica, Arial, sans-serif"'
const colors = { bare: '#8a8f98', guard: '#2f6fde', peer: '#e08a1e', refused: '#2e9d57', fleet: '#8b4fc8' }

function escape (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

const num = (value: number): string => Number.isFinite(value) ? String(Math.round(value * 10) / 10) : '0'

function text (x: number, y: number, content: string, attributes = ''): string {
  const size = attributes.includes('font-size') ? '' : ' font-size="12"'
  return `<text x="${num(x)}" y="${num(y)}" ${font}${size} ${attributes}>${escape(content)}</text>`
}

function colorOf (result: CaseResult, peers: ReadonlySet<string>): string {
  if (result.id === 'bare') return colors.bare
  if (!result.accepted) return colors.refused
  if (peers.has(result.id)) return colors.peer
  return colors.guard
}

/** Axis ticks from 0 to the first half-step above every value. */
function axisMax (bars: readonly Bar[]): number {
  const highest = Math.max(1.2, ...bars.map((bar) => Math.max(bar.ratio.max, bar.byCpu, bar.budget ?? 0)).filter(Number.isFinite))
  return Math.ceil(highest * 2) / 2
}

function ratioPanel (bars: readonly Bar[], top: number, title: string): { svg: string[], height: number } {
  const out: string[] = []
  const max = axisMax(bars)
  const x = (ratio: number): number => plotLeft + Math.max(0, Math.min(ratio, max)) / max * plotWidth
  out.push(text(10, top + 16, title, 'font-size="14" font-weight="bold"'))
  const plotTop = top + 30
  const plotHeight = bars.length * rowHeight
  for (let tick = 0; tick <= max + 1e-9; tick += 0.5) {
    const at = x(tick)
    out.push(`<line x1="${num(at)}" y1="${plotTop}" x2="${num(at)}" y2="${plotTop + plotHeight}" stroke="${tick === 1 ? '#444' : '#ddd'}" stroke-width="${tick === 1 ? 1.5 : 1}"${tick === 1 ? ' stroke-dasharray="4 3"' : ''}/>`)
    out.push(text(at, plotTop + plotHeight + 14, `${tick.toFixed(1)}×`, 'text-anchor="middle" fill="#555"'))
  }
  bars.forEach((bar, i) => {
    const y = plotTop + i * rowHeight
    const middle = y + rowHeight / 2
    out.push(text(labelWidth, middle + 4, bar.label, 'text-anchor="end"'))
    out.push(`<rect x="${plotLeft}" y="${num(y + 4)}" width="${num(x(bar.ratio.median) - plotLeft)}" height="${rowHeight - 8}" fill="${bar.color}" opacity="0.85"/>`)
    // The whisker: min to max over the repetitions.
    const low = x(bar.ratio.min)
    const high = x(bar.ratio.max)
    out.push(`<line x1="${num(low)}" y1="${num(middle)}" x2="${num(high)}" y2="${num(middle)}" stroke="#222" stroke-width="1.2"/>`)
    for (const end of [low, high]) out.push(`<line x1="${num(end)}" y1="${num(middle - 5)}" x2="${num(end)}" y2="${num(middle + 5)}" stroke="#222" stroke-width="1.2"/>`)
    if (Number.isFinite(bar.byCpu)) out.push(`<circle cx="${num(x(bar.byCpu))}" cy="${num(middle)}" r="3.5" fill="#fff" stroke="#222" stroke-width="1.2"/>`)
    if (bar.budget !== undefined) out.push(`<line x1="${num(x(bar.budget))}" y1="${num(y + 1)}" x2="${num(x(bar.budget))}" y2="${num(y + rowHeight - 1)}" stroke="#d22" stroke-width="2"/>`)
    const byCpuAt = Number.isFinite(bar.byCpu) ? x(bar.byCpu) + 4 : 0
    out.push(text(Math.max(high, x(bar.ratio.median), byCpuAt) + 6, middle + 4, `${bar.ratio.median.toFixed(2)}×`, 'fill="#333"'))
  })
  return { svg: out, height: plotHeight + 50 }
}

function memoryPanel (idle: readonly IdleResult[], top: number): { svg: string[], height: number } {
  const out: string[] = []
  const rows = idle.filter((result) => Number.isFinite(result.rssPerConnection))
  const highest = Math.max(1, ...rows.map((result) => Math.max(result.rssPerConnection, result.heapPerConnection)))
  const max = Math.ceil(highest / 1024 / 2) * 2 * 1024
  // Room on the right for the figures.
  const panelWidth = plotWidth - 120
  const x = (bytes: number): number => plotLeft + Math.max(0, Math.min(bytes, max)) / max * panelWidth
  const open = rows[0]?.open ?? 0
  out.push(text(10, top + 16, `Memory per idle connection, after GC (${open.toLocaleString('en-US')} open): RSS, and the live heap part of it (dark inner bar)`, 'font-size="14" font-weight="bold"'))
  const plotTop = top + 30
  const plotHeight = rows.length * rowHeight
  for (let kb = 0; kb * 1024 <= max; kb += 2) {
    const at = x(kb * 1024)
    out.push(`<line x1="${num(at)}" y1="${plotTop}" x2="${num(at)}" y2="${plotTop + plotHeight}" stroke="#ddd"/>`)
    out.push(text(at, plotTop + plotHeight + 14, `${kb} KB`, 'text-anchor="middle" fill="#555"'))
  }
  rows.forEach((result, i) => {
    const y = plotTop + i * rowHeight
    const color = result.role === 'bare' ? colors.bare : result.role === 'guard' ? colors.guard : colors.peer
    out.push(text(labelWidth, y + rowHeight / 2 + 4, result.label, 'text-anchor="end"'))
    out.push(`<rect x="${plotLeft}" y="${num(y + 3)}" width="${num(x(result.rssPerConnection) - plotLeft)}" height="${rowHeight - 6}" fill="${color}" opacity="0.85"/>`)
    out.push(`<rect x="${plotLeft}" y="${num(y + 9)}" width="${num(x(result.heapPerConnection) - plotLeft)}" height="${rowHeight - 16}" fill="#1d2b45" opacity="0.7"/>`)
    out.push(text(Math.max(x(result.rssPerConnection), x(result.heapPerConnection)) + 6, y + rowHeight / 2 + 4, `${(result.rssPerConnection / 1024).toFixed(2)} KB (heap ${(result.heapPerConnection / 1024).toFixed(2)} KB)`, 'fill="#333"'))
  })
  return { svg: out, height: plotHeight + 50 }
}

function legend (top: number, fleet: boolean): { svg: string[], height: number } {
  const items: Array<[string, string]> = [
    [colors.bare, 'bare @fastify/websocket'], [colors.guard, 'guard'], [colors.peer, 'reference, peers'], [colors.refused, 'refused handshakes']
  ]
  if (fleet) items.push([colors.fleet, 'fleet (its own bare)'])
  const out: string[] = []
  let x = 10
  for (const [color, label] of items) {
    out.push(`<rect x="${x}" y="${top}" width="12" height="12" fill="${color}" opacity="0.85"/>`, text(x + 16, top + 10, label))
    x += 26 + label.length * 6.6
  }
  const y = top + 22
  out.push(`<line x1="10" y1="${y + 6}" x2="30" y2="${y + 6}" stroke="#222"/>`, text(36, y + 10, 'min–max over the repetitions'))
  out.push(`<circle cx="232" cy="${y + 6}" r="3.5" fill="#fff" stroke="#222"/>`, text(240, y + 10, 'the same ratio from server CPU (bare µs / case µs)'))
  out.push(`<line x1="560" y1="${y}" x2="560" y2="${y + 12}" stroke="#d22" stroke-width="2"/>`, text(568, y + 10, 'budget'))
  return { svg: out, height: 44 }
}

/** The chart as an SVG document. */
export function renderChart (input: ChartInput): string {
  const parts: string[] = []
  let y = 10
  parts.push(text(10, y + 16, 'fastify-ws-guard: handshakes/s as a ratio to bare @fastify/websocket (median of the interleaved repetitions)', 'font-size="15" font-weight="bold"'))
  parts.push(text(10, y + 34, input.subtitle, 'fill="#555"'))
  y += 46
  const barOf = (result: CaseResult, color: string): Bar | undefined => result.summary === undefined
    ? undefined
    : { label: result.label, color, ratio: result.summary.perSecondRatio, byCpu: 1 / result.summary.cpuRatio.median, budget: input.budgets.get(result.id) }
  const bars = input.handshakes.map((result) => barOf(result, colorOf(result, input.peers))).filter((bar) => bar !== undefined)
  const fleetBars = (input.fleet?.handshakes ?? []).filter((result) => result.id !== 'bare').map((result) => barOf(result, colors.fleet)).filter((bar) => bar !== undefined)
  if (bars.length + fleetBars.length > 0) {
    const mark = legend(y, fleetBars.length > 0)
    parts.push(...mark.svg)
    y += mark.height
  }
  if (bars.length > 0) {
    const panel = ratioPanel(bars, y, 'Handshakes')
    parts.push(...panel.svg)
    y += panel.height
  }
  if (fleetBars.length > 0) {
    const panel = ratioPanel(fleetBars, y, 'Fleet: per-user limit in the MemoryStore and the RedisStore (ratio to the bare server of that run)')
    parts.push(...panel.svg)
    y += panel.height
  }
  if (input.idle.length > 0) {
    const panel = memoryPanel(input.idle, y)
    parts.push(...panel.svg)
    y += panel.height
  }
  const height = Math.ceil(y + 10)
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="fastify-ws-guard benchmark">\n` +
    `<rect width="${width}" height="${height}" fill="#fff"/>\n${parts.join('\n')}\n</svg>\n`
}
