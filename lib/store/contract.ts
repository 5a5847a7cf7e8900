/**
 * Where connections are counted. The in-memory default counts this process; a shared store
 * (Redis, say) can count a fleet. `acquire` counts one more connection under `key` unless
 * `limit` is reached and says whether it did; `release` forgets one. Keys are
 * `'connections'` (every guarded connection) and `'user:<sub>'`.
 */
export interface ConnectionStore {
  acquire: (key: string, limit: number) => boolean | Promise<boolean>
  release: (key: string) => void | Promise<void>
}
