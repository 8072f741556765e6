import type { ChildProcess } from 'node:child_process';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';
import { createLedgerFace, type LedgerFace } from '../../src/ledger/ledger-face.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { verifyShard } from '../../src/log/verify.js';
import { Runtime } from '../../src/runtime.js';
import { readState } from '../../src/storage/routing-state.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { collect, spawnTs, writeConfigFile } from '../support/proc.js';

/**
 * Three shards: s0 owns [0, 8), s1 [8, end), s2 is a spare; s1 splits at c,
 * moving [c, end) to s2. Transfers run among wallets of all three ranges, so
 * batches span two shards and some of their parts move while they run.
 */
const SPLIT_LEDGER = {
  accounts: { wallet: { key: ['wallet'], aux: ['kind'], groupings: [['kind']], scale: 0 } },
  locks: { client: { key: ['client_id'] } },
  states: { contract: { key: ['contract_id'] } },
  aggregation: { period: 'day', timezone: 'UTC', enabled: true },
};

function threeWithSpare(env: TestEnv): ConfigInput {
  const input = structuredClone(env.input) as ConfigInput & { storage: { shards: Array<Record<string, unknown>> } };
  const [s0, s1, s2] = input.storage.shards;
  s0!.from = '0';
  s0!.to = '8';
  s1!.from = '8';
  delete s1!.to;
  delete s2!.from;
  delete s2!.to;
  s2!.spare = true;
  return input;
}

const hashOf = (key: readonly string[]): bigint => sha1(shardKeyText(key));
/** Where a key lives after the split. */
const home = (key: readonly string[]): string =>
  hashOf(key) < parseHashBound('8') ? 's0' : hashOf(key) < parseHashBound('c') ? 's1' : 's2';

interface Transfer {
  batch: string;
  from: string;
  to: string;
  amount: number;
  dt: string;
}

async function retrying<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!isMillraceError(err) || !err.retryable || i > 500) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

function transfer(ledger: Ledger, from: string, to: string, amount: number, dt: string): Promise<Transfer> {
  return retrying(() =>
    ledger.write({
      dt_default: dt,
      events: [
        { account: { type: 'wallet', attrs: { wallet: from, kind: 'a' } }, side: 'debit', amount: String(amount) },
        { account: { type: 'wallet', attrs: { wallet: to, kind: 'b' } }, side: 'credit', amount: String(amount) },
      ],
    }),
  ).then((a) => ({ batch: a.batch_id, from, to, amount, dt }));
}

/** Debit and credit of each wallet from transfers dated before `dt`. */
function expected(
  transfers: readonly Transfer[],
  wallets: readonly string[],
  dt: string,
): Map<string, [number, number]> {
  const out = new Map(wallets.map((w) => [w, [0, 0] as [number, number]]));
  const limit = Date.parse(dt);
  for (const t of transfers) {
    if (Date.parse(t.dt) >= limit) continue;
    out.get(t.from)![0] += t.amount;
    out.get(t.to)![1] += t.amount;
  }
  return out;
}

async function balances(
  ledger: Ledger,
  wallets: readonly string[],
  dt: string,
): Promise<Map<string, [number, number]>> {
  const b = await ledger.balances({ dt, accounts: wallets.map((w) => ({ type: 'wallet', key: { wallet: w } })) });
  return new Map(
    wallets.map((w, i) => [
      w,
      [Number(b.balances[i]!.groups[0]?.debit ?? 0), Number(b.balances[i]!.groups[0]?.credit ?? 0)],
    ]),
  );
}

