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
 *    doing the same cycle in the same run: one job carrying the same 100-byte
 *    record with delay 0, received by a worker callback (the handler) and
 *    completed (removed on completion for BullMQ; marked completed by pg-boss).
 *    Same number of cycles, 256 producers in flight and 64 handler slots each.
 *
 * Knobs: BENCH_PIPE_RECORDS (default 100000), BENCH_PIPE_SESSIONS (1000),
 * BENCH_PIPE_CYCLES (3000), BENCH_PIPE_DIALECTS (default "sqlite,postgres"),
 * BENCH_PIPE_PARTS (default "appends,cycles"),
 * BENCH_REDIS_URL (default redis://127.0.0.1:6379).
 */
import Database from 'better-sqlite3';
import pg from 'pg';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import PgBoss from 'pg-boss';
import { randomBytes } from 'node:crypto';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import { startNode, type Node } from '../src/serve.js';
import { pipeFace } from '../src/pipe/face.js';
import { createPgDatabase, dropPgDatabase, fmtRate, pgUrlFor, pool, printTable, rate, scratchDir } from './support.js';

type Dialect = 'sqlite' | 'postgres';

const RECORDS = Number(process.env.BENCH_PIPE_RECORDS ?? 100_000);
const SESSIONS = Number(process.env.BENCH_PIPE_SESSIONS ?? 1000);
const CYCLES = Number(process.env.BENCH_PIPE_CYCLES ?? 3000);
const CONNECTIONS = 4;
const PRODUCERS = 256;
const HANDLER_SLOTS = 64;
const REDIS_URL = new URL(process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379');
const PARTS = new Set((process.env.BENCH_PIPE_PARTS ?? 'appends,cycles').split(','));
const DIALECTS = (process.env.BENCH_PIPE_DIALECTS ?? 'sqlite,postgres')
  .split(',')
  .filter((d): d is Dialect => d === 'sqlite' || d === 'postgres');

const record = Buffer.alloc(100, 0x61);

async function withNode<T>(
  dialect: Dialect,
  pipe: Record<string, unknown>,
  fn: (node: Node, storage: { dir: string; pgUrl?: string }) => Promise<T>,
): Promise<T> {
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
      storage: {
        dialect,
        durability: 'strict',
        shards: db ? [{ name: 's0', url: pgUrlFor(db) }] : [{ name: 's0', path: join(scratch.dir, 's0.db') }],
      },
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

async function streamAppends(
  dialect: Dialect,
  batched: boolean,
  depth: number,
): Promise<{ ms: number; rawMs: number }> {
  return withNode(dialect, { session_ttl_s: 600, kinds: { bench: { default_delay_s: 600 } } }, async (node, st) => {
    const perSession = Math.ceil(RECORDS / SESSIONS);
    // The clients run in their own process, as they would in production; the server gets this one.
    const cl = forkClient('./children/pipe-clients.ts', [
      `127.0.0.1:${node.grpc!.port}`,
      String(SESSIONS),
      String(perSession),
      String(CONNECTIONS),
      batched ? '1' : '0',
      String(depth),
    ]);
    await cl.next();
    const done = cl.next<{ ms: number; ids: string[] }>();
    cl.send('go');
    const { ms, ids } = await done;
    await cl.exited;
    const rawMs =
      dialect === 'sqlite'
        ? rawSqlite(join(st.dir, 'raw.db'), ids!, perSession)
        : await rawPostgres(st.pgUrl!, ids!, perSession);
    return { ms: ms!, rawMs };
  });
}

function rawSqlite(path: string, ids: string[], perSession: number): number {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(
    'CREATE TABLE r (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, seq INTEGER, data BLOB NOT NULL); CREATE UNIQUE INDEX r_s ON r (session_id, seq)',
  );
  const ins = db.prepare('INSERT INTO r (session_id, seq, data) VALUES (?, ?, ?)');
  const t0 = performance.now();
  db.transaction(() => {
    for (let k = 1; k <= perSession; k++) for (const id of ids) ins.run(id, k, record);
  })();
  const ms = performance.now() - t0;
  db.close();
  return ms;
}

async function rawPostgres(url: string, ids: string[], perSession: number): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(
      'CREATE TABLE r (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, session_id TEXT NOT NULL, seq BIGINT, data BYTEA NOT NULL)',
    );
    await c.query('CREATE UNIQUE INDEX r_s ON r (session_id, seq)');
    const rows: Array<[string, number]> = [];
    for (let k = 1; k <= perSession; k++) for (const id of ids) rows.push([id, k]);
    const t0 = performance.now();
    await c.query('BEGIN');
    for (let i = 0; i < rows.length; i += 500) {
      const chunk = rows.slice(i, i + 500);
      const params: unknown[] = [];
      const values = chunk.map(([id, k], j) => {
        params.push(id, k, record);
        return `($${j * 3 + 1}, $${j * 3 + 2}, $${j * 3 + 3})`;
      });
      await c.query(`INSERT INTO r (session_id, seq, data) VALUES ${values.join(', ')}`, params);
    }
    await c.query('COMMIT');
    return performance.now() - t0;
  } finally {
    await c.end();
  }
}

/** Forks a TypeScript client script of bench/ with an IPC channel; `next()` resolves to its next message. */
function forkClient(
  file: string,
  args: string[] = [],
): { send(m: unknown): void; next<T>(): Promise<T>; exited: Promise<number | null> } {
  const child = fork(fileURLToPath(new URL(file, import.meta.url)), args, {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return {
    send: (m) => void child.send(m as object),
    next: <T>() =>
      new Promise<T>((resolve, reject) => {
        child.once('message', (m) => resolve(m as T));
        void exited.then((code) => reject(new Error(`${file} exited with ${code}`)));
      }),
    exited,
  };
}

async function pipeCycles(dialect: Dialect): Promise<number> {
  // Producers and the handler run in their own process, as the peers' Redis and PostgreSQL servers do.
  const cl = forkClient('./children/pipe-cycle-clients.ts');
  const { handler } = await cl.next<{ handler: string }>();
  return withNode(
    dialect,
    { store_jitter_s: 0, kinds: { bench: { handler, concurrency: HANDLER_SLOTS } } },
    async (node) => {
      const done = cl.next<{ ms: number }>();
      cl.send({ address: `127.0.0.1:${node.grpc!.port}`, cycles: CYCLES, producers: PRODUCERS });
      const { ms } = await done;
      await cl.exited;
      return rate(CYCLES, ms);
    },
  );
}

/** BullMQ: add a job with the record and delay 0; a worker (64 slots) runs the handler; the job is removed on completion. */
async function bullmqCycles(): Promise<number> {
  const conns: Redis[] = [];
  const connect = () => {
    const r = new Redis({ host: REDIS_URL.hostname, port: Number(REDIS_URL.port || 6379), maxRetriesPerRequest: null });
    conns.push(r);
    return r;
  };
  const admin = connect();
  const prefix = `mr-bench-${randomBytes(5).toString('hex')}`;
  const name = 'cycles';
  const queue = new Queue(name, { connection: connect(), prefix });
  let handled = 0;
  let completed = 0;
  const worker = new Worker(
    name,
    async (job) => {
      if ((job.data as { record: string }).record.length !== 136) throw new Error('bad payload');
      handled++;
    },
    { connection: connect(), prefix, concurrency: HANDLER_SLOTS },
  );
  worker.on('completed', () => completed++);
  try {
    await worker.waitUntilReady();
    const data = { record: record.toString('base64') };
    const t0 = performance.now();
    await pool(CYCLES, PRODUCERS, async () => {
      await queue.add('c', data, { delay: 0, removeOnComplete: true, removeOnFail: true });
    });
    while (completed < CYCLES) await new Promise((r) => setTimeout(r, 5));
    const ms = performance.now() - t0;
    if (handled !== CYCLES) throw new Error(`bullmq: handled ${handled} of ${CYCLES}`);
    return rate(CYCLES, ms);
  } finally {
    await worker.close();
    // Teardown after the measurement: a queue left behind in the local Redis does not change the figures.
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      if (keys.length) await admin.del(...keys);
      cursor = next;
    } while (cursor !== '0');
    for (const r of conns) r.disconnect();
  }
}

/**
 * pg-boss on a fresh database: send a job with the record (startAfter now); 64
 * workers with batchSize 1 run the handler and pg-boss completes the job. Each
 * send notifies a worker (round robin), bypassing pg-boss's 0.5 s polling floor.
 */
async function pgBossCycles(): Promise<number> {
  const db = await createPgDatabase();
  try {
    const boss = new PgBoss({ connectionString: pgUrlFor(db), schedule: false, supervise: false });
    boss.on('error', (e: Error) => process.stderr.write(`pg-boss: ${e.message}\n`));
    await boss.start();
    try {
      const name = 'cycles';
      await boss.createQueue(name);
      let handled = 0;
      const workers: string[] = [];
      for (let i = 0; i < HANDLER_SLOTS; i++) {
        workers.push(
          await boss.work<{ record: string }>(name, { batchSize: 1, pollingIntervalSeconds: 0.5 }, async ([job]) => {
            if (job!.data.record.length !== 136) throw new Error('bad payload');
            handled++;
          }),
        );
      }
      const data = { record: record.toString('base64') };
      const c = new pg.Client({ connectionString: pgUrlFor(db) });
      await c.connect();
      try {
        const t0 = performance.now();
        await pool(CYCLES, PRODUCERS, async (i) => {
          await boss.send(name, data, { startAfter: 0 });
          boss.notifyWorker(workers[i % workers.length]!);
        });
        while (handled < CYCLES) await new Promise((r) => setTimeout(r, 5));
        for (;;) {
          const r = await c.query<{ n: string }>(
            `SELECT count(*) AS n FROM pgboss.job WHERE name = $1 AND state = 'completed'`,
            [name],
          );
          if (Number(r.rows[0]!.n) >= CYCLES) break;
          await new Promise((r) => setTimeout(r, 5));
        }
        const ms = performance.now() - t0;
        return rate(CYCLES, ms);
      } finally {
        await c.end();
      }
    } finally {
      await boss.stop({ graceful: false, wait: true });
    }
  } finally {
    await dropPgDatabase(db);
  }
}

export async function run(): Promise<void> {
  if (PARTS.has('appends')) await appends();
  if (PARTS.has('cycles')) await cycles();
}

async function appends(): Promise<void> {
  process.stdout.write(
    `appends: ${RECORDS.toLocaleString('en-US')} records of 100 bytes from ${SESSIONS} sessions over ${CONNECTIONS} gRPC streams, durability strict\n`,
  );
  const rows: string[][] = [];
  for (const d of DIALECTS) {
    for (const [batched, depth] of [
      [true, 1],
      [false, 1],
      [true, 8],
    ] as const) {
      const r = await streamAppends(d, batched, depth);
      const total = Math.ceil(RECORDS / SESSIONS) * SESSIONS;
      rows.push([
        d,
        batched ? 'Batches' : 'Session',
        String(depth),
        fmtRate(rate(total, r.ms)),
        fmtRate(rate(total, r.rawMs)),
        `${((r.rawMs / r.ms) * 100).toFixed(1)}%`,
      ]);
    }
  }
  printTable(['dialect', 'gRPC call', 'unacked/session', 'pipe appends/s', 'raw inserts/s', 'pipe/raw'], rows);
  process.stdout.write(
    'note: raw = one transaction of driver INSERTs of the same rows, no per-call work (a ceiling). Batches: many requests per gRPC message; Session: one.\n' +
      '      unacked/session 1: each session awaits the durable ack of its previous append; 8: each session keeps 8 appends in flight (pipelined, kept in order).\n',
  );
}

async function cycles(): Promise<void> {
  process.stdout.write(
    `\ncycles: ${CYCLES.toLocaleString('en-US')} per system, ${PRODUCERS} producers in flight, ${HANDLER_SLOTS} handler slots\n` +
      `  millrace: new + append + store(0) over gRPC → push to a loopback HTTP handler that answers {"action":"delete"} (durability strict; clients and handler in a child process)\n` +
      `  BullMQ:   add(job with the record, delay 0) → worker callback → completed, removeOnComplete\n` +
      `  pg-boss:  send(job with the record, startAfter 0) → work callback → completed\n`,
  );
  const mr: Array<[Dialect, number]> = [];
  for (const d of DIALECTS) mr.push([d, await pipeCycles(d)]);
  const bull = await bullmqCycles();
  const boss = await pgBossCycles();
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
  const cyc: string[][] = mr.map(([d, r]) => [
    `millrace pipe (${d})`,
    fmtRate(r),
    ratio(r, bull),
    ratio(r, boss),
    'fsync per group commit; 3 acked writes per cycle on the producer side + push + delete',
  ]);
  cyc.push(['BullMQ (Redis)', fmtRate(bull), '', '', 'Redis here: appendonly no, no RDB save: not durable']);
  cyc.push(['pg-boss (PostgreSQL)', fmtRate(boss), '', '', 'PostgreSQL commits; completed rows kept for archiving']);
  printTable(['system', 'cycles/s', 'vs BullMQ', 'vs pg-boss', 'note'], cyc);
  process.stdout.write(
    `note: targets ≥ 1× BullMQ and ≥ 5× pg-boss. BullMQ on this Redis loses acknowledged jobs on a Redis crash;\n` +
      `      millrace (strict) and pg-boss (PostgreSQL here: fsync on, synchronous_commit on) survive one. The peers do one\n` +
      `      write to create a job, millrace three (new, append, store). pg-boss (pool max 10, its default) workers are notified on each send;\n` +
      `      without that its minimum 0.5 s polling interval would cap it far lower. The peers' clients share the bench process.\n`,
  );
}
