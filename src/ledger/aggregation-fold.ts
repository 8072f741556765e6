import type { LogEvent } from '../log/log.js';
import { type AccountType, POSTED, type Side } from './ledger-types.js';
import type { Periods } from './periods.js';

/** Debit and credit sums, in units. */
export interface Sums {
  d: bigint;
  c: bigint;
}

/** Sums of one account's group value, by the end of the period the events are dated in. */
export interface PeriodDelta {
  type: string;
  accKey: string;
  grp: string;
  grpVals: string;
  byEnd: Map<number, Sums>;
}

export interface BucketRow extends Sums {
  bucket: number;
  grpVals: string;
}

/** Turnovers of one (type, account, grouping, level), one row per (bucket start, group value). */
export interface BucketDelta {
  type: string;
  accKey: string;
  grp: string;
  level: number;
  rows: BucketRow[];
}

export interface AggregationFold {
  /** Per posted log event, the ledger event ids to stamp with its position, in log order. */
  stamps: Array<{ pos: number | null; ids: number[] }>;
  deltas: PeriodDelta[];
  buckets: BucketDelta[];
  /** Ledger events folded in (those of known account types). */
  events: number;
  /** Position of the last log event of the chunk (0 when none carries one). */
  lastPos: number;
}

interface PostedData {
  account: { type: string };
  acc_key: string;
  events: Array<{ id: number; side: Side; units: string; dt: number; aux: Record<string, string> }>;
}

/**
 * The aggregator's arithmetic, without I/O: folds a chunk of log events into
 * the period deltas of every grouping and the turnovers of both bucket
 * levels. Log events other than `ledger.posted` only move `lastPos`; posted
 * events of an account type no longer configured are stamped but not summed.
 */
export function foldPostings(
  batch: readonly LogEvent[],
  types: ReadonlyMap<string, AccountType>,
  periods: Periods,
): AggregationFold {
  const deltas = new Map<string, PeriodDelta>();
  const buckets = new Map<
    string,
    { type: string; accKey: string; grp: string; level: number; rows: Map<string, BucketRow> }
  >();
  const stamps: AggregationFold['stamps'] = [];
  let lastPos = 0;
  let n = 0;
  for (const le of batch) {
    lastPos = le.pos ?? lastPos;
    if (le.type !== POSTED) continue;
    const data = JSON.parse(le.data) as PostedData;
    stamps.push({ pos: le.pos, ids: data.events.map((e) => e.id) });
    const t = types.get(data.account.type);
    if (t === undefined) continue;
    for (const e of data.events) {
      n++;
      const end = periods.periodEnd(e.dt);
      const units = BigInt(e.units);
      for (const g of t.aggGroupings) {
        const grp = JSON.stringify(g);
        const grpVals = JSON.stringify(g.map((a) => e.aux[a] ?? null));
        const k = `${t.name}\u0000${data.acc_key}\u0000${grp}\u0000${grpVals}`;
        let d = deltas.get(k);
        if (!d) deltas.set(k, (d = { type: t.name, accKey: data.acc_key, grp, grpVals, byEnd: new Map() }));
        let s = d.byEnd.get(end);
        if (!s) d.byEnd.set(end, (s = { d: 0n, c: 0n }));
        if (e.side === 'debit') s.d += units;
        else s.c += units;
        for (let level = 1; level <= 2; level++) {
          const bucket = periods.bucketStart(e.dt, level);
          const bk = `${t.name}\u0000${data.acc_key}\u0000${grp}\u0000${level}`;
          let b = buckets.get(bk);
          if (!b) buckets.set(bk, (b = { type: t.name, accKey: data.acc_key, grp, level, rows: new Map() }));
          const rk = `${bucket}\u0000${grpVals}`;
          let r = b.rows.get(rk);
          if (!r) b.rows.set(rk, (r = { bucket, grpVals, d: 0n, c: 0n }));
          if (e.side === 'debit') r.d += units;
          else r.c += units;
        }
      }
    }
  }
  return {
    stamps,
    deltas: [...deltas.values()],
    buckets: [...buckets.values()].map((b) => ({
      type: b.type,
      accKey: b.accKey,
      grp: b.grp,
      level: b.level,
      rows: [...b.rows.values()],
    })),
    events: n,
    lastPos,
  };
}
