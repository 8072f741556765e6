/**
 * Log append throughput, each case beside the raw driver inserting the same
 * rows in the same run:
 *
 * - millrace: `Log.append` from many concurrent callers (one stream per
 *   caller), through group commit, with the streams counter, the hash chain
 *   (SQLite) or the sequencer (PostgreSQL). The clock stops when the last
 *   append is acknowledged, i.e. committed under the configured durability.
 * - raw SQLite: better-sqlite3 prepared INSERTs of the same rows inside one
 *   transaction, into a table shaped like `events`, same pragmas.
 * - raw PostgreSQL: `pg` multi-row INSERTs (500 rows each) of the same rows in
 *   one transaction, into a table shaped like `events`.
 *
 * The raw side does no per-caller work (no stream counter, no hashing, one
 * commit), so it is a ceiling, not a peer doing the same job. No assertions.
 *
 * Knobs: BENCH_LOG_EVENTS (1 event per append, default 20000),
 * BENCH_LOG_BATCH_EVENTS (100 per append, default 100000),
 * BENCH_LOG_DIALECTS (default "sqlite,postgres"), BENCH_LOG_RUNS (runs per
 * case, each on fresh storage; the table shows medians; default 3).
 */
import Database from 'better-sqlite3';
import pg from 'pg';
import { join } from 'node:path';
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import type { NewEvent } from '../src/log/log.js';
import { Runtime } from '../src/runtime.js';
import {
  createPgDatabase,
  dropPgDatabase,
  fmtRate,
  mb,
  pgUrlFor,
  pool,
  printTable,
  rate,
  RssSampler,
  scratchDir,
} from './support.js';

type Dialect = 'sqlite' | 'postgres';
type Durability = 'strict' | 'relaxed';

interface Case {
  dialect: Dialect;
  durability: Durability;
  /** Events per append call. */
  perAppend: number;
  /** Events in all. */
  total: number;
  /** Append calls in flight at once. */
  inFlight: number;
}

interface Result {
  c: Case;
  millraceMs: number;
  rawMs: number;
  /** PostgreSQL: ms from the last acknowledgement until the sequencer had numbered every row. */
  sequencedAfterMs: number | null;
  /** Append calls per group-commit transaction, on average. */
  jobsPerTx: number;
  peakRss: number;
}

const intEnv = (name: string, dflt: number): number => {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v > 0 ? v : dflt;
};

const SINGLE_TOTAL = intEnv('BENCH_LOG_EVENTS', 20_000);
const BATCH_TOTAL = intEnv('BENCH_LOG_BATCH_EVENTS', 100_000);
const DIALECTS = (process.env.BENCH_LOG_DIALECTS ?? 'sqlite,postgres').split(',').map((s) => s.trim()) as Dialect[];
const RUNS = intEnv('BENCH_LOG_RUNS', 3);
const RAW_PG_CHUNK = 500;
const WARMUP_APPENDS = 200;

function cases(): Case[] {
  const out: Case[] = [];
  const single = (dialect: Dialect, durability: Durability): Case => ({
    dialect,
    durability,
    perAppend: 1,
    total: SINGLE_TOTAL,
    inFlight: 256,
  });
  const batch = (dialect: Dialect, durability: Durability): Case => ({
    dialect,
    durability,
    perAppend: 100,
    total: BATCH_TOTAL,
    inFlight: 32,
  });
  if (DIALECTS.includes('sqlite'))
    out.push(
      single('sqlite', 'strict'),
      batch('sqlite', 'strict'),
      single('sqlite', 'relaxed'),
      batch('sqlite', 'relaxed'),
    );
  if (DIALECTS.includes('postgres')) out.push(single('postgres', 'strict'), batch('postgres', 'strict'));
  return out;
}

const label = (c: Case): string => `${c.dialect} ${c.durability}, ${c.perAppend} ev/append, ${c.inFlight} in flight`;

/** The payload of event i: a small business-like JSON object (~90 bytes). */
const payload = (i: number) => ({
  order: i,
  amount: '12.50',
  currency: 'EUR',
  customer: `c-${i % 1000}`,
  note: 'bench',
});

