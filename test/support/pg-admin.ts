import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * Throw-away PostgreSQL databases for tests and benchmarks. Each is named
 * `mr_<prefix><random>[_i]` (`.ci/run` drops old ones a killed run left) and
 * created through an existing database, the admin URL.
 */

/** Connects to an existing database in order to create throw-away ones. */
export const PG_ADMIN_URL =
  process.env.MILLRACE_BENCH_PG_URL ?? process.env.MILLRACE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** The URL of database `db` on the admin URL's server. */
export function pgUrlFor(db: string): string {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${db}`;
  return u.toString();
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Creates `n` fresh, empty databases sharing one random name; returns their names. */
export async function createPgDatabases(n: number, prefix = ''): Promise<string[]> {
  const base = `mr_${prefix}${randomBytes(5).toString('hex')}`;
  const names = n === 1 ? [base] : Array.from({ length: n }, (_, i) => `${base}_${i}`);
  await admin(async (c) => {
    for (const name of names) await c.query(`CREATE DATABASE ${name}`);
  });
  return names;
}

export async function dropPgDatabases(names: readonly string[]): Promise<void> {
  await admin(async (c) => {
    for (const name of names) await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
}
