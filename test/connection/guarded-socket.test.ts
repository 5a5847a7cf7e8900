import { once } from 'node:events'
import { test } from 'tap'
import wsGuard from '../../index.js'
import { countingEcho, startApp } from '../helpers/app.js'
import { nextMessage, openClient } from '../helpers/clients.js'
import { rawUpgrade } from '../helpers/raw.js'
import { waitFor } from '../helpers/wait.js'

/* The guard's socket class keeps ws's errors inside the connection they belong to. */

test('an error on a socket whose app removed every error listener ends that connection, not the process', async (t) => {
  const { app, port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/bare', (socket) => { socket.removeAllListeners('error') })
    app.wsRoute('/echo', countingEcho().handler)
  })
  const socket = await rawUpgrade(t, port, '/bare')
  socket.resume()
  // An unmasked text frame: ws refuses it with an 'error' no one listens to.
  socket.write(Buffer.from([0x81, 0x02, 0x68, 0x69]))
  await once(socket, 'close')
  await waitFor(() => app.wsGuard.stats().open === 0, 'the connection to be counted closed')
  t.equal(app.wsGuard.stats().closed.error, 1, 'counted as an error')
  const echo = await openClient(t, url('/echo'))
  echo.send('still here')
  t.equal(await nextMessage(echo), 'still here', 'the process still serves')
})
