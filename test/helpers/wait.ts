import { setTimeout as sleep } from 'node:timers/promises'

/** Polls `predicate` every few ms; throws (failing the test) when `timeout` ms pass first. */
export async function waitFor (predicate: () => boolean, what: string, timeout = 3000): Promise<void> {
  const until = Date.now() + timeout
  while (!predicate()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(5)
  }
}

/** Resolves with `true` when `promise` settles within `ms`, `false` otherwise. */
export async function settlesWithin (promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(resolve, ms, false) })
  const settled = promise.then(() => true, () => true)
  try {
    return await Promise.race([settled, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** A promise with its resolve function, for async callbacks (origin functions, authorize) the test settles. */
export function deferred<T> (): { promise: Promise<T>, resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((_resolve) => { resolve = _resolve })
  return { promise, resolve }
}
