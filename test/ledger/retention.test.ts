import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/clock.js';
import { createLedgerFace } from '../../src/ledger/ledger-face.js';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, DIALECTS, waitFor } from '../support/env.js';
import { LEDGER_CONFIG, openLedger, type LedgerHarness } from './support.js';

const acc = (client: string) => ({ type: 'commission', key: { client_id: client, currency: 'RUB' } });

// PostgreSQL only: retention drops monthly partitions of ledger_events.
describe.runIf(DIALECTS.includes('postgres')).each(['postgres' as const])('ledger retention (%s)', (dialect) => {
  const clock = new ManualClock(Date.parse('2026-01-15T00:00:00Z'));
  let h: LedgerHarness;
  const exists = async (name: string) =>
    Promise.all(
      h.rt.storage.shards.map(
        async (s) => (await s.reader.all<{ r: string | null }>('SELECT to_regclass(?) AS r', [name]))[0]?.r != null,
      ),
    );
  beforeAll(async () => {
    // The partitions timer fires once at start; its next run lies beyond every date the test moves the clock to,
    // so the drops below are the test's own and not a race with the timer.
    h = await openLedger(dialect, {
      shards: 2,
      clock,
      ledger: { ...LEDGER_CONFIG, retention_months: 2, partitions: { every_ms: 10 * 365 * 86_400_000 } },
    });
    await waitFor(
      async () => (await exists('ledger_events_p202604')).every(Boolean),
      10_000,
      'the first run of the partitions timer',
    );
  });
  afterAll(async () => {
    await h?.close();
  });

  const post = async (client: string, dt: string, amount: string, product = 'p1') => {
    const r = await h.post('/v1/ledger/batches', {
      events: [
        {
          account: { type: 'commission', attrs: { client_id: client, currency: 'RUB', product } },
          side: 'debit',
          amount,
          dt,
        },
      ],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  };
  const balance = async (client: string, dt: string, groupBy?: string[]) => {
    const r = await h.post('/v1/ledger/balances', {
      dt,
      accounts: [{ ...acc(client), ...(groupBy ? { group_by: groupBy } : {}) }],
    });
    return r;
  };

  const later = ['2026-03-05T00:00:00Z', '2026-03-31T23:59:59Z', '2026-04-01T00:00:00Z', '2026-05-20T12:34:00Z'];
  const before = new Map<string, unknown>();

  it('drops an aggregated month older than the horizon, keeps one with unaggregated rows, and balances after it stay exact', async () => {
    await h.face.ledger.ensurePartitions(clock.now()); // 2026-01 .. 2026-04
    await post('ra', '2026-01-10T10:00:00Z', '10.00');
    await post('ra', '2026-01-31T23:30:00Z', '1.25', 'p2');
    await post('rb', '2026-01-03T00:00:00Z', '4.00');
    await post('ra', '2026-02-05T08:00:00Z', '5.00');
    await post('ra', '2026-03-03T00:00:00Z', '1.00');
    await h.face.ledger.aggregateOnce();
    await post('rc', '2026-02-20T00:00:00Z', '7.00'); // left unaggregated
    for (const c of ['ra', 'rb'])
      for (const dt of later)
        for (const g of [undefined, ['product']]) before.set(`${c} ${dt} ${String(g)}`, (await balance(c, dt, g)).body);
    expect((before.get(`ra 2026-04-01T00:00:00Z undefined`) as any).balances[0].groups).toEqual([
      { group: {}, debit: '17.25', credit: '0.00' },
    ]);

    clock.set(Date.parse('2026-05-10T00:00:00Z')); // horizon: 2026-03-01
    expect(h.face.ledger.retentionHorizon()).toBe(Date.parse('2026-03-01T00:00:00Z'));
    const r1 = await h.face.ledger.dropExpiredPartitions(clock.now());
    // January goes on both shards; February stays on the shard holding rc's unaggregated row (it is empty, so dropped, on the other).
    const rcShard = h.face.ledger.accountShard(h.face.ledger.accountType('commission'), ['rc', 'RUB']).name;
    const otherShard = h.rt.storage.shards.find((s) => s.name !== rcShard)!.name;
    expect(r1.dropped.sort()).toEqual(
      [
        `${otherShard}/ledger_events_p202601`,
        `${otherShard}/ledger_events_p202602`,
        `${rcShard}/ledger_events_p202601`,
      ].sort(),
    );
    expect(r1.kept).toEqual([{ partition: `${rcShard}/ledger_events_p202602`, reason: '1 rows not aggregated yet' }]);
    expect(await exists('ledger_events_p202601')).toEqual([false, false]);
    expect(await exists('ledger_events_p202602')).toEqual(h.rt.storage.shards.map((s) => s.name === rcShard));
    expect(await exists('ledger_events_p202603')).toEqual([true, true]);
    for (const c of ['ra', 'rb'])
      for (const dt of later)
        for (const g of [undefined, ['product']])
          expect((await balance(c, dt, g)).body).toEqual(before.get(`${c} ${dt} ${String(g)}`));

    // Once aggregated, February goes too; balances after it are still the same.
    await h.face.ledger.aggregateOnce();
    const r2 = await h.face.ledger.dropExpiredPartitions(clock.now());
    expect(r2.dropped).toEqual([`${rcShard}/ledger_events_p202602`]);
    expect(r2.kept).toEqual([]);
    for (const c of ['ra', 'rb'])
      for (const dt of later)
        for (const g of [undefined, ['product']])
          expect((await balance(c, dt, g)).body).toEqual(before.get(`${c} ${dt} ${String(g)}`));
    expect((await balance('rc', '2026-03-05T00:00:00Z')).body.balances[0].groups).toEqual([
      { group: {}, debit: '7.00', credit: '0.00' },
    ]);
    const t = await h.post('/v1/ledger/turnovers', {
      dt_from: '2026-03-01T00:00:00Z',
      dt_to: '2026-04-01T00:00:00Z',
      accounts: [acc('ra')],
    });
    expect(t.status).toBe(200);
    expect(t.body.turnovers[0].groups).toEqual([
      { group: {}, debit_init: '16.25', credit_init: '0.00', debit_turnover: '1.00', credit_turnover: '0.00' },
    ]);
    expect((await h.face.ledger.dropExpiredPartitions(clock.now())).dropped).toEqual([]); // idempotent
  });

  it('refuses reads and writes dated before the horizon with retention_exceeded', async () => {
    const b = await balance('ra', '2026-02-28T00:00:00Z');
    expect(b.status).toBe(422);
    expect(b.body.error.code).toBe('retention_exceeded');
    const t = await h.post('/v1/ledger/turnovers', {
      dt_from: '2026-01-01T00:00:00Z',
      dt_to: '2026-04-01T00:00:00Z',
      accounts: [acc('ra')],
    });
    expect(t.status).toBe(422);
    const e = await h.post('/v1/ledger/events', {
      dt_from: '2026-02-01T00:00:00Z',
      dt_to: '2026-04-01T00:00:00Z',
      accounts: [acc('ra')],
      limit: 10,
    });
    expect(e.status).toBe(422);
    const w = await h.post('/v1/ledger/batches', {
      events: [
        {
          account: { type: 'commission', attrs: { client_id: 'ra', currency: 'RUB' } },
          side: 'debit',
          amount: '1',
          dt: '2026-02-01T00:00:00Z',
        },
      ],
    });
    expect(w.status).toBe(422);
    expect(w.body.error.code).toBe('retention_exceeded');
    // From the horizon on, reads answer.
    expect((await balance('ra', '2026-03-01T00:00:00Z')).status).toBe(200);
  });
});

describe.runIf(DIALECTS.includes('postgres')).each(['postgres' as const])(
  'ledger without retention (%s)',
  (dialect) => {
    const clock = new ManualClock(Date.parse('2026-01-15T00:00:00Z'));
    let h: LedgerHarness;
    beforeAll(async () => {
      h = await openLedger(dialect, { clock });
    });
    afterAll(async () => {
      await h?.close();
    });

    it('drops nothing and refuses no date', async () => {
      await h.face.ledger.ensurePartitions(clock.now());
      const r = await h.post('/v1/ledger/batches', {
        events: [
          {
            account: { type: 'micro', attrs: { wallet: 'w' } },
            side: 'credit',
            amount: '1',
            dt: '2026-01-02T00:00:00Z',
          },
        ],
      });
      expect(r.status).toBe(200);
      await h.face.ledger.aggregateOnce();
      clock.set(Date.parse('2030-01-01T00:00:00Z'));
      expect(h.face.ledger.retentionHorizon()).toBeNull();
      expect(await h.face.ledger.dropExpiredPartitions(clock.now())).toEqual({ dropped: [], kept: [] });
      expect(
        (
          await h.rt.storage.shards[0]!.reader.all<{ r: string | null }>('SELECT to_regclass(?) AS r', [
            'ledger_events_p202601',
          ])
        )[0]?.r,
      ).not.toBeNull();
      const b = await h.post('/v1/ledger/balances', {
        dt: '2026-01-03T00:00:00Z',
        accounts: [{ type: 'micro', key: { wallet: 'w' } }],
      });
      expect(b.status).toBe(200);
      expect(b.body.balances[0].groups).toEqual([{ group: {}, debit: '0.000000', credit: '1.000000' }]);
    });
  },
);

describe.runIf(DIALECTS.includes('sqlite')).each(['sqlite' as const])('ledger retention (%s)', (dialect) => {
  it('refuses retention_months: SQLite has no partitions to drop', async () => {
    const env = await createTestEnv(dialect, { extra: { ledger: { ...LEDGER_CONFIG, retention_months: 2 } as never } });
    const rt = await Runtime.open(env.config);
    try {
      expect(() => createLedgerFace(rt)).toThrow(/retention_months needs PostgreSQL/);
    } finally {
      await rt.close();
      await env.cleanup();
    }
  });
});
