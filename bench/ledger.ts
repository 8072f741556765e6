/**
 * Ledger benchmark (`npm run bench -- ledger`).
 *
 * Write: batches of 10 events from 32 concurrent writers through the ledger,
 * beside a raw INSERT of the same rows into the same table through the same
 * group committer, in the same run (SQLite; PostgreSQL too when
 * LEDGER_BENCH_PG=1).
 *
 * Read: one account with N events over 1,000 days (loaded through the
 * ledger in batches of 10,000, then aggregated); the balance at 100 random
 * dates through aggregates vs a plain SQL SUM over the same table in the same
 * run, p50/p99 and the ratios, each answer checked against the SUM. N is 10k
 * and 100k by default; LEDGER_BENCH_MAX=1000000 adds 1M.
 */
import { buildConfig } from '../src/core/config.js';
import { Ledger } from '../src/ledger/ledger.js';
import { Runtime } from '../src/runtime.js';
import { createPgDatabase, dropPgDatabase, fmtRate, pgUrlFor, pool, printTable, scratchDir } from './support.js';

const LEDGER = {
  accounts: { acc: { key: ['client_id'], aux: ['product'], groupings: [['product']], scale: 2 } },
  aggregation: { enabled: false },
};
const DAY = 86_400_000;
const T0 = Date.parse('2023-01-01T00:00:00Z');

