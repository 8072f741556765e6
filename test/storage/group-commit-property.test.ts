import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMillraceError } from '../../src/core/errors.js';
import { parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';
import { GroupCommitter, MAX_TX_ATTEMPTS } from '../../src/storage/group-commit.js';
import type { DialectCapabilities, Queryable, ShardDriver, Tx, WriteConnection } from '../../src/storage/port.js';
import { Runtime } from '../../src/runtime.js';
import type { Shard } from '../../src/storage/storage.js';
import { createTestEnv, type TestEnv } from '../support/env.js';

/**
 * Properties of the group committer over random batches of callers with
 * injected failures:
 *  - every caller settles, once;
 *  - a caller that resolved has its writes committed exactly once, and its
 *    onCommit hooks ran once; each of its other attempts ran its onRollback hooks;
 *  - a caller that was rejected wrote nothing and no onCommit hook of it ran;
 *  - a caller that only lost races (deadlock 40P01, serialization failure
 *    40001, fewer times than the committer retries) resolves: failing callers
 *    do not harm the others.
 */

interface Plan {
  /** Rows the caller writes, one statement each. */
  rows: number;
  /** How many of its attempts lose a race, and at which statement (index into its statements, may be past the last). */
  races: number;
  raceCode: '40P01' | '40001';
  at: number;
  /** The caller fails for good at statement `at` (a thrown error, or a failed statement it swallows). */
  fatal: 'none' | 'throw' | 'swallow';
  /** Declared lock keys (names of a few shared things). */
  keys: number[];
  /** A one-statement write (`submitStatement`), where the harness has them: its races and failure are raised by the statement. */
  one?: boolean;
}

const planArb: fc.Arbitrary<Plan> = fc.record({
  rows: fc.integer({ min: 1, max: 3 }),
  races: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 1, max: 3 })),
  raceCode: fc.constantFrom('40P01' as const, '40001' as const),
  at: fc.integer({ min: 0, max: 3 }),
  fatal: fc.constantFrom('none' as const, 'none' as const, 'none' as const, 'throw' as const, 'swallow' as const),
  keys: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }),
});

interface Trace {
  attempts: number;
  commits: number;
  rollbacks: number;
  settled: number;
  outcome?: 'ok' | 'error';
  error?: unknown;
}

/** The two ways a dialect under test lets a caller write a row, lose a race, and fail. */
interface Harness {
  write(tag: string, fn: (tx: Tx) => Promise<void>, keys: string[]): Promise<void>;
  put(tx: Tx, tag: string, i: number): Promise<void>;
  /** A statement the database answers with `code` (the transaction is then aborted). */
  raise(tx: Tx, code: string): Promise<void>;
  /** Rows stored per caller tag. */
  stored(prefix: string): Promise<Map<string, number>>;
  /** A one-statement write of `plan` (its rows, its races and failure raised by the statement itself); counts its attempts in `trace`. */
  writeOne?(tag: string, plan: Plan, keys: string[], trace: Trace): Promise<void>;
}

