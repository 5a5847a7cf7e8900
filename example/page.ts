import { bearerProtocols } from '../client.js'
import type { Scenario } from './lab.js'

// Everything the demo's pages need is here and served by the demo: no external asset.

/** The page's client helper: the same function the package exports as fastify-ws-guard/client. */
export const clientScript = `export ${bearerProtocols.toString()}\n`

/** Only what a template puts inside an element or an attribute. */
function escapeHtml (text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;')
}

/** JSON for a `<script type="application/json">` element: no `</script>` can end it early. */
function scriptJson (value: unknown): string {
  return JSON.stringify(value).replaceAll('<', '\\u003c')
}

const seenBy: Record<Scenario['client'], string> = {
  page: 'Browser sees',
  foreign: 'Page on PORT+1 sees',
  server: 'Silent client sees'
}

function card (scenario: Scenario): string {
  return `
      <article class="card" data-scenario="${scenario.id}" data-state="idle">
        <header class="card-head">
          <div>
            <h3>${escapeHtml(scenario.title)} <span class="badge" hidden></span></h3>
            <p class="blurb">${escapeHtml(scenario.blurb)}</p>
          </div>
          <button type="button" class="run">Run</button>
        </header>
        <div class="cols">
          <section class="col seen"><h4>${seenBy[scenario.client]}</h4><div class="result"><p class="idle">not run yet</p></div></section>
          <section class="col http"><h4>Same request, <code>rejectWith: 'http'</code></h4><div class="result"><p class="idle">not run yet</p></div></section>
          <section class="col log"><h4>Log lines</h4><div class="result"><p class="idle">not run yet</p></div></section>
        </div>
      </article>`
}

