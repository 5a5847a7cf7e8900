import { buildDemo } from './demo-app.js'

// `npm run demo`: a guarded chat room on localhost, no external service needed.
const port = Number(process.env.PORT ?? 3000)
const { app, mint } = await buildDemo({ logLevel: 'info' })
await app.listen({ port, host: '127.0.0.1' })
const token = await mint('cli')
const url = `ws://127.0.0.1:${port}/chat`
console.log(`
  Open http://127.0.0.1:${port}/ in a browser (open it twice to chat with yourself).

  A sample token (HS256, 15 minutes):
    ${token}

  A one-line client from this directory:
    node -e "const s=new (require('ws'))('${url}',['chat.v1'],{headers:{authorization:'Bearer ${token}'}});s.on('message',m=>{console.log(String(m));s.close()})"

  Try it without the token to see the guard's answer:
    node -e "const s=new (require('ws'))('${url}');s.on('unexpected-response',(q,r)=>{r.pipe(process.stdout)})"

  Ctrl-C to stop.
`)
