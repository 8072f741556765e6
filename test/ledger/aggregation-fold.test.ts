import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import type { LogEvent } from '../../src/log/log.js';
import { type AggregationFold, foldPostings } from '../../src/ledger/aggregation-fold.js';
import { POSTED } from '../../src/ledger/ledger-types.js';
import { Periods } from '../../src/ledger/periods.js';
import { accountTypes } from '../../src/ledger/request-validator.js';

// Pure: no database, no runtime. Log events are built by hand.
const cfg = buildConfig({
  ledger: {
    accounts: {
      commission: { key: ['client_id'], aux: ['product', 'region'], groupings: [['region', 'product']], scale: 2 },
    },
    aggregation: { period: 'day', timezone: '+03:00' },
  },
}).ledger;
const types = accountTypes(cfg);
const periods = new Periods(cfg.aggregation);
const DAY = 86_400_000;
const T0 = Date.parse('2026-01-10T00:00:00Z');

interface Posting {
  acc: string;
  side: 'debit' | 'credit';
  units: bigint;
  dt: number;
  product?: string | undefined;
  region?: string | undefined;
}

let nextId = 1;
function logEvent(pos: number, acc: string, postings: Posting[], type = POSTED): LogEvent {
  return {
    shard: 's0',
    pos,
    stream: `ledger/commission/${acc}`,
    seq: pos,
    type,
    data: JSON.stringify({
      account: { type: 'commission' },
      acc_key: JSON.stringify([acc]),
      events: postings.map((p) => ({
        id: nextId++,
        side: p.side,
        units: p.units.toString(),
        dt: p.dt,
        aux: {
          ...(p.product === undefined ? {} : { product: p.product }),
          ...(p.region === undefined ? {} : { region: p.region }),
        },
      })),
    }),
    meta: null,
    createdAt: 0,
    hash: null,
  };
}

/** Totals of a fold, keyed by everything but the sums, so folds of different chunkings can be added and compared. */
function totals(folds: AggregationFold[]): {
  periods: Map<string, string>;
  buckets: Map<string, string>;
  events: number;
  ids: number[];
} {
  const add = (m: Map<string, [bigint, bigint]>, k: string, d: bigint, c: bigint) => {
    const s = m.get(k) ?? [0n, 0n];
    m.set(k, [s[0] + d, s[1] + c]);
  };
  const p = new Map<string, [bigint, bigint]>();
  const b = new Map<string, [bigint, bigint]>();
  let events = 0;
  const ids: number[] = [];
  for (const f of folds) {
    events += f.events;
    for (const s of f.stamps) ids.push(...s.ids);
    for (const d of f.deltas)
      for (const [end, s] of d.byEnd) add(p, `${d.type}|${d.accKey}|${d.grp}|${d.grpVals}|${end}`, s.d, s.c);
    for (const x of f.buckets)
      for (const r of x.rows) add(b, `${x.type}|${x.accKey}|${x.grp}|${x.level}|${r.bucket}|${r.grpVals}`, r.d, r.c);
  }
  const text = (m: Map<string, [bigint, bigint]>) =>
    new Map([...m].sort(([a], [z]) => (a < z ? -1 : 1)).map(([k, [d, c]]) => [k, `${d}/${c}`]));
  return { periods: text(p), buckets: text(b), events, ids };
}

