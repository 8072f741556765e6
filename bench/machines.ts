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
 * Knobs: BENCH_MACHINES_CALLS (calls per case, default 20000 in-process, a
 * quarter of it over HTTP), BENCH_MACHINES_DIALECTS (default "sqlite,postgres").
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import { Runtime } from '../src/runtime.js';
import { Machines } from '../src/machines/machines.js';
import type { ProcessorFn } from '../src/machines/processor.js';
import { createPgDatabase, dropPgDatabase, fmtRate, pgUrlFor, pool, printTable, rate, scratchDir } from './support.js';

const MACHINES = 100;
const CALLS = Number(process.env.BENCH_MACHINES_CALLS ?? 20_000);
const DIALECTS = (process.env.BENCH_MACHINES_DIALECTS ?? 'sqlite,postgres').split(',').map((s) => s.trim());

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
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` })));
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;

async function measure(total: number, task: (i: number, w: number) => Promise<void>): Promise<{ perS: number; p50: number; p99: number }> {
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
        for (const ns of ['local', 'http']) await pool(MACHINES, MACHINES, (i) => m.start(ns, `m${i}`, null).then(() => {}));
        const cases: Array<[string, string, number]> = [
          ['in-process', 'local', CALLS],
          ['HTTP loopback', 'http', Math.max(1000, Math.floor(CALLS / 4))],
        ];
        for (const [label, ns, total] of cases) {
          const log = await measure(total, (i, w) => rt.log.append(`raw/${label}/${w}`, [{ type: 't', data: { n: i } }]).then(() => {}));
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
  printTable(['case (100 machines, 1 event per call)', 'calls', 'calls/s', 'p50 ms', 'p99 ms', 'log appends/s', 'log p50 ms', 'ratio'], rows);
}
