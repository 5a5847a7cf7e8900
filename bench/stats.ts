/** Small statistics and formatting helpers. */

export function sorted (values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values).sort()
}

/** The q-quantile (0..1) of values sorted ascending, nearest rank. */
export function quantile (ascending: ArrayLike<number>, q: number): number {
  if (ascending.length === 0) return NaN
  const rank = Math.min(ascending.length - 1, Math.max(0, Math.ceil(q * ascending.length) - 1))
  return ascending[rank]!
}

export function median (values: readonly number[]): number {
  const ascending = sorted(values)
  if (ascending.length === 0) return NaN
  const middle = ascending.length >> 1
  return ascending.length % 2 === 1 ? ascending[middle]! : (ascending[middle - 1]! + ascending[middle]!) / 2
}

/** Median with min and max: how every repeated figure is reported. */
export interface Spread {
  median: number
  min: number
  max: number
}

export function spread (values: readonly number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) }
}

/** `1,234` */
export function int (value: number): string {
  return Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : '-'
}

export function fixed (value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-'
}

/** `1,234 (1,200–1,260)` */
export function intSpread (value: Spread): string {
  return `${int(value.median)} (${int(value.min)}–${int(value.max)})`
}

export function fixedSpread (value: Spread, digits: number): string {
  return `${fixed(value.median, digits)} (${fixed(value.min, digits)}–${fixed(value.max, digits)})`
}

/** Bytes as `1.23 KB` (1 KB = 1024 bytes). */
export function kb (bytes: number): string {
  return Number.isFinite(bytes) ? `${(bytes / 1024).toFixed(2)} KB` : '-'
}

/** A plain text table: the first row is the header; columns after the first are right-aligned. */
export function table (rows: ReadonlyArray<readonly string[]>): string {
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length) })
  const line = (row: readonly string[]): string => row.map((cell, i) => i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)).join('  ').trimEnd()
  const [header, ...body] = rows
  if (header === undefined) return ''
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...body.map(line)].join('\n')
}