/** What the ledger reads of the first quarter: balances at two dates, turnovers, the events of every wallet. */
async function quarter(ledger: Ledger, wallets: readonly string[]): Promise<unknown> {
  const accounts = wallets.map((w) => ({ type: 'wallet', key: { wallet: w }, group_by: ['kind'] }));
  const events = [];
  for (const w of wallets) {
    const page = await ledger.events({
      dt_from: '2026-01-01',
      dt_to: '2026-04-01',
      accounts: [{ type: 'wallet', key: { wallet: w } }],
      limit: 1000,
    });
    events.push(page.events.map((e) => ({ ...e, shard: undefined })));
  }
  return {
    feb: await ledger.balances({ dt: '2026-02-01', accounts }),
    apr: await ledger.balances({ dt: '2026-04-01', accounts }),
    turnovers: await ledger.turnovers({ dt_from: '2026-01-15', dt_to: '2026-03-15', accounts }),
    events,
  };
}

describe.each(DIALECTS)('a shard split moves the ledger (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  let face: LedgerFace;
  /** PostgreSQL: a second node taking half the load, following the new routing unrestarted. */
  let rt2: Runtime | undefined;
  let face2: LedgerFace | undefined;

  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 3, extra: { ledger: SPLIT_LEDGER as never } });
    rt = await Runtime.open(buildConfig(threeWithSpare(env)));
    face = createLedgerFace(rt);
    await face.start();
    if (dialect === 'postgres') {
      rt2 = await Runtime.open(buildConfig({ ...threeWithSpare(env), node_id: `${env.config.node_id}-b` }));
      face2 = createLedgerFace(rt2);
      await face2.start();
    }
  });
  afterAll(async () => {
    await face2?.stop();
    await rt2?.close();
    await face?.stop();
    await rt?.close();
    await env?.cleanup();
  });

  it('moves accounts, locks, states and idempotency records under transfer load; nothing lost, doubled or half written', async () => {
    const ledger = face.ledger;
    const wallets = Array.from({ length: 24 }, (_, i) => `w${i}`);
    const clients = Array.from({ length: 12 }, (_, i) => `c${i}`);
    for (const where of ['s0', 's1', 's2']) {
      expect(
        wallets.some((w) => home([w]) === where),
        where,
      ).toBe(true);
      expect(
        clients.some((c) => home([c]) === where),
        where,
      ).toBe(true);
    }
    const acked: Transfer[] = [];
    // The first quarter, written before the split.
    for (let i = 0; i < 60; i++) {
      const dt = `2026-0${1 + (i % 3)}-${String(1 + (i % 27)).padStart(2, '0')}T10:00:00Z`;
      acked.push(await transfer(ledger, wallets[i % 24]!, wallets[(i * 7 + 5) % 24]!, 1 + (i % 9), dt));
    }
    for (const c of clients) {
      await ledger.acquireLock({
        type: 'client',
        attrs: { client_id: c },
        uid: `u-${c}`,
        mode: 'exclusive',
        timeout_s: 3600,
      });
      await ledger.write({ states: [{ type: 'contract', attrs: { contract_id: c }, state: { n: 1, c } }] });
    }
    const idem = new Map<string, unknown>();
    for (let i = 0; i < 8; i++) {
      const key = `idem-${i}`;
      const a = await ledger.write({
        idempotency_key: key,
        dt_default: '2026-03-20T00:00:00Z',
        events: [
          { account: { type: 'wallet', attrs: { wallet: wallets[i]!, kind: 'a' } }, side: 'debit', amount: '100' },
          {
            account: { type: 'wallet', attrs: { wallet: wallets[23 - i]!, kind: 'b' } },
            side: 'credit',
            amount: '100',
          },
        ],
      });
      idem.set(key, a);
      acked.push({
        batch: a.batch_id,
        from: wallets[i]!,
        to: wallets[23 - i]!,
        amount: 100,
        dt: '2026-03-20T00:00:00Z',
      });
    }
    const before = await quarter(ledger, wallets);
    const maxIdBefore = new Map<string, number>();
    for (const w of wallets) {
      const e = await ledger.events({
        dt_from: '2026-01-01',
        dt_to: '2026-04-01',
        accounts: [{ type: 'wallet', key: { wallet: w } }],
        limit: 1000,
      });
      maxIdBefore.set(w, Math.max(...e.events.map((x) => x.id)));
    }

    // Transfers dated in April run while s1 splits (both nodes where there are two).
    let stop = false;
    let n = 0;
    const load = Promise.all(
      Array.from({ length: 6 }, async (_, worker) => {
        for (let i = 0; !stop; i++) {
          const via = face2 !== undefined && worker % 2 === 1 ? face2.ledger : ledger;
          const a = wallets[(worker * 5 + i) % 24]!;
          const b = wallets[(worker * 11 + i * 7 + 1) % 24]!;
          if (a === b) continue;
          acked.push(
            await transfer(via, a, b, 1 + (i % 5), `2026-04-${String(1 + (i % 28)).padStart(2, '0')}T08:00:00Z`),
          );
          n++;
        }
      }),
    );
    try {
      await waitFor(() => n >= 30, 30_000, 'load running');
      const job = await rt.splitter.start('s1', 'c', 's2');
      await rt.splitter.wait(job.id);
      expect((await rt.splitter.jobs()).find((j) => j.id === job.id)).toMatchObject({ phase: 'done' });
      const atDone = n;
      await waitFor(() => n >= atDone + 30, 30_000, 'load after the cut-over');
    } finally {
      stop = true;
      await load;
    }
    if (rt2 !== undefined) {
      await waitFor(() => rt2!.storage.states.get('s2')?.ranges.length === 1, 10_000, 'node b sees the split');
    }
    const [s0, s1, s2] = ['s0', 's1', 's2'].map((s) => rt.storage.shard(s));
    expect((await readState(s2!.reader))!.ranges.map((r) => [r.from.toString(16), r.fenced])).toEqual([
      ['c' + '0'.repeat(39), false],
    ]);

    // Every acknowledged transfer once, with both legs; no batch half written or doubled.
    const legs = new Map<string, string[]>();
    for (const s of [s0!, s1!, s2!]) {
      const rows = await s.reader.all<{ batch_id: string; acc_key: string; side: string }>(
        'SELECT batch_id, acc_key, side FROM ledger_events',
      );
      for (const r of rows) {
        const w = (JSON.parse(r.acc_key) as string[])[0]!;
        expect(home([w]), `${w} on ${s.name}`).toBe(s.name);
        legs.set(r.batch_id, [...(legs.get(r.batch_id) ?? []), `${r.side}:${w}`]);
      }
    }
    expect(legs.size).toBe(acked.length);
    for (const t of acked) expect(legs.get(t.batch)?.sort(), t.batch).toEqual([`credit:${t.to}`, `debit:${t.from}`]);
    expect(new Set(acked.map((t) => t.batch)).size).toBe(acked.length);

    // Reads of the first quarter are as before the split; balances now are the acknowledged transfers'.
    expect(await quarter(ledger, wallets)).toEqual(before);
    expect(await balances(ledger, wallets, '2026-06-01')).toEqual(expected(acked, wallets, '2026-06-01'));
    // The target's aggregator rebuilt the moved accounts' aggregates from their imported streams; reads stay exact.
    await waitFor(
      async () =>
        Number(
          (await s2!.reader.all<{ n: number }>('SELECT count(*) AS n FROM ledger_events WHERE pos IS NULL'))[0]!.n,
        ) === 0,
      30_000,
      'moved events aggregated on the target',
    );
    expect(
      Number((await s2!.reader.all<{ n: number }>('SELECT count(*) AS n FROM ledger_aggregates'))[0]!.n),
    ).toBeGreaterThan(0);
    expect(await quarter(ledger, wallets)).toEqual(before);
    expect(await balances(ledger, wallets, '2026-06-01')).toEqual(expected(acked, wallets, '2026-06-01'));
    if (face2 !== undefined) expect(await quarter(face2.ledger, wallets)).toEqual(before);

    // Ids: a moved account's new events come after its old ones (the target's counter passed them).
    const moved = wallets.filter((w) => home([w]) === 's2');
    const t = await transfer(ledger, moved[0]!, moved[1]!, 1, '2026-05-01T00:00:00Z');
    acked.push(t);
    for (const w of [moved[0]!, moved[1]!]) {
      const e = await ledger.events({
        dt_from: '2026-05-01',
        dt_to: '2026-05-02',
        accounts: [{ type: 'wallet', key: { wallet: w } }],
        limit: 10,
      });
      expect(e.events.find((x) => x.batch_id === t.batch)!.id).toBeGreaterThan(maxIdBefore.get(w)!);
    }
    const ids = await s2!.reader.all<{ n: number; d: number }>(
      'SELECT count(*) AS n, count(DISTINCT id) AS d FROM ledger_events',
    );
    expect(Number(ids[0]!.n)).toBe(Number(ids[0]!.d));
    if (dialect === 'postgres') {
      // The moved months' partitions were made on the target.
      for (const p of ['ledger_events_p202601', 'ledger_events_p202603', 'ledger_events_p202604'])
        expect((await s2!.reader.all<{ r: string | null }>('SELECT to_regclass(?) AS r', [p]))[0]!.r, p).not.toBeNull();
    }

    // Locks and states moved with their keys, and keep working.
    for (const c of clients) {
      const l = await ledger.getLock({ type: 'client', attrs: { client_id: c } });
      expect(
        l.holders.map((h) => h.uid),
        c,
      ).toEqual([`u-${c}`]);
      const st = await ledger.getState({ type: 'contract', attrs: { contract_id: c } });
      expect(st, c).toMatchObject({ state: { n: 1, c }, version: 1 });
      for (const s of [s0!, s1!, s2!]) {
        const rows = await s.reader.all('SELECT 1 AS x FROM ledger_locks WHERE lock_key = ?', [JSON.stringify([c])]);
        expect(rows.length, `${c} lock on ${s.name}`).toBe(home([c]) === s.name ? 1 : 0);
        const states = await s.reader.all('SELECT 1 AS x FROM ledger_states WHERE state_key = ?', [
          JSON.stringify([c]),
        ]);
        expect(states.length, `${c} state on ${s.name}`).toBe(home([c]) === s.name ? 1 : 0);
      }
      const a = await ledger.write({
        locks: [{ type: 'client', attrs: { client_id: c }, uid: `u-${c}` }],
        states: [{ type: 'contract', attrs: { contract_id: c }, state: { n: 2, c }, expected_version: 1 }],
      });
      expect(a.states[0]!.version).toBe(2);
      expect(await ledger.releaseLock({ type: 'client', attrs: { client_id: c }, uid: `u-${c}` })).toEqual({
        released: true,
      });
    }
    // An idempotent batch retried after the split answers as before and writes nothing more.
    for (const [key, answer] of idem) {
      const i = Number(key.split('-')[1]);
      const again = await ledger.write({
        idempotency_key: key,
        dt_default: '2026-03-20T00:00:00Z',
        events: [
          { account: { type: 'wallet', attrs: { wallet: wallets[i]!, kind: 'a' } }, side: 'debit', amount: '100' },
          {
            account: { type: 'wallet', attrs: { wallet: wallets[23 - i]!, kind: 'b' } },
            side: 'credit',
            amount: '100',
          },
        ],
      });
      expect(again).toEqual(answer);
    }
    expect(await balances(ledger, wallets, '2026-06-01')).toEqual(expected(acked, wallets, '2026-06-01'));
    for (const s of [s0!, s1!, s2!]) {
      await waitFor(
        async () =>
          Number((await s.reader.all<{ n: number }>('SELECT count(*) AS n FROM events WHERE pos IS NULL'))[0]!.n) === 0,
        10_000,
        'numbered',
      );
      expect((await verifyShard(s)).ok, s.name).toBe(true);
    }
  });
});

