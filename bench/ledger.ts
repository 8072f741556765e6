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
 *
 * Contended transfers (PostgreSQL, when LEDGER_BENCH_PG=1; alone with
 * LEDGER_BENCH_ONLY=contended): 20 concurrent clients post two-leg transfers
 * (a debit and a credit in one batch) among 50 accounts of one type on one
 * shard, beside a plain-SQL peer in the same database: a plpgsql function that
 * locks both balance rows in id order, inserts two entries and updates the
 * balances, called by 20 clients over 20 connections. Same server, same
 * durability (synchronous commit), same number of transfers; both sides are
 * checked afterwards (every transfer stored, balances exact, no errors).
 */
import { buildConfig } from '../src/core/config.js';
import { Ledger } from '../src/ledger/ledger.js';
import { Runtime } from '../src/runtime.js';
import pg from 'pg';
import { createPgDatabase, dropPgDatabase, fmtRate, pgUrlFor, pool, printTable, scratchDir } from './support.js';

const LEDGER = {
  accounts: { acc: { key: ['client_id'], aux: ['product'], groupings: [['product']], scale: 2 } },
  aggregation: { enabled: false },
};
const DAY = 86_400_000;
const T0 = Date.parse('2023-01-01T00:00:00Z');

async function open(
  dialect: 'sqlite' | 'postgres',
  storage: Record<string, unknown> = {},
): Promise<{ rt: Runtime; ledger: Ledger; db: string | undefined; close: () => Promise<void> }> {
  const scratch = scratchDir();
  let db: string | undefined;
  const shards =
    dialect === 'postgres' ? [{ name: 's0', url: pgUrlFor((db = await createPgDatabase())) }] : [{ name: 's0' }];
  const config = buildConfig({
    data_dir: scratch.dir,
    logging: { level: 'silent' },
    grpc: { enabled: false },
    ledger: LEDGER,
    storage: { dialect, shards, ...storage },
  });
  const rt = await Runtime.open(config);
  return {
    rt,
    ledger: new Ledger(rt, config.ledger),
    db,
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
        for (let j = 0; j < 10; j++)
          params.push(
            'raw',
            'acc',
            JSON.stringify([`w${w}`]),
            JSON.stringify({ product: `p${j % 3}` }),
            j % 2 ? 'credit' : 'debit',
            '100025',
            T0 + ((i * 10 + j) % 1000) * DAY,
            null,
          );
        await tx.run(
          `INSERT INTO ledger_events (batch_id, type, acc_key, aux, side, amount, dt, info) VALUES ${Array.from({ length: 10 }, () => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
          params,
        );
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

const PEER_SQL = `
  CREATE TABLE peer_accounts (id INT PRIMARY KEY, balance NUMERIC NOT NULL DEFAULT 0);
  CREATE TABLE peer_entries (id BIGSERIAL PRIMARY KEY, account INT NOT NULL, amount NUMERIC NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
  CREATE FUNCTION peer_transfer(src INT, dst INT, amt NUMERIC) RETURNS void LANGUAGE plpgsql AS $$
  BEGIN
    PERFORM 1 FROM peer_accounts WHERE id IN (src, dst) ORDER BY id FOR UPDATE;
    INSERT INTO peer_entries (account, amount) VALUES (src, -amt), (dst, amt);
    UPDATE peer_accounts SET balance = balance - amt WHERE id = src;
    UPDATE peer_accounts SET balance = balance + amt WHERE id = dst;
  END $$;
`;

interface Run {
  ms: number;
  lat: number[];
  errors: number;
}

/** Transfers `from` .. `to`-1 from `clients` concurrent clients; transfer i's accounts and amount are fixed by i, so both sides move the same money. */
async function drive(
  from: number,
  to: number,
  clients: number,
  accounts: number,
  transfer: (src: number, dst: number, amount: string) => Promise<void>,
): Promise<Run> {
  const lat: number[] = [];
  let errors = 0;
  let firstError: unknown;
  const t0 = performance.now();
  await pool(to - from, clients, async (k) => {
    const i = from + k;
    const src = (i * 7919) % accounts;
    const dst = (src + 1 + ((i * 104729) % (accounts - 1))) % accounts;
    const t = performance.now();
    try {
      await transfer(src, dst, `${(i % 97) + 1}.${String(i % 100).padStart(2, '0')}`);
    } catch (err) {
      errors++;
      firstError ??= err;
    }
    lat.push(performance.now() - t);
  });
  const ms = performance.now() - t0;
  if (firstError !== undefined) process.stderr.write(`first error: ${(firstError as Error).message}\n`);
  return { ms, lat, errors };
}

const sum = (runs: Run[]): { rate: number; p50: number; p99: number; errors: number; n: number } => {
  const lat = runs.flatMap((r) => r.lat);
  const ms = runs.reduce((a, r) => a + r.ms, 0);
  return {
    rate: (lat.length * 1000) / ms,
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    n: lat.length,
  };
};

/** Net balance (credits - debits, in units) each account should end with. */
function expected(total: number, accounts: number): bigint[] {
  const want = Array.from({ length: accounts }, () => 0n);
  for (let i = 0; i < total; i++) {
    const src = (i * 7919) % accounts;
    const dst = (src + 1 + ((i * 104729) % (accounts - 1))) % accounts;
    const units = BigInt(((i % 97) + 1) * 100 + (i % 100));
    want[src]! -= units;
    want[dst]! += units;
  }
  return want;
}

async function contendedBench(): Promise<string[][]> {
  const total = Number(process.env.LEDGER_BENCH_TRANSFERS ?? 6000);
  const warm = 500;
  const clients = 20;
  const accounts = 50;
  const { rt, ledger, db, close } = await open('postgres');
  const rows: string[][] = [];
  try {
    const shard = rt.storage.shards[0]!;
    const peer = new pg.Pool({ connectionString: pgUrlFor(db!), max: clients });
    try {
      await peer.query(PEER_SQL);
      await peer.query('INSERT INTO peer_accounts (id) SELECT g FROM generate_series(0, $1::int - 1) g', [accounts]);
      const viaPeer = (src: number, dst: number, amount: string) =>
        peer.query('SELECT peer_transfer($1, $2, $3)', [src, dst, amount]).then(() => undefined);
      const viaLedger = async (src: number, dst: number, amount: string) => {
        await ledger.write({
          events: [
            {
              account: { type: 'acc', attrs: { client_id: `a${src}`, product: 'p' } },
              side: 'debit',
              amount,
              dt: new Date(T0).toISOString(),
            },
            {
              account: { type: 'acc', attrs: { client_id: `a${dst}`, product: 'p' } },
              side: 'credit',
              amount,
              dt: new Date(T0).toISOString(),
            },
          ],
        });
      };
      // Warm-up (connections, prepared statements, streams rows), then the
      // timed runs in alternating rounds (the box is shared: load that comes
      // and goes falls on both sides alike).
      await drive(0, warm, clients, accounts, viaPeer);
      await drive(0, warm, clients, accounts, viaLedger);
      await peer.query('TRUNCATE peer_entries');
      await peer.query('UPDATE peer_accounts SET balance = 0');
      await shard.write((tx) => tx.run('DELETE FROM ledger_events'));
      const before = { ...shard.committer.stats };
      const peerRuns: Run[] = [];
      const ledgerRuns: Run[] = [];
      const rounds = 6;
      for (let r = 0; r < rounds; r++) {
        const from = Math.floor((total * r) / rounds);
        const to = Math.floor((total * (r + 1)) / rounds);
        if (r % 2 === 0) {
          peerRuns.push(await drive(from, to, clients, accounts, viaPeer));
          ledgerRuns.push(await drive(from, to, clients, accounts, viaLedger));
        } else {
          ledgerRuns.push(await drive(from, to, clients, accounts, viaLedger));
          peerRuns.push(await drive(from, to, clients, accounts, viaPeer));
        }
      }
      const p = sum(peerRuns);
      const m = sum(ledgerRuns);
      const st = shard.committer.stats;
      const batches = st.batches - before.batches;
      // Both sides must have stored every transfer exactly.
      const want = expected(total, accounts);
      const peerBal = (
        await peer.query<{ id: number; b: string }>(
          'SELECT id, (balance * 100)::bigint::text AS b FROM peer_accounts ORDER BY id',
        )
      ).rows;
      const ledBal = await shard.reader.all<{ k: string; b: string }>(
        "SELECT acc_key AS k, CAST(SUM(CASE WHEN side = 'credit' THEN amount ELSE -amount END) AS TEXT) AS b FROM ledger_events GROUP BY acc_key",
      );
      const ledMap = new Map(ledBal.map((r) => [r.k, BigInt(r.b)]));
      for (let a = 0; a < accounts; a++) {
        if (BigInt(peerBal[a]!.b) !== want[a])
          throw new Error(`peer balance of account ${a} is ${peerBal[a]!.b}, expected ${want[a]}`);
        const got = ledMap.get(JSON.stringify([`a${a}`])) ?? 0n;
        if (m.errors === 0 && got !== want[a])
          throw new Error(`ledger balance of account ${a} is ${got}, expected ${want[a]}`);
      }
      rows.push([
        'millrace ledger.write',
        fmtRate(m.rate),
        m.p50.toFixed(1),
        m.p99.toFixed(1),
        String(m.errors),
        `${(total / Math.max(1, batches)).toFixed(1)} /commit, ${st.retries - before.retries} retries`,
        (m.rate / p.rate).toFixed(2),
      ]);
      rows.push([
        'plpgsql transfer()',
        fmtRate(p.rate),
        p.p50.toFixed(1),
        p.p99.toFixed(1),
        String(p.errors),
        '1 /commit',
        '1.00',
      ]);
    } finally {
      await peer.end();
    }
  } finally {
    await close();
  }
  return rows;
}

function printContended(rows: string[][]): void {
  process.stdout.write(
    '\nledger contended (PostgreSQL): two-leg transfers, 20 clients, 50 accounts, one shard; ratio = millrace / plpgsql peer\n',
  );
  printTable(['path', 'transfers/s', 'p50 ms', 'p99 ms', 'errors', 'transfers', 'ratio'], rows);
}

export async function run(): Promise<void> {
  if (process.env.LEDGER_BENCH_ONLY === 'contended') {
    printContended(await contendedBench());
    return;
  }
  const batches = Number(process.env.LEDGER_BENCH_BATCHES ?? 2000);
  const writes = [await writeBench('sqlite', batches)];
  if (process.env.LEDGER_BENCH_PG === '1') writes.push(await writeBench('postgres', batches));
  process.stdout.write('\nledger write: batches of 10 events, 32 concurrent writers\n');
  printTable(['dialect', 'events', 'ledger ev/s', 'raw insert ev/s', 'ratio'], writes);
  if (process.env.LEDGER_BENCH_PG === '1') printContended(await contendedBench());
  const max = Number(process.env.LEDGER_BENCH_MAX ?? 100_000);
  const reads: string[][] = [];
  for (const n of [10_000, 100_000, 1_000_000].filter((n) => n <= max)) reads.push(await readBench(n));
  process.stdout.write('\nledger read (SQLite): balance at 100 random dates, one account over 1,000 days (ms)\n');
  printTable(
    ['events', 'load', 'aggregation', 'agg p50', 'agg p99', 'SUM p50', 'SUM p99', 'SUM/agg p50', 'SUM/agg p99'],
    reads,
  );
}
