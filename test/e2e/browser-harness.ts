import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import type { Test } from 'tap'
import ts from 'typescript'

/** Debian's Chromium (the tests never download a browser build); `CHROMIUM_BIN` points elsewhere. */
export const chromiumPath = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium'

const chromiumArgs = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  // Loopback only: never a proxy from the environment.
  '--no-proxy-server'
]

/** Launches headless Chromium with a fresh temporary profile; closed in teardown. */
export async function launchBrowser (t: Test): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: chromiumArgs, timeout: 15_000 })
  t.teardown(() => browser.close())
  return browser
}

/**
 * A fresh browser context (its own cookie jar), closed in teardown. Every Playwright wait in it
 * is bounded.
 */
export async function newContext (t: Test, browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext()
  context.setDefaultTimeout(10_000)
  t.teardown(() => context.close())
  return context
}

/** Opens `url` in `context` and waits until the page has loaded the client helper. */
export async function openPage (context: BrowserContext, url: string): Promise<Page> {
  const page = await context.newPage()
  const response = await page.goto(url)
  if (response?.status() !== 200) throw new Error(`GET ${url} answered ${response?.status()}`)
  await page.waitForFunction(() => (window as unknown as { clientReady?: boolean }).clientReady === true)
  return page
}

const clientSource = fileURLToPath(new URL('../../client.ts', import.meta.url))

/**
 * client.ts compiled the way tsc compiles it for dist/client.js, minus the build step: what
 * `import { bearerProtocols } from 'fastify-ws-guard/client'` gives a browser bundle.
 */
export function clientModule (): string {
  return ts.transpileModule(readFileSync(clientSource, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 }
  }).outputText
}

/** The test page: it loads the client helper as an ES module and exposes it as `window.wsClient`. */
export const testPage = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>fastify-ws-guard e2e</title>
<script type="module">
  import * as client from '/client.js'
  window.wsClient = client
  window.clientReady = true
</script>
`

/** Serves the test page at `GET /page` and the client module at `GET /client.js`. */
export function serveTestPage (app: FastifyInstance): void {
  const script = clientModule()
  app.get('/page', async (_request, reply) => reply.type('text/html; charset=utf-8').send(testPage))
  app.get('/client.js', async (_request, reply) => reply.type('text/javascript; charset=utf-8').send(script))
  app.get('/favicon.ico', async (_request, reply) => reply.code(204).send())
}

export interface SessionPlan {
  url: string
  /** Subprotocols, passed as they are. */
  protocols?: string[]
  /** Builds the subprotocols in the page with `wsClient.bearerProtocols(token, ...appProtocols)`. */
  bearer?: { token: string, appProtocols: string[] }
  /** Run in order once open: `send` sends a text and waits for the next message; `wait` idles. */
  steps?: Array<{ send: string } | { wait: number }>
  /** Bound on the whole session in the page, in ms. Default 5000. */
  timeout?: number
}

export interface SessionResult {
  opened: boolean
  /** `socket.protocol` once open. */
  protocol: string | null
  received: string[]
  /** `readyState` after the steps, before the page closes the socket (1 is OPEN). */
  readyStateAfterSteps: number | null
  close: { code: number, reason: string, wasClean: boolean } | null
  /** Set when a step or the close did not happen within the bound. */
  timedOut: string | null
}

/**
 * Runs a WebSocket session in the page's own JavaScript (so the browser sets Origin, cookies
 * and subprotocols itself): open, the steps, then a normal close; or whatever the server did
 * instead. Always resolves within `timeout`.
 */
export async function wsSession (page: Page, plan: SessionPlan): Promise<SessionResult> {
  return await page.evaluate(async (plan) => {
    const result: SessionResult = { opened: false, protocol: null, received: [], readyStateAfterSteps: null, close: null, timedOut: null }
    const client = (window as unknown as { wsClient: { bearerProtocols: (token: string, ...app: string[]) => string[] } }).wsClient
    const protocols = plan.bearer === undefined ? (plan.protocols ?? []) : client.bearerProtocols(plan.bearer.token, ...plan.bearer.appProtocols)
    const socket = new WebSocket(plan.url, protocols)
    const inbox: string[] = []
    let waiter: (() => void) | undefined
    socket.onmessage = (event) => {
      inbox.push(String(event.data))
      waiter?.()
    }
    const closed = new Promise<void>((resolve) => {
      socket.onclose = (event) => {
        result.close = { code: event.code, reason: event.reason, wasClean: event.wasClean }
        waiter?.()
        resolve()
      }
    })
    const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))
    const deadline = Date.now() + (plan.timeout ?? 5000)
    const bounded = async (what: string, done: () => boolean): Promise<boolean> => {
      while (!done()) {
        if (result.close !== null) return false
        if (Date.now() > deadline) {
          result.timedOut = what
          return false
        }
        await new Promise<void>((resolve) => {
          waiter = resolve
          setTimeout(resolve, 50)
        })
      }
      return true
    }
    const opened = new Promise<void>((resolve) => {
      socket.onopen = () => {
        result.opened = true
        result.protocol = socket.protocol
        resolve()
      }
    })
    await Promise.race([opened, closed, sleep(Math.max(0, deadline - Date.now()))])
    if (result.opened) {
      // A close rejection arrives right behind the open: let it land before the steps.
      await sleep(50)
      for (const step of plan.steps ?? []) {
        if (result.close !== null) break
        if ('wait' in step) {
          await sleep(step.wait)
          continue
        }
        socket.send(step.send)
        if (!await bounded(`the answer to ${JSON.stringify(step.send)}`, () => inbox.length > 0)) break
        result.received.push(...inbox.splice(0))
      }
      result.readyStateAfterSteps = socket.readyState
      if (result.close === null) socket.close(1000, 'done')
    }
    if (result.close === null && result.timedOut === null) {
      await Promise.race([closed, sleep(Math.max(0, deadline - Date.now()))])
      if (result.close === null) result.timedOut = 'the close'
    }
    return result
  }, plan)
}
