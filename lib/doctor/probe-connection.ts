import type { Socket } from 'node:net'

export type WaitResult = 'ready' | 'closed' | 'timeout'

/**
 * The open connection (TCP or TLS) as the upgrade and listen stages read it: every byte
 * received is kept until consumed, and one can wait for a condition on them, bounded in time.
 */
export class ProbeConnection {
  readonly socket: Socket
  #buffer = Buffer.alloc(0)
  #closed = false
  #wake: () => void = noop

  constructor (socket: Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk])
      this.#wake()
    })
    // A reset shows as a close; its error has nothing more to tell here.
    socket.on('error', noop)
    socket.on('close', () => {
      this.#closed = true
      this.#wake()
    })
  }

  /** What was received and not consumed yet. */
  get buffer (): Buffer {
    return this.#buffer
  }

  consume (bytes: number): void {
    this.#buffer = this.#buffer.subarray(bytes)
  }

  /** Resolves once `ready(buffer)` holds, the peer has closed, or `ms` passed. */
  async wait (ready: (buffer: Buffer) => boolean, ms: number): Promise<WaitResult> {
    return await new Promise((resolve) => {
      const timer = setTimeout(() => finish('timeout'), ms)
      const finish = (result: WaitResult): void => {
        clearTimeout(timer)
        this.#wake = noop
        resolve(result)
      }
      this.#wake = () => {
        if (ready(this.#buffer)) finish('ready')
        else if (this.#closed) finish('closed')
      }
      this.#wake()
    })
  }

  write (data: Buffer | string): void {
    this.socket.write(data)
  }
}

function noop (): void {}
