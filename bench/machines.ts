/**
 * Machine calls per second and latency with 100 machines called concurrently,
 * each call appending one event, beside the foundation's raw `Log.append`
 * (100 concurrent callers, one event each) measured in the same run on the
 * same storage:
 *
 * - in-process processor (a function registered through the library API);
 * - HTTP processor on loopback (node:http, keep-alive).
 *
 * Calls go through the face's library API (queue, cache, processor, planner,
 * one group-committed transaction per step: row update + event append). The
 * processor sees the last event only (history_range limit 1, backward).
 *
 * Then long histories: the processor gets every event (the default
 * history_range), 100 machines with 10 and with 1,000 events each before the
 * run, 64 calls in flight (machine i % 100), each call appending one event;
 * calls/s at 1,000 events beside calls/s at 10 events (the ratio; each the
 * median of BENCH_MACHINES_HISTORY_RUNS alternating runs on fresh storage,
 * default 3), and the same at 1,000 events with the history cache off
 * (history_cache_mb: 0), with the peak RSS and V8 heap of the process while
 * each case ran.
 *
 * Knobs: BENCH_MACHINES_CALLS (calls per case, default 20000 in-process, a
 * quarter of it over HTTP), BENCH_MACHINES_HISTORY_CALLS (calls per history
 * case, default 5000), BENCH_MACHINES_DIALECTS (default "sqlite,postgres"),
 * BENCH_MACHINES_PARTS (default "steps,history").
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import { Runtime } from '../src/runtime.js';
import { Machines } from '../src/machines/machines.js';
import type { ProcessorFn } from '../src/machines/processor.js';
import {
  createPgDatabase,
  dropPgDatabase,
  fmtRate,
  mb,
  pgUrlFor,
  pool,
  printTable,
  rate,
  scratchDir,
} from './support.js';

const MACHINES = 100;
const CALLS = Number(process.env.BENCH_MACHINES_CALLS ?? 20_000);
const DIALECTS = (process.env.BENCH_MACHINES_DIALECTS ?? 'sqlite,postgres').split(',').map((s) => s.trim());
const HISTORY_CALLS = Number(process.env.BENCH_MACHINES_HISTORY_CALLS ?? 5_000);
const HISTORY_RUNS = Number(process.env.BENCH_MACHINES_HISTORY_RUNS ?? 3);
const PARTS = (process.env.BENCH_MACHINES_PARTS ?? 'steps,history').split(',').map((s) => s.trim());
const IN_FLIGHT = 64;

const answer = (req: { kind: string }): unknown => (req.kind === 'call' ? { response: 'ok', events: [{ n: 1 }] } : {});

function httpProcessor(): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer(JSON.parse(body) as { kind: string })));
    });
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((r) =>
    server.listen(0, '127.0.0.1', () =>
      r({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` }),
    ),
  );
}

const pct = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;

async function measure(
  total: number,
  task: (i: number, w: number) => Promise<void>,
): Promise<{ perS: number; p50: number; p99: number }> {
  const lat: number[] = [];
  const t0 = performance.now();
  await pool(total, MACHINES, async (i, w) => {
    const s = performance.now();
    await task(i, w);
    lat.push(performance.now() - s);
  });
  const ms = performance.now() - t0;
  lat.sort((a, b) => a - b);
  return { perS: rate(total, ms), p50: pct(lat, 50), p99: pct(lat, 99) };
}

export async function run(): Promise<void> {
  if (PARTS.includes('steps')) await runSteps();
  if (PARTS.includes('history')) await runHistory();
}

async function runSteps(): Promise<void> {
  const rows: string[][] = [];
  const http = await httpProcessor();
  const local: ProcessorFn = (req) => answer(req);
  try {
    for (const dialect of DIALECTS) {
      const scratch = scratchDir();
      const db = dialect === 'postgres' ? await createPgDatabase() : undefined;
      const input = {
        node_id: 'bench',
        data_dir: scratch.dir,
        logging: { level: 'silent' },
        storage: { dialect, durability: 'strict', shards: [db ? { name: 's0', url: pgUrlFor(db) } : { name: 's0' }] },
        machines: {
          namespaces: {
            local: { processor: { in_process: 'bench' }, history_range: { direction: 'backward', limit: 1 } },
            http: { processor: { url: http.url }, history_range: { direction: 'backward', limit: 1 } },
          },
        },
      } as ConfigInput;
      const rt = await Runtime.open(buildConfig(input));
      try {
        const m = new Machines(rt, { processors: new Map([['bench', local]]) });
        for (const ns of ['local', 'http'])
          await pool(MACHINES, MACHINES, (i) => m.start(ns, `m${i}`, null).then(() => {}));
        const cases: Array<[string, string, number]> = [
          ['in-process', 'local', CALLS],
          ['HTTP loopback', 'http', Math.max(1000, Math.floor(CALLS / 4))],
        ];
        for (const [label, ns, total] of cases) {
          const log = await measure(total, (i, w) =>
            rt.log.append(`raw/${label}/${w}`, [{ type: 't', data: { n: i } }]).then(() => {}),
          );
          const calls = await measure(total, (_i, w) => m.call(ns, { id: `m${w}` }, { n: 1 }).then(() => {}));
          rows.push([
            `${dialect} ${label}`,
            String(total),
            fmtRate(calls.perS),
            calls.p50.toFixed(1),
            calls.p99.toFixed(1),
            fmtRate(log.perS),
            log.p50.toFixed(1),
            (calls.perS / log.perS).toFixed(2),
          ]);
        }
      } finally {
        await rt.close();
        if (db) await dropPgDatabase(db);
        scratch.cleanup();
      }
    }
  } finally {
    http.server.closeAllConnections();
    http.server.close();
  }
  printTable(
    [
      'case (100 machines, 1 event per call)',
      'calls',
      'calls/s',
      'p50 ms',
      'p99 ms',
      'log appends/s',
      'log p50 ms',
      'ratio',
    ],
    rows,
  );
}

type HistoryResult = Awaited<ReturnType<typeof historyCase>>;

/** The run with the median calls/s (its latencies and memory with it). */
function median(runs: HistoryResult[]): HistoryResult {
  return [...runs].sort((a, b) => a.perS - b.perS)[Math.floor(runs.length / 2)]!;
}