const styles = `
  :root {
    color-scheme: light dark;
    --bg: #f4f5f7; --panel: #fff; --text: #1d2127; --muted: #5f6670; --line: #e2e4e9; --soft: #f7f8fa;
    --accent: #3451c6; --accent-text: #fff;
    --ok: #137a48; --ok-bg: #e6f6ed; --bad: #b4331d; --bad-bg: #fdecea; --warn: #9a5a00; --warn-bg: #fdf3e1;
    --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  }
  @media (prefers-color-scheme: dark) {
    :root {
      --bg: #121418; --panel: #1b1e24; --text: #e6e8eb; --muted: #9aa1ab; --line: #2d323a; --soft: #22262d;
      --accent: #7c93f0; --accent-text: #0d1020;
      --ok: #5cd08f; --ok-bg: #15301f; --bad: #ff8a73; --bad-bg: #3a1d18; --warn: #f0b45a; --warn-bg: #35280f;
    }
  }
  * { box-sizing: border-box }
  body { margin: 0; background: var(--bg); color: var(--text); font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif }
  code { font-family: var(--mono); font-size: .92em }
  h1, h2, h3, h4 { margin: 0; line-height: 1.25 }
  button { font: inherit; color: inherit; background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: .35rem .9rem; cursor: pointer }
  button:hover { border-color: var(--accent) }
  button:disabled { opacity: .55; cursor: progress }
  button.primary { background: var(--accent); color: var(--accent-text); border-color: transparent; font-weight: 600 }
  .top { background: var(--panel); border-bottom: 1px solid var(--line) }
  .wrap { max-width: 1480px; margin: 0 auto; padding: 1.1rem clamp(.9rem, 3vw, 2rem) }
  .top h1 { font-size: 1.3rem }
  .top h1 span { color: var(--muted); font-weight: 500 }
  .lede { margin: .35rem 0 0; color: var(--muted); max-width: 62rem }
  .layout { max-width: 1480px; margin: 0 auto; padding: 1.1rem clamp(.6rem, 3vw, 2rem) 2rem; display: grid; gap: 1.1rem; grid-template-columns: minmax(0, 1fr) }
  @media (min-width: 1100px) {
    .layout { grid-template-columns: minmax(0, 1fr) 21rem }
    .side { position: sticky; top: 1rem; align-self: start }
  }
  .lab-head { display: flex; align-items: center; justify-content: space-between; gap: 1rem; margin-bottom: .75rem }
  .lab-head h2 { font-size: 1.05rem }
  .cards { display: grid; gap: .8rem; grid-template-columns: repeat(auto-fill, minmax(min(100%, 46rem), 1fr)) }
  .card { background: var(--panel); border: 1px solid var(--line); border-left: 4px solid var(--line); border-radius: 12px; padding: .85rem 1rem }
  .card[data-state=running] { border-left-color: var(--accent) }
  .card[data-tone=ok] { border-left-color: var(--ok) }
  .card[data-tone=bad] { border-left-color: var(--bad) }
  .card[data-tone=warn] { border-left-color: var(--warn) }
  .card-head { display: flex; justify-content: space-between; align-items: flex-start; gap: .8rem }
  .card h3 { font-size: 1rem; display: flex; align-items: center; gap: .5rem; flex-wrap: wrap }
  .blurb { margin: .2rem 0 0; color: var(--muted); font-size: .88rem }
  .badge { font-size: .72rem; font-weight: 600; letter-spacing: .02em; padding: .1rem .5rem; border-radius: 99px; background: var(--soft); color: var(--muted) }
  .badge.ok { background: var(--ok-bg); color: var(--ok) }
  .badge.bad { background: var(--bad-bg); color: var(--bad) }
  .badge.warn { background: var(--warn-bg); color: var(--warn) }
  .cols { display: grid; gap: .6rem; margin-top: .7rem; grid-template-columns: minmax(0, 1fr) }
  @media (min-width: 720px) { .cols { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr) minmax(0, 1.35fr) } }
  .col { background: var(--soft); border-radius: 9px; padding: .55rem .7rem; min-width: 0 }
  .col h4 { font-size: .7rem; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); font-weight: 600; margin-bottom: .3rem }
  .col h4 code { text-transform: none; letter-spacing: 0 }
  .idle { margin: 0; color: var(--muted); font-size: .85rem }
  .answer { display: flex; align-items: baseline; gap: .5rem; flex-wrap: wrap }
  .code { font: 700 1.45rem/1.1 var(--mono) }
  .code.ok { color: var(--ok) } .code.bad { color: var(--bad) } .code.warn { color: var(--warn) }
  .reason, .status-text { font-weight: 600 }
  .reason.empty { color: var(--muted); font-weight: 400; font-style: italic }
  .error-code { display: block; font: 600 .78rem var(--mono); margin-top: .25rem; overflow-wrap: anywhere }
  .message, .header { margin: .25rem 0 0; font-size: .82rem; overflow-wrap: anywhere }
  .header { font-family: var(--mono); font-size: .74rem; color: var(--muted) }
  .notes { margin: .35rem 0 0; padding-left: 1rem; font-size: .8rem; color: var(--muted) }
  .jump { display: none; gap: 1rem; margin-top: .5rem; font-size: .88rem } .jump a { color: var(--accent) }
  .lines { list-style: none; margin: 0; padding: 0; display: grid; gap: .3rem; max-height: 13rem; overflow-y: auto }
  .line { font: .74rem/1.4 var(--mono); background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .3rem .45rem; overflow-wrap: anywhere }
  .who { font-weight: 700; text-transform: uppercase; font-size: .66rem; padding: 0 .3rem; border-radius: 4px }
  .who.guard { background: var(--bad-bg); color: var(--bad) } .who.demo { background: var(--ok-bg); color: var(--ok) }
  .line-head { display: flex; align-items: baseline; gap: .4rem; flex-wrap: wrap }
  .line-code { font-weight: 600 } .line-status { color: var(--muted) }
  .line-roles { margin-left: auto; color: var(--muted); font-family: system-ui, sans-serif; font-size: .7rem }
  .line-msg { display: block; color: var(--muted); margin-top: .1rem }
  .failed { color: var(--bad); margin: 0; font-size: .85rem }
  .side { display: grid; gap: 1rem }
  .panel { background: var(--panel); border: 1px solid var(--line); border-radius: 12px; padding: .9rem 1rem }
  .panel-head { display: flex; justify-content: space-between; align-items: baseline; gap: .5rem; margin-bottom: .6rem }
  .panel h2 { font-size: 1rem }
  .panel h2 code { font-size: .85em; color: var(--muted); font-weight: 500 }
  .pill { font-size: .75rem; padding: .12rem .55rem; border-radius: 99px; background: var(--soft); color: var(--muted); white-space: nowrap }
  .pill[data-state=open], .pill[data-state=live] { background: var(--ok-bg); color: var(--ok) }
  .pill[data-state=closed], .pill[data-state=stopped] { background: var(--bad-bg); color: var(--bad) }
  .chat-status { margin: 0 0 .5rem; font-size: .88rem; font-weight: 600 }
  .chat-status[data-state=open] { color: var(--ok) } .chat-status[data-state=closed] { color: var(--bad) }
  .chat-log { height: 11rem; overflow-y: auto; background: var(--soft); border-radius: 9px; padding: .4rem .6rem; font-size: .88rem }
  .chat-log p { margin: .15rem 0; overflow-wrap: anywhere } .chat-log b { font-weight: 600 } .chat-log .server { color: var(--muted) }
  .chat-form { display: flex; gap: .4rem; margin-top: .5rem }
  .chat-form input { flex: 1; min-width: 0; font: inherit; color: inherit; background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: .35rem .6rem }
  .hint { margin: .45rem 0 0; font-size: .8rem; color: var(--muted) }
  .figures { display: grid; grid-template-columns: repeat(3, 1fr); gap: .4rem; margin-bottom: .7rem }
  .figure { background: var(--soft); border-radius: 9px; padding: .45rem .6rem }
  .figure b { display: block; font: 700 1.35rem/1.1 var(--mono) }
  .figure span { font-size: .75rem; color: var(--muted) }
  .counts h3 { font-size: .7rem; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: .5rem 0 .25rem }
  .counts ul { list-style: none; margin: 0; padding: 0; font: .76rem/1.6 var(--mono) }
  .counts li { display: flex; justify-content: space-between; gap: .5rem; border-bottom: 1px dashed var(--line) }
  .counts li.zero { color: var(--muted); opacity: .7 }
  .counts .none { font-family: inherit; color: var(--muted) }
  footer { max-width: 1480px; margin: 0 auto; padding: 0 clamp(.9rem, 3vw, 2rem) 2rem; color: var(--muted); font-size: .82rem }
  .probe { position: absolute; width: 0; height: 0; border: 0 }
  @media (max-width: 719px) { .card[data-state=idle] .cols { display: none } .jump { display: flex } }
`

