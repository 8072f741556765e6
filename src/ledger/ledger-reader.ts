import { MillraceError, badRequest } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { Shard } from '../storage/storage.js';
import type { LedgerConfig } from './config.js';
import { formatUnits, unitsOf } from './decimal.js';
import { ledgerSql as sql } from './ledger-sql.js';
import {
  AGGREGATOR_CURSOR,
  type AccountQuery,
  type Attrs,
  type GroupSums,
  type LedgerEventOut,
  type Side,
  type TurnoverSums,
  iso,
} from './ledger-types.js';
import type { Periods } from './periods.js';
import { type RequestValidator, parseDt } from './request-validator.js';

interface Contribution {
  vals: Record<string, string | null>;
  d: bigint;
  c: bigint;
}

/** Balances at a date, turnovers over a range and event listings, served from the aggregates. */
export class LedgerReader {
  constructor(
    private readonly rt: Runtime,
    private readonly cfg: LedgerConfig,
    private readonly validate: RequestValidator,
    private readonly periods: Periods,
  ) {}

  /** The aggregator cursor's position on `shard` (-1 before its first step). */
  async aggregatorPos(shard: Shard): Promise<number> {
    const r = await shard.reader.all<{ pos: number }>(sql.cursorPos, [AGGREGATOR_CURSOR]);
    return r[0]?.pos ?? -1;
  }

