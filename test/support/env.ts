import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig, type Config, type ConfigInput } from '../../src/core/config.js';
import { createPgDatabases, dropPgDatabases, pgUrlFor } from './pg-admin.js';

export type Dialect = 'sqlite' | 'postgres';

/** Dialects under test; narrow with MILLRACE_TEST_DIALECTS=sqlite (PostgreSQL tests never skip silently). */
export const DIALECTS: Dialect[] = (process.env.MILLRACE_TEST_DIALECTS ?? 'sqlite,postgres')
  .split(',')
  .map((s) => s.trim())
  .filter((s): s is Dialect => s === 'sqlite' || s === 'postgres');

export { PG_ADMIN_URL, pgUrlFor, createPgDatabases, dropPgDatabases } from './pg-admin.js';

/** Splits the SHA-1 space into n equal ranges, as hex prefixes. */
export function evenRanges(n: number): Array<{ from: string; to?: string }> {
  const space = 1n << 160n;
  return Array.from({ length: n }, (_, i) => {
    const from = ((space * BigInt(i)) / BigInt(n)).toString(16).padStart(40, '0');
    const to = i === n - 1 ? undefined : ((space * BigInt(i + 1)) / BigInt(n)).toString(16).padStart(40, '0');
    return to === undefined ? { from } : { from, to };
  });
}

export interface TestEnv {
  dialect: Dialect;
  /** Raw config input, to build variants (e.g. a second node). */
  input: ConfigInput;
  config: Config;
  dataDir: string;
  pgDatabases: string[];
  cleanup(): Promise<void>;
}

/** A fresh, empty storage for one test: temp files, or new PostgreSQL databases. */
export async function createTestEnv(
  dialect: Dialect,
  opts: { shards?: number; extra?: Partial<ConfigInput> } = {},
): Promise<TestEnv> {
  const n = opts.shards ?? 1;
  const dataDir = mkdtempSync(join(tmpdir(), 'millrace-test-'));
  let pgDatabases: string[] = [];
  const ranges = evenRanges(n);
  let shards: Array<Record<string, unknown>>;
  if (dialect === 'postgres') {
    pgDatabases = await createPgDatabases(n);
    shards = pgDatabases.map((db, i) => ({ name: `s${i}`, url: pgUrlFor(db), ...ranges[i] }));
  } else {
    shards = ranges.map((r, i) => ({ name: `s${i}`, ...r }));
  }
  const extra = (opts.extra ?? {}) as Record<string, unknown>;
  const input = {
    node_id: `test-${randomBytes(3).toString('hex')}`,
    data_dir: dataDir,
    http: { port: 0 },
    grpc: { enabled: false, port: 0 },
    logging: { level: 'silent' },
    log: { poll_ms: 50 },
    scheduler: { poll_ms: 50 },
    ...extra,
    storage: { dialect, shards, ...((extra.storage as object) ?? {}) },
  } as ConfigInput;
  const config = buildConfig(input);
  return {
    dialect,
    input,
    config,
    dataDir,
    pgDatabases,
    cleanup: async () => {
      if (pgDatabases.length) await dropPgDatabases(pgDatabases);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function waitFor<T>(
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