const script = `
  import { bearerProtocols } from '/client.js'

  const scenarios = JSON.parse(document.getElementById('scenarios').textContent)
  const wsBase = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
  const seconds = (ms) => (ms / 1000).toFixed(1) + ' s'
  const tone = (code) => code === 101 || code === 1000 ? 'ok' : code === 1006 ? 'warn' : 'bad'

  function make (tag, className, text) {
    const node = document.createElement(tag)
    if (className) node.className = className
    if (text !== undefined) node.textContent = text
    return node
  }

  async function api (method, path, body) {
    const init = body === undefined ? { method } : { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
    const response = await fetch(path, init)
    const answer = await response.json()
    if (!response.ok) throw new Error(answer.message || method + ' ' + path + ' answered ' + response.status)
    return answer
  }

  function offered (scenario, token) {
    if (scenario.offer === 'appOnly') return ['lab.v1']
    if (scenario.offer === 'tokenOnly') return ['bearer.' + token]
    // What an app does: the app protocol, and the token as bearer.<token>.
    return bearerProtocols(token, 'lab.v1')
  }

  // A WebSocket as page JavaScript sees it: whether it opened, its messages, its close.
  function watch (url, protocols) {
    const started = performance.now()
    const socket = new WebSocket(url, protocols)
    const seen = { opened: false, protocol: '', messages: [], close: null, ms: 0 }
    const waiting = new Set()
    const changed = () => { for (const check of [...waiting]) check() }
    socket.onopen = () => { seen.opened = true; seen.protocol = socket.protocol; changed() }
    socket.onmessage = (event) => { seen.messages.push(JSON.parse(event.data)); changed() }
    socket.onclose = (event) => { seen.close = { code: event.code, reason: event.reason }; seen.ms = performance.now() - started; changed() }
    // Resolves once done(seen) holds or the socket has closed; 10 s at most.
    const until = (done) => new Promise((resolve) => {
      const timer = setTimeout(() => { waiting.delete(check); resolve(seen) }, 10000)
      const check = () => {
        if (!done(seen) && seen.close === null) return
        waiting.delete(check)
        clearTimeout(timer)
        resolve(seen)
      }
      waiting.add(check)
      check()
    })
    const message = async (type) => {
      const find = () => seen.messages.find((message) => message.type === type)
      await until(() => find() !== undefined)
      return find()
    }
    return { socket, seen, until, message, closed: () => until(() => false) }
  }

  // Scenarios the lab page plays itself.
  async function inPage (scenario, run) {
    const url = wsBase + '/lab/close/' + scenario.variant + '?run=' + run.id + '&as=page'
    const main = watch(url, offered(scenario, run.token))
    await main.until((seen) => seen.opened)
    // The same request, now, against the route's twin that answers over HTTP.
    const http = api('POST', '/lab/runs/' + run.id + '/replay')
    const notes = []
    const welcome = await main.message('welcome')
    if (welcome !== undefined) {
      notes.push('101 (' + main.seen.protocol + '), then "welcome, ' + welcome.sub + '"')
      if (scenario.variant === 'refresh') await refresh(scenario, run, url, main, welcome, notes)
      main.socket.close(1000, 'done')
      notes.push('closed by the page')
    } else if (main.seen.opened) {
      notes.push('101 (' + main.seen.protocol + '), then closed at once: the route never ran')
    } else {
      notes.push('no 101: refused over HTTP, which page JavaScript cannot read')
    }
    return { seen: await main.closed(), notes, http: await http }
  }

  async function refresh (scenario, run, url, main, welcome, notes) {
    notes.push('its token expires in ' + seconds(welcome.exp * 1000 - Date.now()))
    // The same token on a second socket that is never refreshed: what the refresh avoids.
    const control = watch(url.replace('as=page', 'as=control'), offered(scenario, run.token))
    const { token } = await api('POST', '/lab/runs/' + run.id + '/token')
    const sent = performance.now()
    main.socket.send(token)
    const refreshed = await main.message('refreshed')
    if (refreshed === undefined) return notes.push('the fresh token was refused')
    notes.push('fresh token sent, wsRefresh() done in ' + Math.round(performance.now() - sent) + ' ms')
    const { close, ms } = await control.closed()
    notes.push('same token, no refresh: ' + close.code + ' ' + close.reason + ' after ' + seconds(ms))
    await sleep(400)
    notes.push(main.socket.readyState === WebSocket.OPEN ? 'refreshed socket: still open past the old exp' : 'refreshed socket: closed as well')
  }

  // The page on the demo's second port connects, in a hidden frame, and posts back what it saw.
  async function inForeignPage (scenario, run) {
    const frame = make('iframe', 'probe')
    frame.title = 'the page on the second port'
    const answered = new Promise((resolve) => {
      const onMessage = (event) => {
        if (event.source !== frame.contentWindow || event.data?.run !== run.id) return
        removeEventListener('message', onMessage)
        resolve(event.data)
      }
      addEventListener('message', onMessage)
    })
    frame.src = '/lab/foreign?run=' + run.id
    document.body.append(frame)
    const result = await Promise.race([answered, sleep(10000).then(() => { throw new Error('the page on the second port did not answer') })])
    frame.remove()
    const notes = ['from ' + result.origin + ', with a valid token']
    notes.push(result.seen.opened ? '101 (' + result.seen.protocol + '), then closed at once: the route never ran' : 'no 101: refused over HTTP')
    return { seen: result.seen, notes, http: await api('POST', '/lab/runs/' + run.id + '/replay') }
  }

  // The demo server plays the silent client (a browser cannot) and reports what it saw.
  async function inServer (scenario, run) {
    const outcome = await api('POST', '/lab/runs/' + run.id + '/silent')
    const code = outcome.closeFrames === 0 ? 1006 : '?'
    const notes = [
      outcome.answer.status + ' (' + outcome.answer.protocol + '), then not a byte sent',
      outcome.pings + ' pings, none answered',
      'cut ' + seconds(outcome.silentMs) + ' after the 101, ' + (outcome.closeFrames === 0 ? 'no close frame: a WebSocket API says 1006' : 'with a close frame')
    ]
    return { seen: { opened: true, close: { code, reason: '' } }, notes, http: outcome.answer }
  }

  const players = { page: inPage, foreign: inForeignPage, server: inServer }

  function renderSeen (box, result) {
    const { code, reason } = result.seen.close
    const answer = make('div', 'answer')
    answer.append(make('span', 'code ' + tone(code), String(code)), make('span', reason ? 'reason' : 'reason empty', reason || 'no reason'))
    const notes = make('ul', 'notes')
    for (const note of result.notes) notes.append(make('li', '', note))
    box.replaceChildren(answer, notes)
  }

  function renderHttp (box, http) {
    const answer = make('div', 'answer')
    answer.append(make('span', 'code ' + tone(http.status), String(http.status)), make('span', 'status-text', http.statusText))
    box.replaceChildren(answer)
    if (http.code) box.append(make('code', 'error-code', http.code))
    if (http.message) box.append(make('p', 'message', http.message))
    if (http.protocol) box.append(make('p', 'header', 'Sec-WebSocket-Protocol: ' + http.protocol))
    // Its error_description repeats the message.
    if (http.wwwAuthenticate) box.append(make('p', 'header', 'WWW-Authenticate: ' + http.wwwAuthenticate.split(', error_description')[0]))
  }

  // One entry per distinct line; the requests that wrote it by role: page, twin, control, foreign, silent.
  function renderLog (box, lines) {
    if (lines.length === 0) return box.replaceChildren(make('p', 'idle', 'no line'))
    const entries = new Map()
    for (const line of lines) {
      const guard = line.wsGuard !== undefined
      const code = guard ? line.wsGuard.code : line.wsDemo.event + (line.wsDemo.reason ? ' · ' + line.wsDemo.reason + ' ' + line.wsDemo.code : '')
      const key = code + ' ' + line.msg
      const entry = entries.get(key) || { guard, code, status: guard ? String(line.wsGuard.statusCode) : '', msg: line.msg, roles: [], raw: [] }
      entry.roles.push(line.reqId.split('.')[1])
      entry.raw.push(JSON.stringify(line))
      entries.set(key, entry)
    }
    const list = make('ol', 'lines')
    for (const entry of entries.values()) {
      const item = make('li', 'line')
      item.title = entry.raw.join('\\n')
      const head = make('div', 'line-head')
      head.append(make('span', 'who ' + (entry.guard ? 'guard' : 'demo'), entry.guard ? 'guard' : 'demo'), make('span', 'line-code', entry.code))
      if (entry.status) head.append(make('span', 'line-status', entry.status))
      head.append(make('span', 'line-roles', entry.roles.join(' + ')))
      item.append(head, make('span', 'line-msg', entry.msg))
      list.append(item)
    }
    box.replaceChildren(list)
  }

  function verdict (scenario, result) {
    if (scenario.variant === 'silent') return ['cut by the read deadline', 'warn']
    if (result.http.status !== 101) return ['refused · ' + result.http.status, 'bad']
    return [scenario.variant === 'refresh' ? 'refreshed' : 'accepted', 'ok']
  }

  async function play (card, scenario) {
    const button = card.querySelector('.run')
    const [seenBox, httpBox, logBox] = card.querySelectorAll('.result')
    const badge = card.querySelector('.badge')
    button.disabled = true
    card.dataset.state = 'running'
    delete card.dataset.tone
    badge.hidden = true
    for (const box of [seenBox, httpBox, logBox]) box.replaceChildren(make('p', 'idle', 'running…'))
    try {
      const run = await api('POST', '/lab/runs', { scenario: scenario.id })
      const result = await players[scenario.client](scenario, run)
      renderSeen(seenBox, result)
      renderHttp(httpBox, result.http)
      // The server logs a close as it sees it: give the last line a moment.
      await sleep(200)
      renderLog(logBox, (await api('GET', '/lab/runs/' + run.id + '/logs')).lines)
      const [text, kind] = verdict(scenario, result)
      badge.textContent = text
      badge.className = 'badge ' + kind
      badge.hidden = false
      card.dataset.tone = kind
      card.dataset.state = 'done'
    } catch (err) {
      card.dataset.state = 'failed'
      seenBox.replaceChildren(make('p', 'failed', String(err.message || err)))
    } finally {
      button.disabled = false
      updateStats()
    }
  }

  const cards = new Map()
  for (const scenario of scenarios) {
    const card = document.querySelector('[data-scenario="' + scenario.id + '"]')
    cards.set(scenario.id, card)
    card.querySelector('.run').onclick = () => play(card, scenario)
  }
  const runAll = document.getElementById('run-all')
  runAll.onclick = async () => {
    runAll.disabled = true
    for (const scenario of scenarios) await play(cards.get(scenario.id), scenario)
    runAll.disabled = false
  }

  // app.wsGuard.stats(), live.
  const statsState = document.getElementById('stats-state')
  async function updateStats () {
    let stats
    try {
      stats = await api('GET', '/lab/stats')
    } catch {
      statsState.dataset.state = 'stopped'
      statsState.textContent = 'server stopped'
      return
    }
    statsState.dataset.state = 'live'
    statsState.textContent = 'live'
    const rejected = Object.entries(stats.rejected).sort((a, b) => b[1] - a[1])
    document.getElementById('stat-open').textContent = stats.open
    document.getElementById('stat-accepted').textContent = stats.accepted
    document.getElementById('stat-rejected').textContent = rejected.reduce((sum, [, n]) => sum + n, 0)
    const list = (entries, empty) => {
      if (entries.length === 0) return [make('li', 'none', empty)]
      return entries.map(([name, n]) => {
        const item = make('li', n === 0 ? 'zero' : '')
        item.dataset.key = name
        item.append(make('span', 'name', name.replace('FST_WS_GUARD_', '')), make('span', 'count', String(n)))
        item.title = name
        return item
      })
    }
    document.getElementById('stat-rejected-codes').replaceChildren(...list(rejected, 'none yet'))
    document.getElementById('stat-closed').replaceChildren(...list(Object.entries(stats.closed), ''))
  }
  updateStats()
  setInterval(updateStats, 1000)

  // The chat: the guarded route /chat, with the default rejectWith: 'http'.
  const chat = {
    status: document.getElementById('chat-status'),
    log: document.getElementById('chat-log'),
    form: document.getElementById('chat-form'),
    input: document.getElementById('chat-text'),
    again: document.getElementById('chat-again'),
    hint: document.getElementById('chat-hint')
  }
  const name = 'guest-' + Math.random().toString(36).slice(2, 6)
  let socket = null
  const chatStatus = (state, text) => { chat.status.dataset.state = state; chat.status.textContent = text }
  const show = (from, text) => {
    const line = make('p', from === 'server' ? 'server' : '')
    line.append(make('b', '', from + ': '), text)
    chat.log.append(line)
    chat.log.scrollTop = chat.log.scrollHeight
  }
  async function connect () {
    chat.again.hidden = true
    chat.hint.hidden = true
    chatStatus('connecting', 'connecting…')
    let token
    try {
      ({ token } = await api('GET', '/dev-token?name=' + name))
    } catch (err) {
      chatStatus('closed', 'no token: ' + (err.message || err))
      chat.again.hidden = false
      return
    }
    // Browsers cannot set headers on a WebSocket: the token rides in the subprotocol list,
    // and the server selects chat.v1, never the token.
    socket = new WebSocket(wsBase + '/chat', bearerProtocols(token, 'chat.v1'))
    socket.onopen = () => chatStatus('open', 'connected as ' + name + ' · protocol ' + socket.protocol)
    socket.onmessage = (event) => { const { from, text } = JSON.parse(event.data); show(from, text) }
    socket.onclose = (event) => {
      chatStatus('closed', 'closed: ' + event.code + (event.reason ? ' ' + event.reason : ''))
      // /chat refuses over HTTP, which page JavaScript cannot read: the lab shows both.
      chat.hint.hidden = event.code !== 1006
      chat.again.hidden = false
    }
  }
  chat.again.onclick = connect
  chat.form.onsubmit = (event) => {
    event.preventDefault()
    if (chat.input.value !== '' && socket?.readyState === WebSocket.OPEN) socket.send(chat.input.value)
    chat.input.value = ''
  }
  connect()
`