  /**
   * Runs reads that must see one aggregator state: the aggregator commits its
   * stamps, aggregates and cursor together, so equal cursor positions before
   * and after mean the reads saw no aggregator commit in between.
   */
  private async consistent<T>(shard: Shard, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const p1 = await this.aggregatorPos(shard);
      const r = await fn();
      if ((await this.aggregatorPos(shard)) === p1) return r;
    }
    throw new MillraceError('unavailable', 'the aggregator moved during every read attempt', { retryAfterS: 1 });
  }

  /**
   * Debit and credit of events dated before `dt`, as contributions carrying
   * the attributes they are known by. The aggregator keeps, per grouping
   * value: balances at period boundaries (ledger_aggregates, each at a
   * boundary b holds every stamped event dated before b) and turnovers of
   * level-1 and level-2 buckets inside periods (ledger_buckets, an hour and a
   * minute for day periods). With P the start of dt's period, H of its level-1
   * bucket and M of its level-2 bucket, the stamped events dated before dt are
   *   the nearest aggregate at or before dt (no stamped event of that group
   *   lies between it and P: it would have created a boundary in between)
   *   + level-1 buckets in [P, H) + level-2 buckets in [H, M)
   *   + stamped events dated in [M, dt), read one by one;
   * and events the aggregator has not reached (pos IS NULL) dated before dt
   * are read one by one. Every part is a bounded index range whatever the
   * history length: at most 23 + 59 bucket rows per group value.
   */
  private async balanceContributions(
    shard: Shard,
    type: string,
    accKey: string,
    cover: string[] | null,
    dt: number,
  ): Promise<Contribution[]> {
    const out: Contribution[] = [];
    if (cover === null) {
      // No aggregated grouping holds the attributes asked for: a plain scan,
      // which needs every event since the beginning.
      if (this.cfg.retention_months !== undefined) {
        throw new MillraceError(
          'retention_exceeded',
          'no aggregated grouping holds the attributes asked for, so this read would scan every event since the beginning, and retention (ledger.retention_months) drops old months: ask for a configured grouping',
        );
      }
      const rows = await shard.reader.all<{ side: Side; amount: string; aux: string }>(sql.eventsBefore, [
        type,
        accKey,
        dt,
      ]);
      for (const r of rows) pushEvent(out, r);
      return out;
    }
    const grp = JSON.stringify(cover);
    const asVals = (text: string) => {
      const vals = JSON.parse(text) as Array<string | null>;
      return Object.fromEntries(cover.map((k, i) => [k, vals[i] ?? null]));
    };
    const aggs = await shard.reader.all<{ grp_vals: string; debit: string; credit: string }>(sql.latestAggregates, [
      type,
      accKey,
      grp,
      type,
      accKey,
      grp,
      type,
      accKey,
      grp,
      type,
      accKey,
      grp,
      dt,
    ]);
    for (const a of aggs) out.push({ vals: asVals(a.grp_vals), d: unitsOf(a.debit), c: unitsOf(a.credit) });
    const p = this.periods.periodStart(dt);
    const h = this.periods.bucketStart(dt, 1);
    const m = this.periods.bucketStart(dt, 2);
    const buckets = await shard.reader.all<{ grp_vals: string; debit: string; credit: string }>(sql.bucketRanges, [
      type,
      accKey,
      grp,
      p,
      h,
      type,
      accKey,
      grp,
      h,
      m,
    ]);
    for (const b of buckets) out.push({ vals: asVals(b.grp_vals), d: unitsOf(b.debit), c: unitsOf(b.credit) });
    const rows = await shard.reader.all<{ side: Side; amount: string; aux: string }>(sql.eventsTail, [
      type,
      accKey,
      m,
      dt,
      type,
      accKey,
      dt,
    ]);
    for (const r of rows) pushEvent(out, r);
    return out;
  }

  async balances(req: {
    dt: string;
    accounts: AccountQuery[];
  }): Promise<{ dt: string; balances: Array<{ type: string; key: Attrs; groups: GroupSums[] }> }> {
    const dt = parseDt(req.dt, 'dt');
    this.validate.checkRetention(dt, 'dt');
    const qs = req.accounts.map((q, i) => this.validate.query(q, `accounts[${i}]`));
    const balances = [];
    for (const q of qs) {
      const contribs = await this.consistent(q.shard, () =>
        this.balanceContributions(q.shard, q.t.name, q.accKey, q.cover, dt),
      );
      const groups = [...rollup(contribs, q.groupBy, q.filter).values()].map((g) => ({
        group: g.group,
        debit: formatUnits(g.d, q.t.scale),
        credit: formatUnits(g.c, q.t.scale),
      }));
      if (groups.length === 0 && q.groupBy.length === 0)
        groups.push({ group: {}, debit: formatUnits(0n, q.t.scale), credit: formatUnits(0n, q.t.scale) });
      balances.push({ type: q.t.name, key: this.validate.keyObject(q.t, q.keyVals), groups: sortGroups(groups) });
    }
    return { dt: iso(dt), balances };
  }

  async turnovers(req: { dt_from: string; dt_to: string; accounts: AccountQuery[] }) {
    const { from, to } = this.validate.range(req.dt_from, req.dt_to);
    const qs = req.accounts.map((q, i) => this.validate.query(q, `accounts[${i}]`));
    const turnovers = [];
    for (const q of qs) {
      const [a, b] = await this.consistent(q.shard, async () => [
        await this.balanceContributions(q.shard, q.t.name, q.accKey, q.cover, from),
        await this.balanceContributions(q.shard, q.t.name, q.accKey, q.cover, to),
      ]);
      const init = rollup(a!, q.groupBy, q.filter);
      const end = rollup(b!, q.groupBy, q.filter);
      const groups: TurnoverSums[] = [];
      for (const [k, e] of end) {
        const i = init.get(k) ?? { d: 0n, c: 0n };
        groups.push({
          group: e.group,
          debit_init: formatUnits(i.d, q.t.scale),
          credit_init: formatUnits(i.c, q.t.scale),
          debit_turnover: formatUnits(e.d - i.d, q.t.scale),
          credit_turnover: formatUnits(e.c - i.c, q.t.scale),
        });
      }
      if (groups.length === 0 && q.groupBy.length === 0) {
        const z = formatUnits(0n, q.t.scale);
        groups.push({ group: {}, debit_init: z, credit_init: z, debit_turnover: z, credit_turnover: z });
      }
      turnovers.push({ type: q.t.name, key: this.validate.keyObject(q.t, q.keyVals), groups: sortGroups(groups) });
    }
    return { dt_from: iso(from), dt_to: iso(to), turnovers };
  }

  async events(req: {
    dt_from: string;
    dt_to: string;
    accounts: AccountQuery[];
    limit: number;
    cursor?: string | undefined;
  }): Promise<{ events: LedgerEventOut[]; next_cursor: string | null }> {
    const { from, to } = this.validate.range(req.dt_from, req.dt_to);
    if (!Number.isInteger(req.limit) || req.limit < 1 || req.limit > 10_000)
      throw badRequest('limit must be an integer from 1 to 10000');
    const shardIdx = new Map(this.rt.storage.shards.map((s, i) => [s.name, i]));
    let after: [number, number, number] | null = null;
    if (req.cursor !== undefined) {
      try {
        const c = JSON.parse(Buffer.from(req.cursor, 'base64url').toString('utf8')) as unknown;
        if (!Array.isArray(c) || c.length !== 3 || !c.every((x) => Number.isSafeInteger(x))) throw new Error('shape');
        after = c as [number, number, number];
      } catch {
        throw new MillraceError('invalid_cursor', 'cursor is not one this API returned');
      }
    }
    const qs = req.accounts.map((q, i) => {
      if (q.group_by !== undefined && q.group_by.length > 0)
        throw badRequest(`accounts[${i}].group_by is not used when listing events`);
      return this.validate.query(q, `accounts[${i}]`);
    });
    const seen = new Set<string>();
    const all: Array<{ o: LedgerEventOut; k: [number, number, number] }> = [];
    for (const q of qs) {
      const dedupe = `${q.t.name}\u0000${q.accKey}\u0000${JSON.stringify(q.filter)}`;
      if (seen.has(dedupe)) continue;
      seen.add(dedupe);
      const si = shardIdx.get(q.shard.name)!;
      let lowDt = from;
      let lowId = -1;
      if (after !== null && after[0] >= from) {
        // Rows after the cursor in (dt, shard, id) order.
        const [cDt, cShard, cId] = after;
        lowDt = cDt;
        lowId = si < cShard ? Number.MAX_SAFE_INTEGER : si === cShard ? cId : -1;
      }
      const rows = await q.shard.reader.all<{
        id: number;
        batch_id: string;
        aux: string;
        side: Side;
        amount: string;
        dt: number;
        info: string | null;
      }>(sql.eventsPage, [
        q.t.name,
        q.accKey,
        lowDt,
        to,
        lowDt,
        lowId,
        Object.keys(q.filter).length ? 100_000 : req.limit + 1,
      ]);
      for (const r of rows) {
        const aux = JSON.parse(r.aux) as Record<string, string>;
        if (Object.entries(q.filter).some(([k, v]) => aux[k] !== v)) continue;
        const id = Number(r.id);
        const dt = Number(r.dt);
        all.push({
          k: [dt, si, id],
          o: {
            id,
            shard: q.shard.name,
            batch_id: r.batch_id,
            account: { type: q.t.name, key: this.validate.keyObject(q.t, q.keyVals) },
            aux,
            side: r.side,
            amount: formatUnits(unitsOf(r.amount), q.t.scale),
            dt: iso(dt),
            info: r.info === null ? null : (JSON.parse(r.info) as unknown),
          },
        });
      }
    }
    const cmp = (a: [number, number, number], b: [number, number, number]) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
    all.sort((a, b) => cmp(a.k, b.k));
    const page = all.slice(0, req.limit);
    const more = all.length > req.limit;
    const last = page[page.length - 1];
    return {
      events: page.map((p) => p.o),
      next_cursor: more && last ? Buffer.from(JSON.stringify(last.k)).toString('base64url') : null,
    };
  }
}