describe('aggregation fold (pure)', () => {
  it('sums each grouping by period end and both bucket levels, in the configured offset', () => {
    const dt = Date.parse('2026-01-10T22:30:15Z'); // 01:30 on the 11th at +03:00
    const f = foldPostings(
      [
        logEvent(7, 'c1', [
          { acc: 'c1', side: 'debit', units: 150n, dt, product: 'taxi', region: 'msk' },
          { acc: 'c1', side: 'credit', units: 40n, dt: dt + 1000, product: 'taxi' },
        ]),
      ],
      types,
      periods,
    );
    expect(f.events).toBe(2);
    expect(f.lastPos).toBe(7);
    expect(f.stamps).toHaveLength(1);
    const end = Date.parse('2026-01-11T21:00:00Z'); // midnight of the 12th at +03:00
    const byGrp = new Map(f.deltas.map((d) => [`${d.grp}${d.grpVals}`, d.byEnd.get(end)]));
    expect(byGrp.get('[][]')).toEqual({ d: 150n, c: 40n });
    // Groupings keep aux order (product, region) whatever order the config lists them in.
    expect(byGrp.get('["product","region"]["taxi","msk"]')).toEqual({ d: 150n, c: 0n });
    expect(byGrp.get('["product","region"]["taxi",null]')).toEqual({ d: 0n, c: 40n });
    const hour = f.buckets.find((b) => b.grp === '[]' && b.level === 1)!;
    expect(hour.rows).toEqual([{ bucket: Date.parse('2026-01-10T22:00:00Z'), grpVals: '[]', d: 150n, c: 40n }]);
    const minute = f.buckets.find((b) => b.grp === '[]' && b.level === 2)!;
    expect(minute.rows).toEqual([{ bucket: Date.parse('2026-01-10T22:30:00Z'), grpVals: '[]', d: 150n, c: 40n }]);
  });

  it('skips other log events and stamps, but does not sum, posted events of an unknown account type', () => {
    const other = { ...logEvent(3, 'c1', [{ acc: 'c1', side: 'debit', units: 1n, dt: T0 }]), type: 'bus.published' };
    const unknown = logEvent(4, 'c1', [{ acc: 'c1', side: 'debit', units: 5n, dt: T0 }]);
    unknown.data = unknown.data.replace('"commission"', '"gone"');
    const f = foldPostings([other, unknown, { ...other, pos: 9 }], types, periods);
    expect(f.events).toBe(0);
    expect(f.deltas).toEqual([]);
    expect(f.buckets).toEqual([]);
    expect(f.stamps.map((s) => s.pos)).toEqual([4]);
    expect(f.lastPos).toBe(9);
  });

  it('gives the same totals however the log is cut into chunks', () => {
    const posting = fc.record({
      acc: fc.constantFrom('a', 'b', 'c'),
      side: fc.constantFrom('debit' as const, 'credit' as const),
      units: fc.bigInt({ min: 1n, max: 10n ** 15n }),
      dt: fc.integer({ min: T0 - 40 * DAY, max: T0 + 40 * DAY }),
      product: fc.option(fc.constantFrom('taxi', 'food'), { nil: undefined }),
      region: fc.option(fc.constantFrom('msk', 'spb'), { nil: undefined }),
    });
    const logArb = fc.array(fc.array(posting, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 30 });
    fc.assert(
      fc.property(
        logArb,
        fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 10 }),
        (groups, cuts) => {
          const log = groups.map((ps, i) =>
            logEvent(
              i + 1,
              ps[0]!.acc,
              ps.map((p) => ({ ...p, acc: ps[0]!.acc })),
            ),
          );
          const whole = totals([foldPostings(log, types, periods)]);
          const chunks: LogEvent[][] = [];
          for (let off = 0, i = 0; off < log.length; i++) {
            const n = cuts[i % cuts.length]!;
            chunks.push(log.slice(off, off + n));
            off += n;
          }
          const folds = chunks.map((c) => foldPostings(c, types, periods));
          expect(totals(folds)).toEqual(whole);
          expect(folds[folds.length - 1]!.lastPos).toBe(log.length);
          // The account total ([]) of every period equals the plain sum of the postings dated in it.
          let d = 0n;
          let c = 0n;
          for (const ps of groups) for (const p of ps) p.side === 'debit' ? (d += p.units) : (c += p.units);
          let fd = 0n;
          let fcr = 0n;
          for (const [k, v] of whole.periods) {
            if (!k.includes('|[]|[]|')) continue;
            const [x, y] = v.split('/');
            fd += BigInt(x!);
            fcr += BigInt(y!);
          }
          expect([fd, fcr]).toEqual([d, c]);
        },
      ),
      { numRuns: 200 },
    );
  });
});