async function runScenario(h: Harness, run: number, plans: Plan[]): Promise<void> {
  const prefix = `r${run}/`;
  const traces = plans.map((): Trace => ({ attempts: 0, commits: 0, rollbacks: 0, settled: 0 }));
  const fn =
    (i: number) =>
    async (tx: Tx): Promise<void> => {
      const p = plans[i]!;
      const t = traces[i]!;
      const attempt = ++t.attempts;
      tx.onCommit(() => t.commits++);
      tx.onRollback(() => t.rollbacks++);
      for (let s = 0; s <= p.rows; s++) {
        if (s === p.at) {
          if (attempt <= p.races) {
            // Half the time the database itself raises it; else the caller's code sees it and throws.
            if (attempt % 2 === 1) await h.raise(tx, p.raceCode);
            else throw Object.assign(new Error(`lost a race (${p.raceCode})`), { code: p.raceCode });
          }
          if (p.fatal === 'throw') throw new Error(`caller ${i} fails`);
          // Swallowed on purpose: the property is that a caught statement error still fails the transaction.
          if (p.fatal === 'swallow') await h.raise(tx, '22012').catch(() => {});
        }
        if (s < p.rows) await h.put(tx, `${prefix}${i}`, s);
      }
    };
  await Promise.all(
    plans.map((p, i) =>
      (p.one === true && h.writeOne !== undefined
        ? h.writeOne(
            `${prefix}${i}`,
            p,
            p.keys.map((k) => `key/${k}`),
            traces[i]!,
          )
        : h.write(
            `${prefix}${i}`,
            fn(i),
            p.keys.map((k) => `key/${k}`),
          )
      ).then(
        () => {
          traces[i]!.settled++;
          traces[i]!.outcome = 'ok';
        },
        (error: unknown) => {
          traces[i]!.settled++;
          traces[i]!.outcome = 'error';
          traces[i]!.error = error;
        },
      ),
    ),
  );
  // Hooks run synchronously before settling; give stray late settlements a turn to show up.
  await new Promise((r) => setImmediate(r));
  const stored = await h.stored(prefix);
  plans.forEach((p, i) => {
    const t = traces[i]!;
    const rows = stored.get(`${prefix}${i}`) ?? 0;
    expect(t.settled, `caller ${i} settles once`).toBe(1);
    const fatal = p.fatal !== 'none' && p.at <= p.rows;
    if (p.one === true && h.writeOne !== undefined) {
      // No hooks: the rows tell whether it committed, once.
      expect(rows, `one-statement caller ${i}: its rows once, or nothing`).toBe(t.outcome === 'ok' ? p.rows : 0);
      expect(
        t.outcome,
        `one-statement caller ${i} (${fatal ? 'fatal' : `${p.races} races`}) ${String((t.error as Error | undefined)?.message)}`,
      ).toBe(fatal ? 'error' : 'ok');
      if (fatal)
        expect((t.error as { code?: string }).code, `one-statement caller ${i}: the server's refusal`).toBe('22012');
      // Each lost race re-ran the statement once; the attempt after them committed or failed for good.
      expect(t.attempts, `one-statement caller ${i}: attempts`).toBe(p.races + 1);
      return;
    }
    if (t.outcome === 'ok') {
      expect(rows, `caller ${i} resolved: its rows once`).toBe(p.rows);
      expect(t.commits, `caller ${i} resolved: onCommit once`).toBe(1);
      expect(t.rollbacks, `caller ${i} resolved: other attempts rolled back`).toBe(t.attempts - 1);
    } else {
      expect(rows, `caller ${i} rejected: nothing stored`).toBe(0);
      expect(t.commits, `caller ${i} rejected: no onCommit`).toBe(0);
      expect(t.rollbacks, `caller ${i} rejected: every attempt rolled back`).toBe(t.attempts);
    }
    // Races alone never fail a caller (they are fewer than the committer's attempts); a fatal failure always does.
    expect(
      t.outcome,
      `caller ${i} (${fatal ? 'fatal' : `${p.races} races`}) ${String((t.error as Error | undefined)?.message)}`,
    ).toBe(fatal ? 'error' : 'ok');
    if (!fatal) expect(t.attempts).toBeLessThanOrEqual(p.races + 2 * MAX_TX_ATTEMPTS);
  });
}

// ------------------------------------------------------------------ a fake PostgreSQL-like driver

/** Shared state of the fake database: committed rows, and COMMITs told to fail with a serialization error. */
class FakeDb {
  readonly committed: Array<{ tag: string }> = [];
  commitFailures: boolean[] = [];
  constructor(private seed: number) {}
  /** Deterministic interleaving from the property's seed. */
  coin(): boolean {
    this.seed = (this.seed * 1103515245 + 12345) % 2147483648;
    return (this.seed >> 16) % 2 === 0;
  }
}

class FakeConn implements WriteConnection {
  private staged: Array<{ tag: string }> | null = null;
  private aborted: unknown;
  constructor(private readonly db: FakeDb) {}
  private async turn(): Promise<void> {
    // Interleave writers as a network round trip would.
    if (this.db.coin()) await new Promise((r) => setImmediate(r));
  }
  async exec(sql: string): Promise<void> {
    await this.turn();
    if (sql.startsWith('BEGIN')) {
      this.staged = [];
      this.aborted = undefined;
    } else if (sql === 'COMMIT') {
      const staged = this.staged;
      const aborted = this.aborted;
      this.staged = null;
      this.aborted = undefined;
      if (aborted !== undefined || staged === null) return; // PostgreSQL: COMMIT of an aborted transaction rolls back
      if (this.db.commitFailures.shift() === true)
        throw Object.assign(new Error('could not serialize access'), { code: '40001' });
      this.db.committed.push(...staged);
    } else if (sql === 'ROLLBACK') {
      this.staged = null;
      this.aborted = undefined;
    } else throw new Error(`fake: unexpected exec ${sql}`);
  }
  async run(sql: string, params: readonly unknown[] = []): Promise<number> {
    await this.turn();
    if (this.staged === null) throw new Error('fake: no transaction');
    if (this.aborted !== undefined) throw Object.assign(new Error('current transaction is aborted'), { code: '25P02' });
    if (sql === 'PUT') {
      this.staged.push({ tag: String(params[0]) });
      return 1;
    }
    if (sql === 'RAISE') {
      this.aborted = Object.assign(new Error(`raised ${String(params[0])}`), { code: String(params[0]) });
      throw this.aborted;
    }
    throw new Error(`fake: unexpected statement ${sql}`);
  }
  async all<R>(sql: string, params?: readonly unknown[]): Promise<R[]> {
    await this.run(sql, params);
    return [];
  }
  async failure(): Promise<unknown> {
    return this.aborted;
  }
  release(): void {}
}

