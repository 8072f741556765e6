import type { LogEvent } from '../log/log.js';
import type { Runtime } from '../runtime.js';
import type { Tx } from '../storage/port.js';
import { type BucketRow, type PeriodDelta, type Sums, foldPostings } from './aggregation-fold.js';
import type { LedgerConfig } from './config.js';
import { unitsOf } from './decimal.js';
import { ledgerSql as sql } from './ledger-sql.js';
import { AGGREGATOR_CURSOR, type AccountType } from './ledger-types.js';
import type { Periods } from './periods.js';

/** Applies the aggregation fold of each log chunk to the aggregate and bucket tables, inside the cursor's transaction. */
export class Aggregator {
  /** Aggregator transactions and the events they covered, for metrics. */
  readonly stats = { aggregatorChunks: 0, aggregatedEvents: 0 };

  constructor(
    private readonly rt: Runtime,
    private readonly cfg: LedgerConfig,
    private readonly types: ReadonlyMap<string, AccountType>,
    private readonly periods: Periods,
  ) {}

  /**
   * Aggregator step, inside the cursor's transaction: stamps each posted
   * event with its log position and folds it into the period aggregates of
   * every grouping. An aggregate at boundary b holds the sums of the
   * aggregated events dated before b; a backdated event updates the
   * aggregates after its date here, off the write path.
   */
  async aggregate(batch: readonly LogEvent[], tx: Tx): Promise<void> {
    const fold = foldPostings(batch, this.types, this.periods);
    for (const { pos, ids } of fold.stamps) {
      for (let off = 0; off < ids.length; off += 500) {
        const chunk = ids.slice(off, off + 500);
        await tx.run(sql.stampPositions(chunk.length), [pos, ...chunk]);
      }
    }
    for (const d of fold.deltas) await this.applyDelta(tx, d, fold.lastPos);
    for (const b of fold.buckets) await this.applyBuckets(tx, b.type, b.accKey, b.grp, b.level, b.rows);
    this.stats.aggregatorChunks++;
    this.stats.aggregatedEvents += fold.events;
  }

  private async applyDelta(tx: Tx, { type, accKey, grp, grpVals, byEnd }: PeriodDelta, pos: number): Promise<void> {
    const ends = [...byEnd.keys()].sort((a, b) => a - b);
    const minEnd = ends[0]!;
    const rows = await tx.all<{ boundary: number; debit: string; credit: string }>(sql.aggregatesFrom, [
      type,
      accKey,
      grp,
      grpVals,
      type,
      accKey,
      grp,
      grpVals,
      minEnd,
      minEnd,
    ]);
    const cur = rows.map((r) => ({
      boundary: Number(r.boundary),
      d: unitsOf(r.debit),
      c: unitsOf(r.credit),
      isNew: false,
    }));
    for (const end of ends) {
      if (cur.some((r) => r.boundary === end)) continue;
      // Nearest earlier aggregate: no aggregated event lies between it and this period.
      let base: Sums = { d: 0n, c: 0n };
      for (const r of cur) if (r.boundary < end && !r.isNew) base = { d: r.d, c: r.c };
      cur.push({ boundary: end, d: base.d, c: base.c, isNew: true });
    }
    cur.sort((a, b) => a.boundary - b.boundary);
    for (const r of cur) {
      if (r.boundary < minEnd) continue;
      for (const end of ends) {
        if (end > r.boundary) break;
        const s = byEnd.get(end)!;
        r.d += s.d;
        r.c += s.c;
      }
      if (r.isNew)
        await tx.run(sql.aggregateInsert, [
          type,
          accKey,
          grp,
          grpVals,
          r.boundary,
          r.d.toString(),
          r.c.toString(),
          pos,
        ]);
      else
        await tx.run(sql.aggregateUpdate, [
          r.d.toString(),
          r.c.toString(),
          pos,
          type,
          accKey,
          grp,
          grpVals,
          r.boundary,
        ]);
    }
  }

  /**
   * Adds turnovers to their buckets. Sums are read and written back (exact
   * BigInt arithmetic in both dialects); a bucket is touched only by the
   * events dated inside it, so a backdated event costs two rows here.
   */
  private async applyBuckets(
    tx: Tx,
    type: string,
    accKey: string,
    grp: string,
    level: number,
    rows: BucketRow[],
  ): Promise<void> {
    const existing = new Map<string, Sums>();
    const starts = [...new Set(rows.map((r) => r.bucket))];
    for (let off = 0; off < starts.length; off += 500) {
      const chunk = starts.slice(off, off + 500);
      const found = await tx.all<{ bucket: number; grp_vals: string; debit: string; credit: string }>(
        sql.bucketsAt(chunk.length),
        [type, accKey, grp, level, ...chunk],
      );
      for (const f of found)
        existing.set(`${Number(f.bucket)}\u0000${f.grp_vals}`, { d: unitsOf(f.debit), c: unitsOf(f.credit) });
    }
    const inserts: unknown[][] = [];
    for (const r of rows) {
      const e = existing.get(`${r.bucket}\u0000${r.grpVals}`);
      if (e)
        await tx.run(sql.bucketUpdate, [
          (e.d + r.d).toString(),
          (e.c + r.c).toString(),
          type,
          accKey,
          grp,
          level,
          r.bucket,
          r.grpVals,
        ]);
      else inserts.push([type, accKey, grp, level, r.bucket, r.grpVals, r.d.toString(), r.c.toString()]);
    }
    for (let off = 0; off < inserts.length; off += 100) {
      const chunk = inserts.slice(off, off + 100);
      await tx.run(sql.bucketInsert(chunk.length), chunk.flat());
    }
  }

  /** Runs the aggregator on every shard until it has caught up with the readable log. */
  async aggregateOnce(): Promise<number> {
    let total = 0;
    for (const shard of this.rt.storage.shards) {
      const from0 = await this.rt.cursors.ensure(shard.name, AGGREGATOR_CURSOR, 'earliest');
      let from = from0;
      for await (const batch of this.rt.cursors.tail(shard.name, from, {
        untilCaughtUp: true,
        chunk: this.cfg.aggregation.chunk,
      })) {
        const to = batch[batch.length - 1]!.pos!;
        const f = from;
        await shard.write(async (tx) => {
          await this.aggregate(batch, tx);
          await this.rt.cursors.advanceIn(tx, AGGREGATOR_CURSOR, f, to);
        });
        total += batch.length;
        from = to;
      }
    }
    return total;
  }

  /** Log positions not yet aggregated, per shard (the aggregator lag). */
  async lag(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const s of this.rt.storage.shards) {
      const pos = (await this.rt.cursors.position(s.name, AGGREGATOR_CURSOR)) ?? 0;
      out[s.name] = Math.max(0, this.rt.log.shardLog(s.name).signal.head - pos);
    }
    return out;
  }
}
