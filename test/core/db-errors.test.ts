import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toGrpcError } from '../../src/api/grpc/server.js';
import { toHttpError } from '../../src/api/http/http-errors.js';
import { toMillraceError } from '../../src/core/errors.js';
import { createPgDatabases, dropPgDatabases, pgUrlFor } from '../support/env.js';

/** The error a statement gets from a real PostgreSQL server. */
async function pgError(c: pg.Client, sql: string): Promise<unknown> {
  try {
    await c.query(sql);
  } catch (err) {
    // The caller gets the error below; a ROLLBACK that fails means the connection is gone.
    await c.query('ROLLBACK').catch(() => {});
    return err;
  }
  throw new Error(`no error from: ${sql}`);
}

const raise = (code: string) => `DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '${code}'; END $$`;

describe('database errors reach clients classified, never as internal', () => {
  let db: string;
  let c: pg.Client;
  let other: pg.Client;
  beforeAll(async () => {
    [db] = (await createPgDatabases(1)) as [string];
    c = new pg.Client({ connectionString: pgUrlFor(db) });
    other = new pg.Client({ connectionString: pgUrlFor(db) });
    await c.connect();
    await other.connect();
    await c.query('CREATE TABLE t (k TEXT PRIMARY KEY, n NUMERIC(4, 0))');
    await c.query("INSERT INTO t VALUES ('a', 1)");
  });
  afterAll(async () => {
    // Teardown: the connections may already be gone (one of them is killed by a test).
    await c?.end().catch(() => {});
    await other?.end().catch(() => {});
    if (db) await dropPgDatabases([db]);
  });

  it('server errors: races, timeouts, shutdown and resources are unavailable (503, retryable, Retry-After); bad values 4xx', async () => {
    const cases: Array<[string, () => Promise<unknown>, string, number]> = [
      ['deadlock 40P01', () => pgError(c, raise('40P01')), 'unavailable', 503],
      ['serialization 40001', () => pgError(c, raise('40001')), 'unavailable', 503],
      [
        'lock not available 55P03',
        async () => {
          await other.query('BEGIN');
          await other.query("SELECT * FROM t WHERE k = 'a' FOR UPDATE");
          await c.query('BEGIN');
          const e = await pgError(c, "SELECT * FROM t WHERE k = 'a' FOR UPDATE NOWAIT");
          await other.query('ROLLBACK');
          return e;
        },
        'unavailable',
        503,
      ],
      [
        'statement timeout 57014',
        async () => {
          await c.query('BEGIN');
          await c.query("SET LOCAL statement_timeout = '10ms'");
          return pgError(c, 'SELECT pg_sleep(5)');
        },
        'unavailable',
        503,
      ],
      ['admin shutdown 57P01', () => pgError(c, raise('57P01')), 'unavailable', 503],
      ['too many connections 53300', () => pgError(c, raise('53300')), 'unavailable', 503],
      ['connection failure 08006', () => pgError(c, raise('08006')), 'unavailable', 503],
      ['unique violation 23505', () => pgError(c, "INSERT INTO t VALUES ('a', 2)"), 'conflict', 409],
      ['numeric overflow 22003', () => pgError(c, "INSERT INTO t VALUES ('b', 123456)"), 'overflow', 422],
      ['division by zero 22012', () => pgError(c, 'SELECT 1 / 0'), 'bad_request', 400],
    ];
    for (const [what, make, code, status] of cases) {
      const err = await make();
      const e = toMillraceError(err);
      expect(e.code, what).toBe(code);
      expect(toHttpError(err).httpStatus, what).toBe(status);
      if (code === 'unavailable') {
        expect(e.retryable, what).toBe(true);
        expect(e.retryAfterS, what).toBeGreaterThan(0);
        const g = toGrpcError(err);
        expect(g.code, what).toBe(14); // UNAVAILABLE
        expect(g.metadata?.get('retry-after'), what).toEqual(['1']);
      }
    }
  });

  it('a connection killed by the server, or refused, is unavailable', async () => {
    const victim = new pg.Client({ connectionString: pgUrlFor(db) });
    victim.on('error', () => {});
    await victim.connect();
    const pid = (await victim.query<{ p: number }>('SELECT pg_backend_pid() AS p')).rows[0]!.p;
    await other.query('SELECT pg_terminate_backend($1)', [pid]);
    const killed = await victim.query('SELECT 1').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(killed).toBeDefined();
    expect(toMillraceError(killed).code).toBe('unavailable');
    // The backend was terminated above, so ending its client may fail; the test is done with it.
    await victim.end().catch(() => {});

    const refused = new pg.Client({ host: '127.0.0.1', port: 1, user: 'postgres', connectionTimeoutMillis: 2000 });
    const err = await refused.connect().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(toMillraceError(err).code).toBe('unavailable');
    expect(toHttpError(err).httpStatus).toBe(503);
  });

  it('errors that are not from a database stay internal', () => {
    expect(toMillraceError(new TypeError('x is undefined')).code).toBe('internal');
  });
});
