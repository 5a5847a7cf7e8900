import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { Writable } from 'node:stream'
import type { Test } from 'tap'
import { channels } from '../../index.js'

/** Log lines an app wrote, parsed. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = []
  readonly raw: string[] = []
  override _write (chunk: Buffer, _encoding: string, callback: () => void): void {
    const text = chunk.toString()
    this.raw.push(text)
    for (const line of text.split('\n')) {
      if (line !== '') this.lines.push(JSON.parse(line))
    }
    callback()
  }

  get text (): string {
    return this.raw.join('')
  }
}

/** A line the guard itself wrote. */
export type GuardLine = Record<string, unknown> & { wsGuard: Record<string, unknown> }

/** The lines the guard itself wrote: those with a `wsGuard` key. */
export function guardLines (logs: { lines: Array<Record<string, unknown>> }): GuardLine[] {
  return logs.lines.filter((line): line is GuardLine => typeof line.wsGuard === 'object' && line.wsGuard !== null)
}

/** Asserts none of `needles` (tokens, claim values, jose's messages) occurs in `haystack`. */
export function assertNoLeak (t: Test, haystack: string, needles: readonly string[], where: string): void {
  for (const needle of needles) {
    t.notOk(haystack.includes(needle), `${where} does not contain ${needle.length > 40 ? needle.slice(0, 20) + '...' : needle}`)
  }
}

export interface ChannelRecord {
  accepted: Array<Record<string, unknown>>
  rejected: Array<Record<string, unknown>>
  closed: Array<Record<string, unknown>>
}

/** Subscribes to the guard's diagnostics channels until the test ends. */
export function recordChannels (t: Test): ChannelRecord {
  const record: ChannelRecord = { accepted: [], rejected: [], closed: [] }
  for (const kind of ['accepted', 'rejected', 'closed'] as const) {
    const listener = (message: unknown): void => { record[kind].push(message as Record<string, unknown>) }
    subscribe(channels[kind], listener)
    t.teardown(() => { unsubscribe(channels[kind], listener) })
  }
  return record
}
