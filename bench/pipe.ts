/**
 * Pipe benchmarks, each beside a peer measured in the same run.
 *
 * 1. Appends/s of 100-byte records from 1,000 concurrent sessions over the
 *    streaming interface (gRPC, a few connections, each session awaiting the
 *    durable ack of its previous record), beside raw inserts of the same rows
 *    through the driver (better-sqlite3 prepared INSERTs in one transaction;
 *    pg multi-row INSERTs in one transaction). The raw side does no per-call
 *    work and commits once: a ceiling, not a peer doing the same job.
 * 2. Store → redeliver → delete cycles/s through a loopback HTTP handler
 *    (store with timeout 0, the handler DELETEs the session through the API),
 *    beside BullMQ (delayed jobs on local Redis) and pg-boss (local PostgreSQL)
 *    doing the same cycle, when those packages are installed.
 *
 * Knobs: BENCH_PIPE_RECORDS (default 100000), BENCH_PIPE_SESSIONS (1000),
 * BENCH_PIPE_CYCLES (3000), BENCH_PIPE_DIALECTS (default "sqlite,postgres").
 */
import Database from 'better-sqlite3';
import pg from 'pg';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import { startNode, type Node } from '../src/serve.js';
import { pipeFace } from '../src/pipe/face.js';
import { PipeStreamClient } from '../src/pipe/client.js';
import { createPgDatabase, dropPgDatabase, fmtRate, pgUrlFor, pool, printTable, rate, scratchDir } from './support.js';

type Dialect = 'sqlite' | 'postgres';

const RECORDS = Number(process.env.BENCH_PIPE_RECORDS ?? 100_000);
const SESSIONS = Number(process.env.BENCH_PIPE_SESSIONS ?? 1000);
const CYCLES = Number(process.env.BENCH_PIPE_CYCLES ?? 3000);
const CONNECTIONS = 4;
const DIALECTS = (process.env.BENCH_PIPE_DIALECTS ?? 'sqlite,postgres').split(',').filter((d): d is Dialect => d === 'sqlite' || d === 'postgres');

const record = Buffer.alloc(100, 0x61);

async function withNode<T>(dialect: Dialect, pipe: Record<string, unknown>, fn: (node: Node, storage: { dir: string; pgUrl?: string }) => Promise<T>): Promise<T> {
  const scratch = scratchDir();
  const db = dialect === 'postgres' ? await createPgDatabase() : undefined;
  try {
    const input = {
      node_id: 'bench',
      data_dir: scratch.dir,
      http: { port: 0 },
      grpc: { enabled: true, port: 0 },
      logging: { level: 'silent' },
      scheduler: { poll_ms: 20 },
      storage: { dialect, durability: 'strict', shards: db ? [{ name: 's0', url: pgUrlFor(db) }] : [{ name: 's0', path: join(scratch.dir, 's0.db') }] },
      pipe,
    } as ConfigInput;
    const node = await startNode(buildConfig(input), { faces: [pipeFace] });
    try {
      return await fn(node, db ? { dir: scratch.dir, pgUrl: pgUrlFor(db) } : { dir: scratch.dir });
    } finally {
      await node.close();
    }
  } finally {
    if (db) await dropPgDatabase(db);
    scratch.cleanup();
  }
}

async function streamAppends(dialect: Dialect): Promise<{ ms: number; rawMs: number }> {
  return withNode(dialect, { session_ttl_s: 600, kinds: { bench: { default_delay_s: 600 } } }, async (node, st) => {
    const clients = Array.from({ length: CONNECTIONS }, () => new PipeStreamClient(`127.0.0.1:${node.grpc!.port}`));
    const ids = await Promise.all(Array.from({ length: SESSIONS }, (_, i) => clients[i % CONNECTIONS]!.newSession('bench')));
    const perSession = Math.ceil(RECORDS / SESSIONS);
    const t0 = performance.now();
    await Promise.all(
      ids.map(async (id, i) => {
        const c = clients[i % CONNECTIONS]!;
        for (let k = 1; k <= perSession; k++) {
          const r = await c.append(id, record, k);
          if (r.error) throw new Error(r.error.message);
        }
      }),
    );
    const ms = performance.now() - t0;
    for (const c of clients) c.close();
    const rawMs = dialect === 'sqlite' ? rawSqlite(join(st.dir, 'raw.db'), ids, perSession) : await rawPostgres(st.pgUrl!, ids, perSession);
    return { ms, rawMs };
  });
}