/** The demo's page: the handshake lab beside the chat. */
export function demoPage (scenarios: readonly Scenario[]): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastify-ws-guard · handshake lab</title>
<link rel="icon" href="data:,">
<style>${styles}</style>
</head>
<body>
<header class="top">
  <div class="wrap">
    <h1>fastify-ws-guard <span>· handshake lab</span></h1>
    <p class="lede">Every refusal says why. Each scenario connects to a lab route that refuses with a close frame
    page JavaScript can read (<code>rejectWith: 'close'</code>), replays the same handshake against its twin that
    answers over HTTP (<code>rejectWith: 'http'</code>), and shows the log lines of both.</p>
    <nav class="jump"><a href="#lab-title">Scenarios</a><a href="#chat-title">Chat</a><a href="#stats-title">Stats</a></nav>
  </div>
</header>
<main class="layout">
  <section class="lab" aria-labelledby="lab-title">
    <div class="lab-head">
      <h2 id="lab-title">Scenarios</h2>
      <button type="button" id="run-all" class="primary">Run all</button>
    </div>
    <div class="cards">${scenarios.map(card).join('')}
    </div>
  </section>
  <aside class="side">
    <section class="panel" aria-labelledby="chat-title">
      <div class="panel-head"><h2 id="chat-title">Chat <code>/chat</code></h2><span class="pill">rejectWith: 'http'</span></div>
      <p class="chat-status" id="chat-status" data-state="connecting">connecting…</p>
      <div class="chat-log" id="chat-log" role="log" aria-live="polite"></div>
      <form class="chat-form" id="chat-form">
        <input id="chat-text" autocomplete="off" placeholder="say something" aria-label="message">
        <button>Send</button>
      </form>
      <p class="hint" id="chat-hint" hidden>1006 and no reason: /chat refuses over HTTP, which page JavaScript cannot read. The lab shows what it said.</p>
      <p class="hint"><button type="button" id="chat-again" hidden>Reconnect</button></p>
    </section>
    <section class="panel" aria-labelledby="stats-title">
      <div class="panel-head"><h2 id="stats-title"><code>app.wsGuard.stats()</code></h2><span class="pill" id="stats-state">…</span></div>
      <div class="figures">
        <div class="figure"><b id="stat-open">0</b><span>open</span></div>
        <div class="figure"><b id="stat-accepted">0</b><span>accepted</span></div>
        <div class="figure"><b id="stat-rejected">0</b><span>rejected</span></div>
      </div>
      <div class="counts">
        <h3>rejected, by code</h3><ul id="stat-rejected-codes"></ul>
        <h3>closed, by reason</h3><ul id="stat-closed"></ul>
      </div>
    </section>
  </aside>