/** The same rows the millrace side writes: stream per caller slot, seq counting per stream. */
function rawRows(c: Case): Array<{ stream: string; seq: number; type: string; data: string }> {
  const rows: Array<{ stream: string; seq: number; type: string; data: string }> = [];
  const seqs = new Array<number>(c.inFlight).fill(0);
  const appends = c.total / c.perAppend;
  let i = 0;
  for (let a = 0; a < appends; a++) {
    const w = a % c.inFlight;
    for (let k = 0; k < c.perAppend; k++) {
      rows.push({ stream: `bench/${w}`, seq: ++seqs[w]!, type: 'order.placed', data: JSON.stringify(payload(i++)) });
    }
  }
  return rows;
}

interface MillraceRun {
  ms: number;
  sequencedAfterMs: number | null;
  jobsPerTx: number;
}

async function measureMillrace(c: Case, input: ConfigInput): Promise<MillraceRun> {
  const rt = await Runtime.open(buildConfig(input));
  try {
    // Warm up statements, JIT and pools outside the clock.
    await pool(WARMUP_APPENDS, 64, async (i) => {
      await rt.log.append(`warmup/${i % 64}`, [{ type: 'warmup', data: { i } }]);
    });
    const shard = rt.storage.shards[0]!.name;
    const startHead = await waitSequenced(rt, shard, WARMUP_APPENDS);
    const stats = rt.storage.shards[0]!.committer.stats;
    const before = { ...stats };
    const appends = c.total / c.perAppend;
    const batches: NewEvent[][] = Array.from({ length: appends }, (_, a) =>
      Array.from({ length: c.perAppend }, (_, k) => ({ type: 'order.placed', data: payload(a * c.perAppend + k) })),
    );
    const t0 = performance.now();
    await pool(appends, c.inFlight, async (a, w) => {
      await rt.log.append(`bench/${w}`, batches[a]!);
    });
    const ms = performance.now() - t0;
    const jobsPerTx = (stats.jobs - before.jobs) / Math.max(1, stats.batches - before.batches);
    let sequencedAfterMs: number | null = null;
    if (!rt.storage.shards[0]!.driver.capabilities.sequencesOnInsert) {
      await waitSequenced(rt, shard, startHead + c.total);
      sequencedAfterMs = performance.now() - t0 - ms;
    } else {
      const head = await rt.log.headPos(shard);
      if (head !== startHead + c.total)
        process.stderr.write(`warning: ${label(c)}: head ${head}, expected ${startHead + c.total}\n`);
    }
    return { ms, sequencedAfterMs, jobsPerTx };
  } finally {
    await rt.close();
  }
}

async function waitSequenced(rt: Runtime, shard: string, atLeast: number): Promise<number> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const head = await rt.log.headPos(shard);
    if (head >= atLeast) return head;
    if (Date.now() > deadline) throw new Error(`the sequencer of ${shard} stopped at ${head}, expected ${atLeast}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function measureRawSqlite(c: Case, path: string): number {
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${c.durability === 'strict' ? 'FULL' : 'NORMAL'}`);
    db.exec(`CREATE TABLE events (
      pos INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
      data TEXT NOT NULL, meta TEXT, created_at INTEGER NOT NULL, hash BLOB NOT NULL, UNIQUE (stream, seq))`);
    const rows = rawRows(c);
    const hash = Buffer.alloc(32, 7);
    const ins = db.prepare(
      'INSERT INTO events (pos, stream, seq, type, data, meta, created_at, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const t0 = performance.now();
    db.transaction(() => {
      const now = Date.now();
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i]!;
        ins.run(i + 1, r.stream, r.seq, r.type, r.data, null, now, hash);
      }
    })();
    return performance.now() - t0;
  } finally {
    db.close();
  }
}

async function measureRawPg(c: Case, url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`CREATE TABLE raw_events (
      id BIGSERIAL PRIMARY KEY, pos BIGINT UNIQUE, stream TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL,
      data TEXT NOT NULL, meta TEXT, created_at BIGINT NOT NULL, hash BYTEA, UNIQUE (stream, seq))`);
    await client.query('CREATE INDEX raw_events_unsequenced ON raw_events (id) WHERE pos IS NULL');
    const rows = rawRows(c);
    const statement = (n: number) =>
      `INSERT INTO raw_events (stream, seq, type, data, meta, created_at) VALUES ${Array.from({ length: n }, (_, i) => `($${i * 6 + 1}, $${i * 6 + 2}, $${i * 6 + 3}, $${i * 6 + 4}, $${i * 6 + 5}, $${i * 6 + 6})`).join(', ')}`;
    const full = statement(RAW_PG_CHUNK);
    const t0 = performance.now();
    const now = Date.now();
    await client.query('BEGIN');
    for (let off = 0; off < rows.length; off += RAW_PG_CHUNK) {
      const chunk = rows.slice(off, off + RAW_PG_CHUNK);
      const values: unknown[] = [];
      for (const r of chunk) values.push(r.stream, r.seq, r.type, r.data, null, now);
      await client.query(chunk.length === RAW_PG_CHUNK ? full : statement(chunk.length), values);
    }
    await client.query('COMMIT');
    return performance.now() - t0;
  } finally {
    await client.end();
  }
}