function pushEvent(out: Contribution[], r: { side: Side; amount: string; aux: string }): void {
  const u = unitsOf(r.amount);
  out.push({
    vals: JSON.parse(r.aux) as Record<string, string>,
    d: r.side === 'debit' ? u : 0n,
    c: r.side === 'credit' ? u : 0n,
  });
}

function rollup(
  contribs: Contribution[],
  groupBy: string[],
  filter: Record<string, string>,
): Map<string, { group: Record<string, string | null>; d: bigint; c: bigint }> {
  const out = new Map<string, { group: Record<string, string | null>; d: bigint; c: bigint }>();
  for (const x of contribs) {
    if (Object.entries(filter).some(([k, v]) => (x.vals[k] ?? null) !== v)) continue;
    const group = Object.fromEntries(groupBy.map((a) => [a, x.vals[a] ?? null]));
    const k = JSON.stringify(groupBy.map((a) => group[a]));
    const g = out.get(k);
    if (g) {
      g.d += x.d;
      g.c += x.c;
    } else out.set(k, { group, d: x.d, c: x.c });
  }
  return out;
}

function sortGroups<T extends { group: Record<string, string | null> }>(groups: T[]): T[] {
  return groups.sort((a, b) => {
    const x = JSON.stringify(Object.values(a.group));
    const y = JSON.stringify(Object.values(b.group));
    return x < y ? -1 : x > y ? 1 : 0;
  });
}
