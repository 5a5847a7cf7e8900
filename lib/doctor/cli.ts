#!/usr/bin/env node
import { runCli } from './index.js'

const code = await runCli(process.argv.slice(2), process)
process.exitCode = code
// A DNS lookup that timed out may still hold a libuv thread: exit once stdout is flushed.
process.stdout.write('', () => process.exit(code))