async function runCase(c: Case): Promise<Result> {
  const scratch = scratchDir();
  let db: string | undefined;
  const rss = new RssSampler();
  try {
    const base = {
      node_id: 'bench',
      data_dir: scratch.dir,
      http: { port: 0 },
      grpc: { enabled: false, port: 0 },
      logging: { level: 'silent' as const },
    };
    let millrace: MillraceRun;
    let rawMs: number;
    if (c.dialect === 'sqlite') {
      millrace = await measureMillrace(c, { ...base, storage: { dialect: 'sqlite', durability: c.durability } });
      rawMs = measureRawSqlite(c, join(scratch.dir, 'raw.db'));
    } else {
      db = await createPgDatabase();
      const url = pgUrlFor(db);
      millrace = await measureMillrace(c, {
        ...base,
        storage: { dialect: 'postgres', durability: c.durability, shards: [{ name: 's0', url }] },
      });
      rawMs = await measureRawPg(c, url);
    }
    return {
      c,
      millraceMs: millrace.ms,
      rawMs,
      sequencedAfterMs: millrace.sequencedAfterMs,
      jobsPerTx: millrace.jobsPerTx,
      peakRss: rss.stop(),
    };
  } finally {
    rss.stop();
    if (db !== undefined)
      await dropPgDatabase(db).catch((err: unknown) =>
        process.stderr.write(`could not drop ${db}: ${(err as Error).message}\n`),
      );
    scratch.cleanup();
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Each figure's median over the runs (peak rss: the highest). */
function medianOf(runs: Result[]): Result {
  const seq = runs.map((r) => r.sequencedAfterMs).filter((x): x is number => x !== null);
  return {
    c: runs[0]!.c,
    millraceMs: median(runs.map((r) => r.millraceMs)),
    rawMs: median(runs.map((r) => r.rawMs)),
    sequencedAfterMs: seq.length ? median(seq) : null,
    jobsPerTx: median(runs.map((r) => r.jobsPerTx)),
    peakRss: Math.max(...runs.map((r) => r.peakRss)),
  };
}

export async function run(): Promise<void> {
  const rssStart = process.memoryUsage.rss();
  const results: Result[] = [];
  const t0 = Date.now();
  for (const c of cases()) {
    process.stderr.write(`  ${label(c)}: ${c.total} events x ${RUNS} runs ...\n`);
    const runs: Result[] = [];
    for (let i = 0; i < RUNS; i++) runs.push(await runCase(c));
    results.push(medianOf(runs));
  }
  process.stdout.write('\n');
  printTable(
    ['case', 'events', 'millrace ev/s', 'raw ev/s', 'ratio', 'appends/tx', 'peak rss', 'note'],
    results.map((r) => {
      const m = rate(r.c.total, r.millraceMs);
      const raw = rate(r.c.total, r.rawMs);
      return [
        label(r.c),
        String(r.c.total),
        fmtRate(m),
        fmtRate(raw),
        (m / raw).toFixed(2),
        r.jobsPerTx.toFixed(0),
        mb(r.peakRss),
        r.sequencedAfterMs === null ? '' : `all numbered ${r.sequencedAfterMs.toFixed(0)} ms after last ack`,
      ];
    }),
  );
  const mem = process.memoryUsage();
  process.stdout.write(
    `\nraw = ${'better-sqlite3 prepared INSERTs in one transaction (SQLite), pg multi-row INSERTs of '}${RAW_PG_CHUNK} rows in one transaction (PostgreSQL)\n` +
      `ratio = millrace / raw; millrace time ends at the last acknowledged append; medians of ${RUNS} runs on fresh storage\n` +
      `rss: ${mb(rssStart)} at start, ${mb(mem.rss)} at end (heap used ${mb(mem.heapUsed)}); ${((Date.now() - t0) / 1000).toFixed(1)} s in all\n`,
  );
}