describe.skipIf(!DIALECTS.includes('postgres'))(
  'a two-shard batch whose second part moved while its first part was held (postgres)',
  () => {
    let env: TestEnv;
    let rt: Runtime;
    let face: LedgerFace;
    beforeAll(async () => {
      env = await createTestEnv('postgres', { shards: 3, extra: { ledger: SPLIT_LEDGER as never } });
      rt = await Runtime.open(buildConfig(threeWithSpare(env)));
      face = createLedgerFace(rt);
    });
    afterAll(async () => {
      await face?.stop();
      await rt?.close();
      await env?.cleanup();
    });

    it('routed before the split, refused on the source after it: the part follows its keys to the target, the batch is whole', async () => {
      const ledger = face.ledger;
      const low = Array.from({ length: 50 }, (_, i) => `w${i}`).find((w) => home([w]) === 's0')!;
      const high = Array.from({ length: 50 }, (_, i) => `w${i}`).find((w) => home([w]) === 's2')!;
      const client = Array.from({ length: 50 }, (_, i) => `c${i}`).find((c) => home([c]) === 's0')!;
      await ledger.acquireLock({
        type: 'client',
        attrs: { client_id: client },
        uid: 'u',
        mode: 'exclusive',
        timeout_s: 3600,
      });
      // Another session holds the lock head of the batch's first part (on s0): the part waits, routed by the old table.
      const url = (env.input as { storage: { shards: Array<{ url: string }> } }).storage.shards[0]!.url;
      const held = new pg.Client({ connectionString: url });
      await held.connect();
      try {
        await held.query('BEGIN');
        await held.query("UPDATE ledger_lock_heads SET n = n WHERE type = 'client'");
        const batch = ledger
          .write({
            dt_default: '2026-02-01T00:00:00Z',
            locks: [{ type: 'client', attrs: { client_id: client }, uid: 'u' }],
            events: [
              { account: { type: 'wallet', attrs: { wallet: low, kind: 'a' } }, side: 'debit', amount: '7' },
              { account: { type: 'wallet', attrs: { wallet: high, kind: 'b' } }, side: 'credit', amount: '7' },
            ],
          })
          .then(
            (a) => ({ a }),
            (err: unknown) => ({ err }),
          );
        const job = await rt.splitter.start('s1', 'c', 's2');
        await rt.splitter.wait(job.id);
        expect((await rt.splitter.jobs())[0]!.phase).toBe('done');
        await held.query('COMMIT');
        const r = await batch;
        expect('err' in r ? r.err : undefined).toBeUndefined();
        const id = (r as { a: { batch_id: string } }).a.batch_id;
        const where = async (s: string) =>
          (
            await rt.storage
              .shard(s)
              .reader.all<{ acc_key: string }>('SELECT acc_key FROM ledger_events WHERE batch_id = ?', [id])
          ).map((x) => x.acc_key);
        expect(await where('s0')).toEqual([JSON.stringify([low])]);
        expect(await where('s1')).toEqual([]);
        expect(await where('s2')).toEqual([JSON.stringify([high])]);
      } finally {
        await held.end();
      }
    });
  },
);