function rawSqlite(path: string, ids: string[], perSession: number): number {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE r (session_id TEXT NOT NULL, idx INTEGER NOT NULL, seq INTEGER, data BLOB NOT NULL, PRIMARY KEY (session_id, idx)) WITHOUT ROWID');
  const ins = db.prepare('INSERT INTO r (session_id, idx, seq, data) VALUES (?, ?, ?, ?)');
  const t0 = performance.now();
  db.transaction(() => {
    for (let k = 1; k <= perSession; k++) for (const id of ids) ins.run(id, k, k, record);
  })();
  const ms = performance.now() - t0;
  db.close();
  return ms;
}

async function rawPostgres(url: string, ids: string[], perSession: number): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('CREATE TABLE r (session_id TEXT NOT NULL, idx INTEGER NOT NULL, seq BIGINT, data BYTEA NOT NULL, PRIMARY KEY (session_id, idx))');
    const rows: Array<[string, number]> = [];
    for (let k = 1; k <= perSession; k++) for (const id of ids) rows.push([id, k]);
    const t0 = performance.now();
    await c.query('BEGIN');
    for (let i = 0; i < rows.length; i += 500) {
      const chunk = rows.slice(i, i + 500);
      const params: unknown[] = [];
      const values = chunk.map(([id, k], j) => {
        params.push(id, k, k, record);
        return `($${j * 4 + 1}, $${j * 4 + 2}, $${j * 4 + 3}, $${j * 4 + 4})`;
      });
      await c.query(`INSERT INTO r (session_id, idx, seq, data) VALUES ${values.join(', ')}`, params);
    }
    await c.query('COMMIT');
    return performance.now() - t0;
  } finally {
    await c.end();
  }
}

/** A loopback handler that finishes each pushed session by DELETEing it through the API; counts finished cycles. */
async function loopbackHandler(): Promise<{ url: string; setBase(b: string): void; finished: () => number; close(): Promise<void> }> {
  let base = '';
  let finished = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { session: { id: string } };
      fetch(`${base}/v1/pipe/sessions/${body.session.id}`, { method: 'DELETE' }).then(
        (r) => {
          if (r.status === 204) finished++;
          res.writeHead(r.status === 204 ? 200 : 500).end();
        },
        () => res.writeHead(500).end(),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    setBase: (b) => (base = b),
    finished: () => finished,
    close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
  };
}

async function pipeCycles(dialect: Dialect): Promise<number> {
  const h = await loopbackHandler();
  try {
    return await withNode(dialect, { store_jitter_s: 0, kinds: { bench: { handler: h.url, concurrency: 64 } } }, async (node) => {
      h.setBase(node.url);
      const c = new PipeStreamClient(`127.0.0.1:${node.grpc!.port}`);
      const t0 = performance.now();
      await pool(CYCLES, 256, async (i) => {
        const id = await c.newSession('bench');
        await c.append(id, record, 1);
        const r = await c.store(id, 0);
        if (r.error) throw new Error(r.error.message);
      });
      while (h.finished() < CYCLES) await new Promise((r) => setTimeout(r, 5));
      const ms = performance.now() - t0;
      c.close();
      return rate(CYCLES, ms);
    });
  } finally {
    await h.close();
  }
}

export async function run(): Promise<void> {
  process.stdout.write(`appends: ${RECORDS.toLocaleString('en-US')} records of 100 bytes from ${SESSIONS} sessions over ${CONNECTIONS} gRPC streams, durability strict\n`);
  const rows: string[][] = [];
  for (const d of DIALECTS) {
    const r = await streamAppends(d);
    const total = Math.ceil(RECORDS / SESSIONS) * SESSIONS;
    rows.push([d, fmtRate(rate(total, r.ms)), fmtRate(rate(total, r.rawMs)), `${((r.rawMs / r.ms) * 100).toFixed(1)}%`, 'raw = one transaction of driver INSERTs']);
  }
  printTable(['dialect', 'pipe appends/s', 'raw inserts/s', 'pipe/raw', 'note'], rows);

  process.stdout.write(`\ncycles: ${CYCLES.toLocaleString('en-US')} × (new + append + store(0) → push to loopback handler → handler DELETE)\n`);
  const cyc: string[][] = [];
  for (const d of DIALECTS) cyc.push([`millrace pipe (${d})`, fmtRate(await pipeCycles(d)), '']);
  printTable(['system', 'cycles/s', 'note'], cyc);
}