function fakeDriver(db: FakeDb, writers: number): ShardDriver {
  const capabilities: DialectCapabilities = {
    sequencesOnInsert: false,
    cheapSavepoints: false,
    multiNode: true,
    bulkArrayParams: true,
    tablePartitioning: false,
    singleWriter: false,
  };
  const none = async (): Promise<never> => {
    throw new Error('fake: not supported');
  };
  return {
    dialect: 'postgres',
    capabilities,
    sql: {
      claimRows: '',
      begin: 'BEGIN',
      beginLocked: (keys) => `BEGIN LOCKED ${keys.join(',')}`,
      lockingQuery: null,
      notify: null,
      roles: null,
    },
    writers,
    reader: { all: none, run: none } as Queryable,
    acquireWriter: async () => new FakeConn(db),
    migrate: none,
    appliedMigrations: none,
    listen: none,
    notify: none,
    lock: none,
    ping: async () => {},
    close: async () => {},
  };
}

describe('group commit properties (fake driver)', () => {
  it('callers settle once; committed exactly once or not at all; races and failing neighbours harm nobody', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(planArb, { minLength: 1, maxLength: 30 }),
        fc.integer({ min: 1, max: 4 }),
        // COMMITs that fail with 40001: with a caller's own races, fewer than the committer's attempts.
        fc.array(fc.boolean(), { maxLength: 4 }),
        fc.integer({ min: 0, max: 1 << 30 }),
        async (plans, writers, commitFailures, seed) => {
          const db = new FakeDb(seed);
          db.commitFailures = [...commitFailures];
          const committer = new GroupCommitter(fakeDriver(db, writers), { maxBatch: 8, retryDelayMs: 0 });
          const h: Harness = {
            write: (_tag, fn, keys) => committer.submit(fn, { lockKeys: keys }),
            put: async (tx, tag) => void (await tx.run('PUT', [tag])),
            raise: async (tx, code) => void (await tx.run('RAISE', [code])),
            stored: async () => {
              const m = new Map<string, number>();
              for (const r of db.committed) m.set(r.tag, (m.get(r.tag) ?? 0) + 1);
              return m;
            },
          };
          await runScenario(h, run++, plans);
          await committer.close();
        },
      ),
      { numRuns: Number(process.env.GC_PROPERTY_RUNS ?? 150) },
    );
  });
});

// ------------------------------------------------------------------ the same on PostgreSQL