async function open(dialect: 'sqlite' | 'postgres'): Promise<{ rt: Runtime; ledger: Ledger; close: () => Promise<void> }> {
  const scratch = scratchDir();
  let db: string | undefined;
  const shards = dialect === 'postgres' ? [{ name: 's0', url: pgUrlFor((db = await createPgDatabase())) }] : [{ name: 's0' }];
  const config = buildConfig({ data_dir: scratch.dir, logging: { level: 'silent' }, grpc: { enabled: false }, ledger: LEDGER, storage: { dialect, shards } });
  const rt = await Runtime.open(config);
  return {
    rt,
    ledger: new Ledger(rt, config.ledger),
    close: async () => {
      await rt.close();
      if (db) await dropPgDatabase(db);
      scratch.cleanup();
    },
  };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function writeBench(dialect: 'sqlite' | 'postgres', batches: number): Promise<string[]> {
  const { rt, ledger, close } = await open(dialect);
  try {
    const shard = rt.storage.shards[0]!;
    const t0 = performance.now();
    await pool(batches, 32, async (i, w) => {
      await ledger.write({
        events: Array.from({ length: 10 }, (_, j) => ({
          account: { type: 'acc', attrs: { client_id: `w${w}`, product: `p${j % 3}` } },
          side: j % 2 ? 'credit' : 'debit',
          amount: `${(i * 10 + j) % 1000}.25`,
          dt: new Date(T0 + ((i * 10 + j) % 1000) * DAY).toISOString(),
        })),
      });
    });
    const ledgerMs = performance.now() - t0;
    const t1 = performance.now();
    await pool(batches, 32, async (i, w) => {
      await shard.write(async (tx) => {
        const params: unknown[] = [];
        for (let j = 0; j < 10; j++) params.push('raw', 'acc', JSON.stringify([`w${w}`]), JSON.stringify({ product: `p${j % 3}` }), j % 2 ? 'credit' : 'debit', '100025', T0 + ((i * 10 + j) % 1000) * DAY, null);
        await tx.run(`INSERT INTO ledger_events (batch_id, type, acc_key, aux, side, amount, dt, info) VALUES ${Array.from({ length: 10 }, () => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`, params);
      });
    });
    const rawMs = performance.now() - t1;
    const l = (batches * 10 * 1000) / ledgerMs;
    const r = (batches * 10 * 1000) / rawMs;
    return [dialect, String(batches * 10), fmtRate(l), fmtRate(r), (l / r).toFixed(2)];
  } finally {
    await close();
  }
}

async function readBench(total: number): Promise<string[]> {
  const { rt, ledger, close } = await open('sqlite');
  try {
    const shard = rt.storage.shards[0]!;
    // Loaded through the ledger's own write path in batches of 10,000 events
    // (one log event per batch), then aggregated in one run.
    const per = 10_000;
    const tl = performance.now();
    for (let off = 0; off < total; off += per) {
      await ledger.write({
        events: Array.from({ length: per }, (_, j) => {
          const i = off + j;
          return {
            account: { type: 'acc', attrs: { client_id: 'one', product: `p${i % 5}` } },
            side: i % 3 === 0 ? 'credit' : 'debit',
            amount: `${(i % 997) + 1}.${String(i % 100).padStart(2, '0')}`,
            dt: new Date(T0 + Math.floor((i / total) * 1000 * DAY)).toISOString(),
          };
        }),
      });
    }
    const loadMs = performance.now() - tl;
    const ta = performance.now();
    await ledger.aggregateOnce();
    const aggMs = performance.now() - ta;
    // 10 untimed warm-up dates (statement preparation, JIT) for both paths, then 100 timed ones.
    const dates = Array.from({ length: 110 }, () => T0 + Math.floor(Math.random() * 1000 * DAY));
    const viaAgg: number[] = [];
    const viaSum: number[] = [];
    for (const [n, d] of dates.entries()) {
      if (n === 10) {
        viaAgg.length = 0;
        viaSum.length = 0;
      }
      const iso = new Date(d).toISOString();
      let t = performance.now();
      const b = await ledger.balances({ dt: iso, accounts: [{ type: 'acc', key: { client_id: 'one' } }] });
      viaAgg.push(performance.now() - t);
      t = performance.now();
      const rows = await shard.reader.all<{ side: string; s: string }>(
        "SELECT side, CAST(SUM(amount) AS TEXT) AS s FROM ledger_events WHERE type = 'acc' AND acc_key = ? AND dt < ? GROUP BY side",
        [JSON.stringify(['one']), d],
      );
      viaSum.push(performance.now() - t);
      const g = b.balances[0]!.groups[0]!;
      for (const side of ['debit', 'credit'] as const) {
        const want = rows.find((r) => r.side === side)?.s ?? '0';
        if (BigInt(g[side].replace('.', '')) !== BigInt(want)) throw new Error(`${side} mismatch at ${iso}`);
      }
    }
    return [
      String(total),
      `${(loadMs / 1000).toFixed(1)} s`,
      `${(aggMs / 1000).toFixed(1)} s`,
      pct(viaAgg, 50).toFixed(2),
      pct(viaAgg, 99).toFixed(2),
      pct(viaSum, 50).toFixed(2),
      pct(viaSum, 99).toFixed(2),
      `${(pct(viaSum, 50) / pct(viaAgg, 50)).toFixed(0)}x`,
      `${(pct(viaSum, 99) / pct(viaAgg, 99)).toFixed(0)}x`,
    ];
  } finally {
    await close();
  }
}

export async function run(): Promise<void> {
  const batches = Number(process.env.LEDGER_BENCH_BATCHES ?? 2000);
  const writes = [await writeBench('sqlite', batches)];
  if (process.env.LEDGER_BENCH_PG === '1') writes.push(await writeBench('postgres', batches));
  process.stdout.write('\nledger write: batches of 10 events, 32 concurrent writers\n');
  printTable(['dialect', 'events', 'ledger ev/s', 'raw insert ev/s', 'ratio'], writes);
  const max = Number(process.env.LEDGER_BENCH_MAX ?? 100_000);
  const reads: string[][] = [];
  for (const n of [10_000, 100_000, 1_000_000].filter((n) => n <= max)) reads.push(await readBench(n));
  process.stdout.write('\nledger read (SQLite): balance at 100 random dates, one account over 1,000 days (ms)\n');
  printTable(['events', 'load', 'aggregation', 'agg p50', 'agg p99', 'SUM p50', 'SUM p99', 'SUM/agg p50', 'SUM/agg p99'], reads);
}
