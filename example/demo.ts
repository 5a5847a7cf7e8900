import { closeOnSignals, startDemo, type StartedDemo } from './demo-app.js'

// `npm run demo`: a guarded chat room and the handshake lab on localhost, nothing external.
// PORT (default 3000) serves both; PORT+1 serves the lab's page on another origin.
const host = '127.0.0.1'
const port = Number(process.env.PORT ?? 3000)
let demo: StartedDemo
try {
  demo = await startDemo({ host, port, foreignPort: port === 0 ? 0 : port + 1, logLevel: 'info' })
} catch (err) {
  console.error(`npm run demo: ${(err as Error).message}`)
  process.exit(1)
}

const token = await demo.mint('cli')
const url = `${demo.url.replace(/^http/, 'ws')}chat`
console.log(`
  Open ${demo.url} in a browser: the handshake lab beside a chat room
  (open it twice to chat with yourself). The lab's page on another origin: ${demo.foreignUrl}

  A sample token (HS256, 15 minutes):
    ${token}

  A one-line client from this directory:
    node -e "const s=new (require('ws'))('${url}',['chat.v1'],{headers:{authorization:'Bearer ${token}'}});s.on('message',m=>{console.log(String(m));s.close()})"

  Try it without the token to see the guard's answer:
    node -e "const s=new (require('ws'))('${url}');s.on('unexpected-response',(q,r)=>{r.pipe(process.stdout)})"

  Ctrl-C to stop: open sockets get 1001 server shutting down.
`)

const signal = await closeOnSignals(process, async () => await demo.app.close())
console.log(`  ${signal}: closed.`)
