import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger, type LedgerHarness } from './support.js';

/**
 * Concurrent postings to overlapping accounts on PostgreSQL: many clients,
 * few accounts, legs in both orders, so group-commit writers would lock the
 * same stream rows in opposite orders unless they share one lock order. Every
 * request must be answered 200 and every balance must be exact.
 */
describe('ledger under contention (postgres)', () => {
  let h: LedgerHarness;
  beforeAll(async () => {
    h = await openLedger('postgres');
  });
  afterAll(async () => {
    await h?.close();
  });

  it('concurrent transfers among few accounts: no errors, every balance exact', async () => {
    const accounts = 8;
    const clients = 24;
    const perClient = 20;
    const wallet = (i: number) => ({ type: 'micro', attrs: { wallet: `w${i}` } });
    const debit = new Array<bigint>(accounts).fill(0n);
    const credit = new Array<bigint>(accounts).fill(0n);
    // A fixed pseudo-random sequence: the same load on every run.
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const requests: Array<Record<string, unknown>> = [];
    for (let i = 0; i < clients * perClient; i++) {
      const legs = 2 + rnd(3); // two to four legs
      const events: Array<Record<string, unknown>> = [];
      for (let l = 0; l < legs; l++) {
        const a = rnd(accounts);
        const side = l % 2 === 0 ? 'debit' : 'credit';
        const units = BigInt(1 + rnd(1_000_000));
        (side === 'debit' ? debit : credit)[a]! += units;
        events.push({
          account: wallet(a),
          side,
          amount: `${units / 1_000_000n}.${String(units % 1_000_000n).padStart(6, '0')}`,
        });
      }
      const body: Record<string, unknown> = { dt_default: '2026-03-01T00:00:00Z', events };
      if (i % 5 === 0) body.idempotency_key = `contended-${i}`;
      requests.push(body);
    }
    const shard = h.rt.storage.shards[0]!;
    const deadlocks = async () => {
      await shard.reader.all('SELECT pg_stat_clear_snapshot()');
      return Number(
        (
          await shard.reader.all<{ n: number }>(
            'SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()',
          )
        )[0]!.n,
      );
    };
    const deadlocksBefore = await deadlocks();
    const before = { ...shard.committer.stats };
    const statuses: Array<{ status: number; code?: string }> = [];
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        for (let k = 0; k < perClient; k++) {
          const r = await h.post('/v1/ledger/batches', requests[c * perClient + k]);
          statuses.push(r.status === 200 ? { status: 200 } : { status: r.status, code: r.body?.error?.code });
        }
      }),
    );
    expect(statuses.filter((s) => s.status !== 200)).toEqual([]);
    expect(statuses).toHaveLength(clients * perClient);
    // No transaction lost a race: writers lock in one order, so nothing was
    // re-run (an answer of 200 alone could hide deadlocks healed by re-runs).
    expect(shard.committer.stats.reruns - before.reruns).toBe(0);
    expect((shard.committer.stats.retries ?? 0) - (before.retries ?? 0)).toBe(0);
    // The server also counts deadlocks, once the victim flushes its statistics
    // (a second or more later; the re-run counters above do not depend on that).
    await new Promise((r) => setTimeout(r, 1500));
    expect((await deadlocks()) - deadlocksBefore).toBe(0);

    const fmt = (u: bigint) => `${u / 1_000_000n}.${String(u % 1_000_000n).padStart(6, '0')}`;
    const r = await h.post('/v1/ledger/balances', {
      dt: '2026-03-02T00:00:00Z',
      accounts: Array.from({ length: accounts }, (_, i) => ({ type: 'micro', key: { wallet: `w${i}` } })),
    });
    expect(r.status).toBe(200);
    const got = r.body.balances.map(
      (b: { groups: Array<{ debit: string; credit: string }> }) => b.groups[0] ?? { debit: fmt(0n), credit: fmt(0n) },
    );
    expect(got).toEqual(
      Array.from({ length: accounts }, (_, i) => ({ group: {}, debit: fmt(debit[i]!), credit: fmt(credit[i]!) })),
    );
  });

  it('database errors on a write answer a classified code (never internal), store nothing, and harm no neighbour', async () => {
    const shard = h.rt.storage.shards[0]!;
    // A trigger makes the server refuse chosen rows with a chosen SQLSTATE.
    await shard.write((tx) =>
      tx.run(`CREATE FUNCTION mr_inject() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.info IS NOT NULL AND (NEW.info::jsonb->>'fail') IS NOT NULL THEN RAISE EXCEPTION 'injected' USING ERRCODE = NEW.info::jsonb->>'fail'; END IF;
          RETURN NEW;
        END $$`),
    );
    await shard.write((tx) =>
      tx.run('CREATE TRIGGER mr_inject BEFORE INSERT ON ledger_events FOR EACH ROW EXECUTE FUNCTION mr_inject()'),
    );
    const leg = (wallet: string, side: string, info?: unknown) => ({
      account: { type: 'micro', attrs: { wallet } },
      side,
      amount: '1.000000',
      ...(info === undefined ? {} : { info }),
    });
    const cases: Array<[string, number, string]> = [
      ['40P01', 503, 'unavailable'],
      ['40001', 503, 'unavailable'],
      ['57014', 503, 'unavailable'],
      ['55P03', 503, 'unavailable'],
      ['23514', 409, 'conflict'],
    ];
    const good = Array.from({ length: 30 }, (_, i) => ({
      dt_default: '2026-03-01T00:00:00Z',
      events: [leg(`g${i % 3}`, 'debit'), leg(`g${(i + 1) % 3}`, 'credit')],
    }));
    const bad = cases.map(([code]) => ({
      dt_default: '2026-03-01T00:00:00Z',
      events: [leg('g0', 'debit'), leg(`bad-${code}`, 'credit', { fail: code })],
    }));
    const answers = await Promise.all(
      [...bad, ...good].map((b) => h.app.inject({ method: 'POST', url: '/v1/ledger/batches', payload: b })),
    );
    cases.forEach(([code, status, errorCode], i) => {
      const r = answers[i]!;
      expect(r.statusCode, code).toBe(status);
      expect(r.json().error.code, code).toBe(errorCode);
      if (status === 503) expect(r.headers['retry-after'], code).toBe('1');
    });
    expect(answers.slice(cases.length).map((r) => r.statusCode)).toEqual(good.map(() => 200));
    // The refused batches stored nothing: g0 holds only the good batches' legs.
    const r = await h.post('/v1/ledger/balances', {
      dt: '2026-03-02T00:00:00Z',
      accounts: ['g0', 'g1', 'g2'].map((w) => ({ type: 'micro', key: { wallet: w } })),
    });
    expect(r.body.balances.map((b: { groups: Array<{ debit: string; credit: string }> }) => b.groups[0])).toEqual([
      { group: {}, debit: '10.000000', credit: '10.000000' },
      { group: {}, debit: '10.000000', credit: '10.000000' },
      { group: {}, debit: '10.000000', credit: '10.000000' },
    ]);
    await shard.write((tx) => tx.run('DROP TRIGGER mr_inject ON ledger_events'));
  });
});
