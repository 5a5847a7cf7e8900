import { resolve } from 'node:path'
import { chromium } from 'playwright-core'
import { startDemo } from './demo-app.js'

// `npm run demo:screenshot [file]`: starts the demo on free ports, says hello in the chat, runs
// every lab scenario in headless Chromium and writes a full-page screenshot (docs/demo.png).
// Debian's Chromium by default (apt-get install chromium); CHROMIUM_BIN points elsewhere.
const output = resolve(process.argv[2] ?? 'docs/demo.png')
const executablePath = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium'

const demo = await startDemo({ host: '127.0.0.1', port: 0, foreignPort: 0, logLevel: 'info', logOutput: { write: () => true } })
const browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-proxy-server', '--hide-scrollbars'] })
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1, colorScheme: 'light' })
  page.setDefaultTimeout(60_000)
  await page.goto(demo.url)
  await page.waitForSelector('#chat-status[data-state=open]')
  await page.fill('#chat-text', 'hello from the lab')
  await page.click('#chat-form button')
  await page.waitForSelector('#chat-log p:nth-child(2)')
  await page.click('#run-all')
  await page.waitForFunction(() => Array.from(document.querySelectorAll('.card')).every((card) => (card as HTMLElement).dataset.state === 'done'))
  // One more stats poll after the last run.
  await page.waitForTimeout(1200)
  await page.screenshot({ path: output, fullPage: true })
  console.log(`wrote ${output}`)
} finally {
  await browser.close()
  await demo.app.close()
}
