/**
 * `npm run bench -- <name>` runs bench/<name>.ts; without a name, every
 * benchmark in bench/ in alphabetical order. Each module exports
 * `run(): Promise<void>` and prints its own figures. Scripts a benchmark runs
 * as child processes live in bench/children/, which is not scanned.
 */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const NOT_BENCHMARKS = new Set(['run', 'support']);

function available(): string[] {
  return readdirSync(here)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => f.slice(0, -3))
    .filter((n) => !NOT_BENCHMARKS.has(n))
    .sort();
}

async function main(): Promise<void> {
  const all = available();
  const asked = process.argv.slice(2).filter((a) => a !== '--');
  const names = asked.length ? asked : all;
  for (const n of names) {
    if (!all.includes(n)) {
      process.stderr.write(`unknown benchmark "${n}"; available: ${all.join(', ') || '(none)'}\n`);
      process.exit(2);
    }
  }
  for (const n of names) {
    const mod = (await import(pathToFileURL(join(here, `${n}.ts`)).href)) as { run?: () => Promise<void> };
    if (typeof mod.run !== 'function') {
      process.stderr.write(`bench/${n}.ts does not export run()\n`);
      process.exit(2);
    }
    process.stdout.write(`\n== bench ${n} ==\n`);
    await mod.run();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
