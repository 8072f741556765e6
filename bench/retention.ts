/**
 * Does the pruning job get in writers' way? Publish throughput (one event per
 * call, BENCH_RETENTION_CONCURRENCY (32) calls in flight,
 * BENCH_RETENTION_EVENTS (3000) per case) on a node whose topic is being
 * pruned all the while (max_events far below what is written, passes run
 * back to back), beside the same node with no pruning (the peer baseline),
 * in the same run, cases alternating over BENCH_RETENTION_ROUNDS (3) rounds,
 * medians shown. Also the pruning rate reached meanwhile. BENCH_RETENTION_DIALECTS
 * ("sqlite,postgres"). No assertions: the box may be shared, so compare the
 * ratio, not the absolute rates.
 */
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import { Runtime } from '../src/runtime.js';
import { BusFace } from '../src/bus/face.js';
import { createPgDatabase, dropPgDatabase, fmtRate, pgUrlFor, pool, printTable, rate, scratchDir } from './support.js';

const EVENTS = Number(process.env.BENCH_RETENTION_EVENTS ?? 3000);
const ROUNDS = Number(process.env.BENCH_RETENTION_ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_RETENTION_CONCURRENCY ?? 32);
const DIALECTS = (process.env.BENCH_RETENTION_DIALECTS ?? 'sqlite,postgres').split(',').map((s) => s.trim());

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function one(rt: Runtime, face: BusFace, prune: boolean): Promise<{ publish: number; pruned: number }> {
  const shard = rt.storage.shards[0]!;
  let stop = false;
  let pruned = 0;
  const pruner = (async () => {
    while (prune && !stop) {
      const r = await rt.pruner.pass(shard);
      pruned += r.removed;
      if (r.removed === 0) await new Promise((res) => setTimeout(res, 5));
    }
  })();
  const t0 = performance.now();
  await pool(EVENTS, CONCURRENCY, async (i) => {
    await face.bus.publish([{ topic: 'hot', key: `k${i % 64}`, type: 'e', data: { i, pad: 'x'.repeat(100) } }]);
  });
  const ms = performance.now() - t0;
  stop = true;
  await pruner;
  return { publish: rate(EVENTS, ms), pruned: rate(pruned, ms) };
}

export async function run(): Promise<void> {
  const rows: string[][] = [];
  for (const dialect of DIALECTS) {
    const scratch = scratchDir();
    const db = dialect === 'postgres' ? await createPgDatabase() : null;
    try {
      const input = {
        data_dir: scratch.dir,
        logging: { level: 'silent' },
        http: { port: 0 },
        grpc: { enabled: false },
        retention: { enabled: false, batch: 500 },
        storage: { dialect, shards: [db === null ? { name: 's0' } : { name: 's0', url: pgUrlFor(db) }] },
        bus: { topics: ['hot'], retention: { hot: { max_events: 500 } } },
      } as ConfigInput;
      const rt = await Runtime.open(buildConfig(input));
      try {
        const face = new BusFace(rt);
        const base: number[] = [];
        const withPrune: number[] = [];
        const pruneRates: number[] = [];
        for (let r = 0; r < ROUNDS; r++) {
          const order = r % 2 === 0 ? [false, true] : [true, false];
          for (const p of order) {
            const x = await one(rt, face, p);
            if (p) {
              withPrune.push(x.publish);
              pruneRates.push(x.pruned);
            } else base.push(x.publish);
          }
        }
        const b = median(base);
        const w = median(withPrune);
        rows.push([dialect, fmtRate(b), fmtRate(w), (w / b).toFixed(2), fmtRate(median(pruneRates))]);
      } finally {
        await rt.close();
      }
    } finally {
      if (db !== null) await dropPgDatabase(db);
      scratch.cleanup();
    }
  }
  printTable(
    ['dialect', 'publish, no pruning (baseline)', 'publish while pruning', 'ratio', 'events pruned/s meanwhile'],
    rows,
  );
}
