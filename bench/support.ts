import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createPgDatabases, dropPgDatabases } from '../test/support/pg-admin.js';

/**
 * Benchmark helpers: scratch directories on the real disk (not tmpfs, so fsync
 * costs what it costs), throw-away PostgreSQL databases, memory sampling and a
 * plain-text table.
 */

export { PG_ADMIN_URL, pgUrlFor } from '../test/support/pg-admin.js';

/** Creates a fresh, empty PostgreSQL database; returns its name. */
export async function createPgDatabase(): Promise<string> {
  return (await createPgDatabases(1, 'bench_'))[0]!;
}

export async function dropPgDatabase(name: string): Promise<void> {
  await dropPgDatabases([name]);
}

/** A scratch directory under ./.bench-tmp (git-ignored); removed by `cleanup`. */
export function scratchDir(): { dir: string; cleanup: () => void } {
  const root = resolve('.bench-tmp');
  mkdirSync(root, { recursive: true });
  const dir = mkdtempSync(join(root, 'run-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Samples the resident set size while a measurement runs; reports the peak. */
export class RssSampler {
  peak = process.memoryUsage.rss();
  private readonly timer: NodeJS.Timeout;
  constructor(intervalMs = 50) {
    this.timer = setInterval(() => {
      const r = process.memoryUsage.rss();
      if (r > this.peak) this.peak = r;
    }, intervalMs);
    this.timer.unref();
  }
  stop(): number {
    clearInterval(this.timer);
    const r = process.memoryUsage.rss();
    if (r > this.peak) this.peak = r;
    return this.peak;
  }
}

export const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MB`;

/** Runs `total` tasks with at most `concurrency` in flight. */
export async function pool(
  total: number,
  concurrency: number,
  task: (i: number, worker: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, total) }, async (_, w) => {
    while (next < total) {
      const i = next++;
      await task(i, w);
    }
  });
  await Promise.all(workers);
}

export const rate = (events: number, ms: number): number => (events * 1000) / ms;

export function fmtRate(r: number): string {
  return Math.round(r).toLocaleString('en-US');
}

/** Prints rows as an aligned text table (first and last columns left-aligned, the rest right-aligned). */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const last = header.length - 1;
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 || i === last ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const r of rows) process.stdout.write(`${line(r)}\n`);
}
