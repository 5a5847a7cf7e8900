import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { build } from 'esbuild'
import { test } from 'tap'

/*
 * What `import { connect } from 'fastify-ws-guard/client'` adds to a browser bundle, measured
 * on the built dist/client.js (npm test builds before tap runs): at most 2 KiB minified and
 * gzipped, and nothing from Node.
 */

const root = fileURLToPath(new URL('../../', import.meta.url))
const budget = 2048

test('connect() costs at most 2 KiB minified and gzipped, and imports nothing from Node', async (t) => {
  t.ok(existsSync(`${root}dist/client.js`), 'dist/client.js is built (npm run build)')
  const result = await build({
    stdin: { contents: "export { connect } from './dist/client.js'", resolveDir: root, sourcefile: 'entry.js' },
    bundle: true,
    minify: true,
    format: 'esm',
    // A browser build: a Node import would fail it.
    platform: 'browser',
    write: false,
    metafile: true,
    logLevel: 'silent'
  })
  const [output] = result.outputFiles
  const gzipped = gzipSync(output!.contents).length
  t.comment(`connect(): ${output!.contents.length} bytes minified, ${gzipped} bytes gzipped (budget ${budget})`)
  t.ok(gzipped <= budget, `${gzipped} bytes gzipped, within ${budget}`)
  t.same(Object.keys(result.metafile.inputs).filter((input) => input !== 'entry.js'), ['dist/client.js'], 'one file: a page can import it as it is')
})
