import { performance } from 'node:perf_hooks'

/** Returns a function giving the ms elapsed since the call, to 0.1 ms. */
export function startClock (): () => number {
  const start = performance.now()
  return () => Math.round((performance.now() - start) * 10) / 10
}

export const timedOut = Symbol('timed out')

/** Races `promise` against `ms`; the timer never outlives the race. */
export async function within<T> (promise: Promise<T>, ms: number): Promise<T | typeof timedOut> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<typeof timedOut>((resolve) => {
    timer = setTimeout(resolve, ms, timedOut)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}