/** Each run of the splitting node is killed at the next of these steps; the last run finishes. */
const KILLS = ['copied', 'final-copy', 'switch', 'release', 'cleanup'];

describe.each(DIALECTS)('a ledger split survives kill -9 of the splitting node at every phase (%s)', (dialect) => {
  let env: TestEnv;
  let child: ChildProcess | undefined;
  beforeAll(async () => {
    env = await createTestEnv(dialect, {
      shards: 3,
      extra: { ledger: SPLIT_LEDGER as never, cluster: { role_lease_ms: 1000 } } as never,
    });
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await env?.cleanup();
  });

  it('resumes after each kill; every answered transfer is kept once with both legs, balances are exact, locks and states moved', async () => {
    const cfg = writeConfigFile(env.dataDir, threeWithSpare(env));
    const acked: Transfer[] = [];
    const runs = [...KILLS, undefined];
    for (let i = 0; i < runs.length; i++) {
      const args = [cfg, String(i), ...(i === 0 ? ['start'] : []), ...(runs[i] ? ['--kill-at', runs[i]!] : [])];
      child = spawnTs('test/support/split-ledger-child.ts', args);
      const r = await collect(child);
      for (const l of r.stdout.split('\n')) {
        if (!l.startsWith('{')) continue;
        const o = JSON.parse(l) as { ack?: Omit<Transfer, 'dt'> };
        if (o.ack) acked.push({ ...o.ack, dt: '' });
      }
      if (runs[i] !== undefined)
        expect(r.signal, `run ${i} (kill at ${runs[i]}): ${r.stderr.slice(-2000)}`).toBe('SIGKILL');
      else expect(r.code, r.stderr.slice(-2000)).toBe(0);
    }

    const rt = await Runtime.open(buildConfig({ ...threeWithSpare(env), node_id: 'checker' }), { background: false });
    const face = createLedgerFace(rt);
    try {
      const ledger = face.ledger;
      expect((await rt.splitter.jobs()).map((j) => j.phase)).toEqual(['done']);
      const shards = ['s0', 's1', 's2'].map((s) => rt.storage.shard(s));
      // Every event where its wallet lives now, each batch at most one leg per side: nothing doubled.
      const legs = new Map<string, string[]>();
      const sums = new Map<string, [number, number]>();
      for (const s of shards) {
        const rows = await s.reader.all<{ batch_id: string; acc_key: string; side: string; amount: string }>(
          'SELECT batch_id, acc_key, side, amount FROM ledger_events',
        );
        for (const r of rows) {
          const w = (JSON.parse(r.acc_key) as string[])[0]!;
          expect(home([w]), `${w} on ${s.name}`).toBe(s.name);
          legs.set(r.batch_id, [...(legs.get(r.batch_id) ?? []), `${r.side}:${w}`]);
          const t = sums.get(w) ?? [0, 0];
          t[r.side === 'debit' ? 0 : 1] += Number(r.amount);
          sums.set(w, t);
        }
      }
      for (const [batch, l] of legs) expect(new Set(l.map((x) => x.split(':')[0])).size, batch).toBe(l.length);
      // Nothing lost: every answered transfer, both legs.
      expect(acked.length).toBeGreaterThan(100);
      for (const t of acked) expect(legs.get(t.batch)?.sort(), t.batch).toEqual([`credit:${t.to}`, `debit:${t.from}`]);
      // Balances read what is stored, before and after the aggregators catch up (no sum rebuilt twice or lost).
      const wallets = [...sums.keys()];
      expect(wallets.some((w) => home([w]) === 's2')).toBe(true);
      const stored = new Map(wallets.map((w) => [w, sums.get(w)!]));
      expect(await balances(ledger, wallets, '2027-01-01')).toEqual(stored);
      await ledger.aggregateOnce();
      for (const s of shards) {
        const n = await s.reader.all<{ n: number }>('SELECT count(*) AS n FROM ledger_events WHERE pos IS NULL');
        expect(Number(n[0]!.n), s.name).toBe(0);
      }
      expect(await balances(ledger, wallets, '2027-01-01')).toEqual(stored);
      // Locks and states where their keys live, readable through routing.
      for (let i = 0; i < 12; i++) {
        const c = `c${i}`;
        expect(
          (await ledger.getLock({ type: 'client', attrs: { client_id: c } })).holders.map((h) => h.uid),
          c,
        ).toEqual([`u-${c}`]);
        expect(await ledger.getState({ type: 'contract', attrs: { contract_id: c } }), c).toMatchObject({
          state: { c },
          version: 1,
        });
        for (const s of shards) {
          const rows = await s.reader.all('SELECT 1 AS x FROM ledger_states WHERE state_key = ?', [
            JSON.stringify([c]),
          ]);
          expect(rows.length, `${c} state on ${s.name}`).toBe(home([c]) === s.name ? 1 : 0);
        }
      }
      for (const s of shards) expect((await verifyShard(s)).ok, s.name).toBe(true);
    } finally {
      await rt.close();
    }
  }, 300_000);
});