</main>
<footer>Everything on this page is served by the demo. Ctrl-C in its terminal closes it gracefully: open sockets get 1001 <i>server shutting down</i>.</footer>
<script type="application/json" id="scenarios">${scriptJson(scenarios)}</script>
<script type="module">${script}</script>
</body>
</html>
`
}

/** The page on the demo's second port: another origin, trying the lab route with a valid token. */
export function foreignPage (mainOrigin: string): string {
  const target = `${mainOrigin.replace(/^http/, 'ws')}/lab/close/handshake`
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastify-ws-guard · a page on another origin</title>
<link rel="icon" href="data:,">
<style>${styles} main { max-width: 40rem; margin: 2rem auto; padding: 0 1rem }</style>
</head>
<body>
<main class="panel">
  <h2>A page on another origin</h2>
  <p>This page is <b id="origin"></b>. It opens a WebSocket to <code>${escapeHtml(target)}</code> with a valid
  token: the guard's same-origin default refuses it, before any token is looked at.</p>
  <p class="chat-status" id="result" data-state="connecting">connecting…</p>
</main>
<script type="application/json" id="config">${scriptJson({ mainOrigin, target })}</script>
<script type="module">
  import { bearerProtocols } from '/client.js'
  const { mainOrigin, target } = JSON.parse(document.getElementById('config').textContent)
  const result = document.getElementById('result')
  document.getElementById('origin').textContent = location.origin
  const run = new URLSearchParams(location.search).get('run')
  const url = target + (run ? '?run=' + encodeURIComponent(run) + '&as=foreign' : '')
  const { token } = await (await fetch('/token')).json()
  const seen = { opened: false, protocol: '', close: null, ms: 0 }
  const started = performance.now()
  const socket = new WebSocket(url, bearerProtocols(token, 'lab.v1'))
  socket.onopen = () => { seen.opened = true; seen.protocol = socket.protocol }
  socket.onclose = (event) => {
    seen.close = { code: event.code, reason: event.reason }
    seen.ms = performance.now() - started
    result.dataset.state = 'closed'
    result.textContent = 'closed: ' + event.code + ' ' + event.reason
    if (window.parent !== window) window.parent.postMessage({ type: 'ws-guard-lab', run, origin: location.origin, seen }, mainOrigin)
  }
</script>
</body>
</html>
`
}