/** Peak RSS and V8 heap while a measurement runs. */
class MemorySampler {
  rss = 0;
  heap = 0;
  private readonly timer: NodeJS.Timeout;
  constructor() {
    this.sample();
    this.timer = setInterval(() => this.sample(), 25);
    this.timer.unref();
  }
  private sample(): void {
    const m = process.memoryUsage();
    if (m.rss > this.rss) this.rss = m.rss;
    if (m.heapUsed > this.heap) this.heap = m.heapUsed;
  }
  stop(): this {
    clearInterval(this.timer);
    this.sample();
    return this;
  }
}

/** One long-history case on fresh storage: machines with `events` events each, then HISTORY_CALLS calls. */
async function historyCase(
  dialect: string,
  events: number,
  cacheMb: number | undefined,
  calls: number,
  overHttp = false,
): Promise<{ perS: number; p50: number; p99: number; rss: number; heap: number; seen: number; cpuUs: number }> {
  const scratch = scratchDir();
  const db = dialect === 'postgres' ? await createPgDatabase() : undefined;
  let seen = 0;
  // The processor looks at the whole history (as a fold over it would) and appends one event per call.
  const fn: ProcessorFn = (req) => {
    const history = (req.machine as { history: unknown[] }).history;
    seen = Math.max(seen, history.length);
    if (req.kind === 'call')
      return { response: history.length, events: [{ kind: 'deposit', amount: 100, n: history.length }] };
    const n = (req as { signal?: { args?: { n?: number } } }).signal?.args?.n ?? 0;
    return { events: Array.from({ length: n }, (_, i) => ({ kind: 'deposit', amount: 100, n: i })) };
  };
  // Over HTTP: the same processor behind a node:http server in this process (it parses every request).
  const server = overHttp
    ? await new Promise<Server>((resolve) => {
        const srv = createServer((req, res) => {
          let body = '';
          req.setEncoding('utf8');
          req.on('data', (d: string) => (body += d));
          req.on('end', () => {
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(JSON.stringify(fn(JSON.parse(body) as Parameters<ProcessorFn>[0], undefined as never)));
          });
        });
        srv.keepAliveTimeout = 60_000;
        srv.listen(0, '127.0.0.1', () => resolve(srv));
      })
    : undefined;
  const processor = server
    ? { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` }
    : { in_process: 'hist' };
  const input = {
    node_id: 'bench',
    data_dir: scratch.dir,
    logging: { level: 'silent' },
    storage: { dialect, durability: 'strict', shards: [db ? { name: 's0', url: pgUrlFor(db) } : { name: 's0' }] },
    machines: { namespaces: { hist: { processor } }, ...(cacheMb === undefined ? {} : { history_cache_mb: cacheMb }) },
  } as ConfigInput;
  const rt = await Runtime.open(buildConfig(input));
  try {
    const m = new Machines(rt, { processors: new Map([['hist', fn]]) });
    await pool(MACHINES, 16, (i) => m.start('hist', `h${i}`, { n: events }).then(() => {}));
    // A warm-up call per machine (outside the measurement): the cache holds what a running node's would.
    await pool(MACHINES, IN_FLIGHT, (i) => m.call('hist', { id: `h${i}` }, null).then(() => {}));
    // PostgreSQL numbers events after commit: let the sequencer finish the set-up's before measuring (else its catch-up is billed to the calls).
    for (const t0 = Date.now(); db && Date.now() - t0 < 300_000;) {
      const rows = await rt.storage.shards[0]!.reader.all<{ n: number | string }>(
        'SELECT count(*) AS n FROM events WHERE pos IS NULL',
        [],
      );
      if (Number(rows[0]!.n) === 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    global.gc?.();
    const mem = new MemorySampler();
    const cpu0 = process.cpuUsage();
    const lat: number[] = [];
    const t0 = performance.now();
    await pool(calls, IN_FLIGHT, async (i) => {
      const s = performance.now();
      await m.call('hist', { id: `h${i % MACHINES}` }, null);
      lat.push(performance.now() - s);
    });
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    mem.stop();
    lat.sort((a, b) => a - b);
    return {
      perS: rate(calls, ms),
      p50: pct(lat, 50),
      p99: pct(lat, 99),
      rss: mem.rss,
      heap: mem.heap,
      seen,
      cpuUs: (cpu.user + cpu.system) / calls,
    };
  } finally {
    await rt.close();
    if (server) {
      server.closeAllConnections();
      server.close();
    }
    if (db) await dropPgDatabase(db);
    scratch.cleanup();
  }
}

async function runHistory(): Promise<void> {
  const rows: string[][] = [];
  for (const dialect of DIALECTS) {
    // The two cached cases alternate, each on fresh storage, HISTORY_RUNS times; the median run of each is shown.
    const shorts: HistoryResult[] = [];
    const longs: HistoryResult[] = [];
    for (let r = 0; r < HISTORY_RUNS; r++) {
      shorts.push(await historyCase(dialect, 10, undefined, HISTORY_CALLS));
      longs.push(await historyCase(dialect, 1000, undefined, HISTORY_CALLS));
    }
    const short = median(shorts);
    const long = median(longs);
    // Without the cache a step reads 1,000 events: fewer calls, once.
    const cold = await historyCase(dialect, 1000, 0, Math.max(200, Math.floor(HISTORY_CALLS / 5)));
    const row = (label: string, events: number, r: HistoryResult): string[] => [
      `${dialect} ${label}`,
      String(events),
      String(r.seen),
      fmtRate(r.perS),
      r.p50.toFixed(1),
      r.p99.toFixed(1),
      r.cpuUs.toFixed(0),
      mb(r.rss),
      mb(r.heap),
      (r.perS / short.perS).toFixed(2),
    ];
    // Over HTTP, once each: the processor parses every event of every request (its cost is in this process too).
    const httpShort = await historyCase(dialect, 10, undefined, Math.floor(HISTORY_CALLS / 2), true);
    const httpLong = await historyCase(dialect, 1000, undefined, Math.floor(HISTORY_CALLS / 2), true);
    rows.push(
      row('history cache', 10, short),
      row('history cache', 1000, long),
      row('no history cache', 1000, cold),
      [...row('HTTP processor', 10, httpShort).slice(0, -1), '1.00'],
      [...row('HTTP processor', 1000, httpLong).slice(0, -1), (httpLong.perS / httpShort.perS).toFixed(2)],
    );
  }
  process.stdout.write(
    `\nLong histories: 100 machines, ${IN_FLIGHT} calls in flight, ${HISTORY_CALLS} calls per case (median of ${HISTORY_RUNS} alternating runs; the no-cache case once, with fewer calls),\n` +
      `the processor gets every event; ratio = calls/s / calls/s at 10 events with the cache, same dialect (HTTP rows: to the HTTP processor at 10 events; one run each)\n`,
  );
  printTable(
    [
      'case (in-process processor)',
      'events before',
      'max history seen',
      'calls/s',
      'p50 ms',
      'p99 ms',
      'CPU µs/call',
      'peak RSS',
      'peak heap',
      'ratio',
    ],
    rows,
  );
  process.stdout.write(
    'CPU µs/call: this process only (all threads; not the PostgreSQL server), the steadier figure on a loaded machine\n',
  );
}
