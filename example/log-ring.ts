/** One pino line, parsed. */
export type LogLine = Record<string, unknown> & { reqId?: string, msg?: string }

/** Where the demo's log lines go besides the ring: stdout when run, a sink in tests. */
export interface LogOutput {
  write: (line: string) => unknown
}

/**
 * The demo's pino destination: every line goes on to `output` as it came, and the last `size`
 * lines are kept parsed, so the lab can show the lines of one scenario run. The guard never
 * logs a token; the demo's own lines carry codes, routes and subjects only.
 */
export class LogRing {
  readonly #lines: LogLine[] = []
  readonly #size: number
  readonly #output: LogOutput

  constructor (output: LogOutput, size = 1000) {
    this.#output = output
    this.#size = size
  }

  /** Called by pino with one JSON line. */
  write (line: string): void {
    this.#output.write(line)
    this.#lines.push(JSON.parse(line) as LogLine)
    this.#lines.splice(0, this.#lines.length - this.#size)
  }

  /** Kept lines whose request id starts with `prefix`, oldest first. */
  linesOf (prefix: string): LogLine[] {
    return this.#lines.filter((line) => typeof line.reqId === 'string' && line.reqId.startsWith(prefix))
  }
}
