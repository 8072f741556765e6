import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from '../support/env.js';
import { openLedger, type LedgerHarness } from './support.js';

const DAY = 86_400_000;
const T0 = Date.parse('2026-03-01T00:00:00Z');
const GROUPINGS: string[][] = [[], ['product'], ['region'], ['product', 'region']];

// Dates anywhere in the range, or crowded into a few minutes and hours of
// day 3 (on their marks, or a few ms off), so events and read dates share the
// period's turnover buckets and land on their edges.
const atArb = (min: number, max: number) =>
  fc.oneof(
    fc.integer({ min, max }),
    fc
      .tuple(fc.integer({ min: 0, max: 3 }), fc.constantFrom(0, 1, 30_000, 59_999))
      .map(([m, o]) => 3 * DAY + 5 * 3_600_000 + m * 60_000 + o),
    fc.tuple(fc.integer({ min: 0, max: 5 }), fc.constantFrom(0, -1, 1)).map(([h, o]) => 3 * DAY + h * 3_600_000 + o),
  );

const eventArb = fc.record({
  client: fc.integer({ min: 0, max: 5 }),
  product: fc.constantFrom('p1', 'p2', undefined),
  region: fc.constantFrom('r1', 'r2', undefined),
  side: fc.constantFrom('debit' as const, 'credit' as const),
  units: fc.bigInt({ min: 1n, max: 10n ** 12n }),
  at: atArb(0, 12 * DAY - 1),
});
const cmdArb = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.array(eventArb, { minLength: 1, maxLength: 6 }).map((events) => ({ kind: 'batch' as const, events })),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'aggregate' as const }) },
  { weight: 1, arbitrary: atArb(-DAY, 13 * DAY).map((at) => ({ kind: 'check' as const, at })) },
);

const fmt = (u: bigint) => `${u / 100n}.${(u % 100n).toString().padStart(2, '0')}`;

// Each (dialect) runs the same property; PostgreSQL with 3 shards.
describe.each(DIALECTS)('ledger property (%s)', (dialect) => {
  let h: LedgerHarness;
  let run = 0;
  beforeAll(async () => {
    h = await openLedger(dialect, { shards: dialect === 'postgres' ? 3 : 1 });
  });
  afterAll(async () => {
    await h?.close();
  });

  /** Plain SQL SUM over the same events, rolled up to the grouping. */
  async function sqlSums(
    client: string,
    from: number | null,
    to: number,
    grouping: string[],
  ): Promise<Map<string, { d: bigint; c: bigint }>> {
    const keyText = JSON.stringify([client, 'RUB']);
    const shard = h.rt.storage.shardFor([client]);
    const rows = await shard.reader.all<{ side: string; aux: string; s: string }>(
      `SELECT side, aux, CAST(SUM(amount) AS TEXT) AS s FROM ledger_events WHERE type = 'commission' AND acc_key = ? AND dt >= ? AND dt < ? GROUP BY side, aux`,
      [keyText, from ?? -1e15, to],
    );
    const out = new Map<string, { d: bigint; c: bigint }>();
    for (const r of rows) {
      const aux = JSON.parse(r.aux) as Record<string, string>;
      const k = JSON.stringify(Object.fromEntries(grouping.map((a) => [a, aux[a] ?? null])));
      const g = out.get(k) ?? { d: 0n, c: 0n };
      if (r.side === 'debit') g.d += BigInt(r.s);
      else g.c += BigInt(r.s);
      out.set(k, g);
    }
    return out;
  }

  async function check(clients: string[], at: number): Promise<void> {
    const dt = new Date(T0 + at).toISOString();
    const from = new Date(T0 + at - 2 * DAY - 12345).toISOString();
    for (const g of GROUPINGS) {
      const accounts = clients.map((c) => ({
        type: 'commission',
        key: { client_id: c, currency: 'RUB' },
        ...(g.length ? { group_by: g } : {}),
      }));
      const b = await h.post('/v1/ledger/balances', { dt, accounts });
      expect(b.status).toBe(200);
      const t = await h.post('/v1/ledger/turnovers', { dt_from: from, dt_to: dt, accounts });
      expect(t.status).toBe(200);
      for (let i = 0; i < clients.length; i++) {
        const want = await sqlSums(clients[i]!, null, T0 + at, g);
        const got = new Map<string, { d: string; c: string }>(
          b.body.balances[i].groups.map((x: { group: object; debit: string; credit: string }) => [
            JSON.stringify(x.group),
            { d: x.debit, c: x.credit },
          ]),
        );
        const wantS = new Map([...want].map(([k, v]) => [k, { d: fmt(v.d), c: fmt(v.c) }]));
        if (g.length === 0 && wantS.size === 0) wantS.set('{}', { d: '0.00', c: '0.00' });
        expect(Object.fromEntries(got)).toEqual(Object.fromEntries(wantS));
        const init = await sqlSums(clients[i]!, null, T0 + at - 2 * DAY - 12345, g);
        const turn = await sqlSums(clients[i]!, T0 + at - 2 * DAY - 12345, T0 + at, g);
        for (const x of t.body.turnovers[i].groups as Array<{
          group: object;
          debit_init: string;
          credit_init: string;
          debit_turnover: string;
          credit_turnover: string;
        }>) {
          const k = JSON.stringify(x.group);
          const a = init.get(k) ?? { d: 0n, c: 0n };
          const z = turn.get(k) ?? { d: 0n, c: 0n };
          expect([x.debit_init, x.credit_init, x.debit_turnover, x.credit_turnover]).toEqual([
            fmt(a.d),
            fmt(a.c),
            fmt(z.d),
            fmt(z.c),
          ]);
        }
      }
    }
  }

  it('every balance and turnover equals a plain SQL SUM, for every grouping, with backdated events and aggregation interleaved', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(cmdArb, { minLength: 3, maxLength: 14 }), async (cmds) => {
        run++;
        const clients = Array.from({ length: 6 }, (_, i) => `r${run}c${i}`);
        for (const cmd of cmds) {
          if (cmd.kind === 'batch') {
            const r = await h.post('/v1/ledger/batches', {
              events: cmd.events.map((e) => ({
                account: {
                  type: 'commission',
                  attrs: {
                    client_id: clients[e.client]!,
                    currency: 'RUB',
                    ...(e.product ? { product: e.product } : {}),
                    ...(e.region ? { region: e.region } : {}),
                  },
                },
                side: e.side,
                amount: fmt(e.units),
                dt: new Date(T0 + e.at).toISOString(),
              })),
            });
            expect(r.status).toBe(200);
          } else if (cmd.kind === 'aggregate') {
            await h.face.ledger.aggregateOnce();
          } else {
            await check(clients, cmd.at);
          }
        }
        await h.face.ledger.aggregateOnce();
        await check(clients, 6 * DAY + 1);
      }),
      { numRuns: dialect === 'postgres' ? 8 : 15 },
    );
  });
});