describe('group commit properties (postgres)', () => {
  let env: TestEnv;
  let rt: Runtime;
  let shard: Shard;
  beforeAll(async () => {
    env = await createTestEnv('postgres', {
      extra: { storage: { group_commit: { writers: 3, max_batch: 8 } } as never },
    });
    rt = await Runtime.open(env.config, { background: false });
    shard = rt.storage.shard('s0');
    await shard.write((tx) => tx.run('CREATE TABLE gcp_rows (tag TEXT NOT NULL, i INT NOT NULL)'));
    // One-statement writers: each attempt draws from a sequence of its own (not undone by a
    // rollback), loses a race while the draw is within its races, then fails for good if told to.
    await shard.write((tx) =>
      tx.run(`CREATE FUNCTION gcp_step(seq TEXT, races INT, code TEXT, fatal BOOLEAN) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
        BEGIN
          IF nextval(seq) <= races THEN RAISE EXCEPTION 'injected race' USING ERRCODE = code; END IF;
          IF fatal THEN RAISE EXCEPTION 'injected failure' USING ERRCODE = '22012'; END IF;
          RETURN true;
        END $$`),
    );
  });
  afterAll(async () => {
    await rt?.close();
    await env?.cleanup();
  });

  it('the same properties with real transactions, lock keys and errors raised by the server', async () => {
    let run = 0;
    const h: Harness = {
      write: (_tag, fn, keys) => shard.write(fn, { lockKeys: keys }),
      put: async (tx, tag, i) => void (await tx.run('INSERT INTO gcp_rows (tag, i) VALUES (?, ?)', [tag, i])),
      raise: async (tx, code) => {
        // A real server-side error with this SQLSTATE: the transaction is aborted as after a real deadlock.
        const sql =
          code === '22012'
            ? 'SELECT 1 / 0 AS x'
            : `DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '${code}'; END $$`;
        await tx.run(sql);
      },
      stored: async (prefix) => {
        const rows = await shard.reader.all<{ tag: string; n: number }>(
          'SELECT tag, COUNT(*)::int AS n FROM gcp_rows WHERE tag LIKE ? GROUP BY tag',
          [`${prefix}%`],
        );
        return new Map(rows.map((r) => [r.tag, Number(r.n)]));
      },
    };
    await fc.assert(
      fc.asyncProperty(fc.array(planArb, { minLength: 1, maxLength: 24 }), async (plans) => {
        await runScenario(h, run++, plans);
      }),
      { numRuns: 25 },
    );
  });

  it('the same with one-statement writes (a transaction each, locks inside the statement) among ordinary callers on the same keys', async () => {
    // Tags apart from the test above (same table).
    let run = 1000;
    const h: Harness = {
      write: (_tag, fn, keys) => shard.write(fn, { lockKeys: keys }),
      put: async (tx, tag, i) => void (await tx.run('INSERT INTO gcp_rows (tag, i) VALUES (?, ?)', [tag, i])),
      raise: async (tx, code) => {
        const sql =
          code === '22012'
            ? 'SELECT 1 / 0 AS x'
            : `DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '${code}'; END $$`;
        await tx.run(sql);
      },
      stored: async (prefix) => {
        const rows = await shard.reader.all<{ tag: string; n: number }>(
          'SELECT tag, COUNT(*)::int AS n FROM gcp_rows WHERE tag LIKE ? GROUP BY tag',
          [`${prefix}%`],
        );
        return new Map(rows.map((r) => [r.tag, Number(r.n)]));
      },
      writeOne: async (tag, p, keys, trace) => {
        const seq = `gcp_one_${tag.replace(/\W/g, '_')}`;
        await shard.reader.run(`CREATE SEQUENCE ${seq}`);
        try {
          const fatal = p.fatal !== 'none' && p.at <= p.rows;
          const n = await shard.writeStatement(
            {
              sql: (locks) =>
                `WITH ${locks === null ? '' : `locks AS (${locks}), `}st AS (SELECT gcp_step(?, ?, ?, ?) AS ok)
                 INSERT INTO gcp_rows (tag, i) SELECT ?::text, g FROM generate_series(0, ?::int - 1) AS g, st
                  WHERE st.ok${locks === null ? '' : ' AND (SELECT n FROM locks) >= 0'} RETURNING i`,
              params: [seq, p.races, p.raceCode, fatal, tag, p.rows],
              result: (rows: Array<{ i: number }>) => rows.length,
            },
            { lockKeys: keys },
          );
          expect(n).toBe(p.rows);
        } finally {
          const r = await shard.reader.all<{ v: number }>(`SELECT last_value AS v FROM ${seq}`);
          trace.attempts = Number(r[0]!.v);
        }
      },
    };
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ plan: planArb, one: fc.boolean() }), { minLength: 1, maxLength: 24 }),
        async (list) => {
          await runScenario(
            h,
            run++,
            list.map(({ plan, one }) => ({ ...plan, one })),
          );
        },
      ),
      { numRuns: 25 },
    );
  });
});

// ------------------------------------------------------------------ the route check of one-statement writes

