#!/usr/bin/env node
/**
 * The checks `npm test` runs before the test suite, in two lanes at once: the type-aware
 * lint (about a minute of one core) beside everything else (dependency check, format check,
 * both type checks, buf lint: about as much, one after another). Each lane stops at its first
 * failure; the other lane still finishes, so one run reports both. Each step's output is
 * printed whole once it ends, so the two lanes never interleave lines.
 *
 *   node tools/gate.js      (npm run gate)
 */
import { spawn } from 'node:child_process';

const LANES = [['lint'], ['lint:deps', 'format:check', 'typecheck', 'lint:proto']];

/** Runs `npm run <script>`, buffering its output; resolves with its exit code. */
function run(script) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn('npm', ['run', '--silent', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', (err) => {
      out += `${err.message}\n`;
    });
    child.on('close', (code, signal) => {
      const s = ((Date.now() - started) / 1000).toFixed(1);
      const ok = code === 0;
      process.stdout.write(`\n== npm run ${script}: ${ok ? 'ok' : `FAILED (${signal ?? code})`} in ${s} s ==\n${out}`);
      resolve(ok ? 0 : (code ?? 1));
    });
  });
}

async function lane(scripts) {
  for (const s of scripts) {
    const code = await run(s);
    if (code !== 0) return code;
  }
  return 0;
}

const codes = await Promise.all(LANES.map(lane));
process.exitCode = codes.find((c) => c !== 0) ?? 0;