describe('one-statement writes check their route in the statement (postgres)', () => {
  let env: TestEnv;
  let rt: Runtime;
  let shard: Shard;
  let admin: pg.Client;
  /** Keys that s0 owns, and their hashes. */
  let pool: Array<{ key: string; hash: bigint }>;
  beforeAll(async () => {
    env = await createTestEnv('postgres', { shards: 2 });
    rt = await Runtime.open(env.config, { background: false });
    shard = rt.storage.shard('s0');
    await shard.write((tx) => tx.run('CREATE TABLE gcr_rows (tag TEXT NOT NULL, i INT NOT NULL)'));
    pool = Array.from({ length: 200 }, (_, i) => `k${i}`)
      .filter((k) => rt.storage.shardFor(k).name === 's0')
      .map((key) => ({ key, hash: sha1(shardKeyText(key)) }));
    admin = new pg.Client({
      connectionString: (env.input as { storage: { shards: Array<{ url: string }> } }).storage.shards[0]!.url,
    });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
    await rt?.close();
    await env?.cleanup();
  });

  it('a write routed by the table before a cut-over, run during or after it, writes nothing and is refused (shard_moved) iff one of its keys moved', async () => {
    let run = 0;
    const original = (await admin.query<{ ranges: string }>('SELECT ranges FROM shard_state WHERE id = 1')).rows[0]!
      .ranges;
    const callerArb = fc.record({
      keys: fc.array(fc.integer({ min: 0, max: pool.length - 1 }), { minLength: 1, maxLength: 3 }),
      rows: fc.integer({ min: 1, max: 3 }),
      one: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(callerArb, { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 0, max: 7 }),
        fc.integer({ min: 1, max: 8 }),
        async (callers, a, width) => {
          const prefix = `r${run++}/`;
          const from = parseHashBound(a.toString(16));
          const to = a + width >= 8 ? parseHashBound('8') : parseHashBound((a + width).toString(16));
          // Views taken now: routed by the table before the cut-over.
          const views = callers.map((c) =>
            rt.storage.joined(
              shard,
              c.keys.map((k) => rt.storage.shardFor(pool[k]!.key)),
            ),
          );
          // The cut-over holds the state table while the writes are submitted, then fences [from, to).
          await admin.query('BEGIN');
          await admin.query('LOCK TABLE shard_state IN ACCESS EXCLUSIVE MODE');
          const results = callers.map((c, i) => {
            const tag = `${prefix}${i}`;
            const write = c.one
              ? views[i]!.writeStatement(
                  {
                    routable: true,
                    sql: (locks, route) => {
                      const gates = [
                        ...(locks === null ? [] : ['(SELECT n FROM locks) >= 0']),
                        ...(route ? ['(SELECT ok FROM route)'] : []),
                      ];
                      return `WITH ${locks === null ? '' : `locks AS (${locks}), `}${route ? `route AS (${route}), ` : ''}g AS (SELECT generate_series(0, ?::int - 1) AS i)
                        INSERT INTO gcr_rows (tag, i) SELECT ?::text, i FROM g${gates.length === 0 ? '' : ` WHERE ${gates.join(' AND ')}`} RETURNING i`;
                    },
                    params: [c.rows, tag],
                    result: (rows: Array<{ i: number }>) => rows.length,
                  },
                  { lockKeys: c.keys.map((k) => `key/${k}`) },
                )
              : views[i]!.write(
                  async (tx) => {
                    for (let r = 0; r < c.rows; r++)
                      await tx.run('INSERT INTO gcr_rows (tag, i) VALUES (?, ?)', [tag, r]);
                    return c.rows;
                  },
                  { lockKeys: c.keys.map((k) => `key/${k}`) },
                );
            return write.then(
              (n) => ({ ok: true as const, n }),
              (err: unknown) => ({ ok: false as const, err }),
            );
          });
          const fenced = JSON.stringify([
            ...(from > 0n ? [{ from: '0', to: from.toString(16) }] : []),
            { from: from.toString(16), to: to.toString(16), fenced: true },
            ...(to < parseHashBound('8') ? [{ from: to.toString(16), to: parseHashBound('8').toString(16) }] : []),
          ]);
          await admin.query('UPDATE shard_state SET ranges = $1, epoch = epoch + 1 WHERE id = 1', [fenced]);
          await admin.query('COMMIT');
          const out = await Promise.all(results);
          const stored = await shard.reader.all<{ tag: string; n: number }>(
            'SELECT tag, COUNT(*)::int AS n FROM gcr_rows WHERE tag LIKE ? GROUP BY tag',
            [`${prefix}%`],
          );
          const rows = new Map(stored.map((r) => [r.tag, Number(r.n)]));
          callers.forEach((c, i) => {
            const moved = c.keys.some((k) => pool[k]!.hash >= from && pool[k]!.hash < to);
            const r = out[i]!;
            const what = `caller ${i} (${c.one ? 'one statement' : 'transaction'}, ${moved ? 'moved' : 'kept'})`;
            if (moved) {
              expect(r.ok ? r : isMillraceError(r.err, 'shard_moved'), what).toBe(true);
              expect(rows.get(`${prefix}${i}`) ?? 0, `${what}: nothing written`).toBe(0);
            } else {
              expect(r.ok ? r.n : r.err, what).toBe(c.rows);
              expect(rows.get(`${prefix}${i}`), `${what}: its rows once`).toBe(c.rows);
            }
          });
          // Back to the whole range for the next run.
          await admin.query('UPDATE shard_state SET ranges = $1, epoch = epoch + 1 WHERE id = 1', [original]);
          await rt.storage.refreshRouting();
        },
      ),
      { numRuns: 20 },
    );
  });
});
