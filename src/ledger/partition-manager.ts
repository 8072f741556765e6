import type { Runtime } from '../runtime.js';
import type { LedgerConfig } from './config.js';
import { ledgerSql as sql } from './ledger-sql.js';
import type { LedgerReader } from './ledger-reader.js';
import type { Periods } from './periods.js';
import type { RequestValidator } from './request-validator.js';

/** Monthly partitions of ledger_events and their retention, on every shard whose dialect partitions tables. */
export class PartitionManager {
  constructor(
    private readonly rt: Runtime,
    private readonly cfg: LedgerConfig,
    private readonly validate: RequestValidator,
    private readonly periods: Periods,
    private readonly reader: LedgerReader,
  ) {}

  /**
   * Creates the monthly partitions of ledger_events (UTC months, by dt) from
   * the month of `now` to `ahead_months` later, on every partitioned shard.
   * Rows of a new month already sitting in the default partition (backdated or
   * far-future events) are moved into it in the same transaction, before it is
   * attached. Returns the partitions created.
   */
  async ensurePartitions(now: number): Promise<string[]> {
    const created: string[] = [];
    const d = new Date(now);
    for (const shard of this.rt.storage.shards) {
      if (!shard.driver.capabilities.tablePartitioning) continue;
      for (let i = 0; i <= this.cfg.partitions.ahead_months; i++) {
        const from = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + i, 1);
        const to = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + i + 1, 1);
        const m = new Date(from);
        const name = `ledger_events_p${m.getUTCFullYear()}${String(m.getUTCMonth() + 1).padStart(2, '0')}`;
        const exists = await shard.reader.all<{ r: string | null }>(sql.regclass, [name]);
        if (exists[0]?.r) continue;
        const made = await shard.write(async (tx) => {
          // Two creators at once (the partitions timer, an operator, another node) would both pass the
          // check and one would fail on the catalog's unique index: serialize them, then look again.
          await tx.all(sql.partitionCreateLock, [name]);
          if ((await tx.all<{ r: string | null }>(sql.regclass, [name]))[0]?.r) return false;
          await tx.run(sql.partitionCreate(name));
          await tx.run(sql.partitionFillFromDefault(name), [from, to]);
          await tx.run(sql.partitionAttach(name, from, to));
          return true;
        });
        if (made) created.push(`${shard.name}/${name}`);
      }
    }
    return created;
  }

  /**
   * Retention: on every partitioned shard, drops each monthly partition that
   * ends at or before the retention horizon and that the aggregates cover:
   * no row of it is unaggregated (pos IS NULL), every stamped position is at
   * or before the aggregator cursor, and every account with rows in it has a
   * period-start balance (grouping []) at or after the end of the period of
   * its last event there. Balances at dates from the horizon on then never
   * read the dropped rows (the aggregate at or before dt covers them), so they
   * stay exact. A partition that fails a check is kept and retried on the next
   * run. Without `retention_months` nothing is dropped.
   */
  async dropExpiredPartitions(
    now: number,
  ): Promise<{ dropped: string[]; kept: Array<{ partition: string; reason: string }> }> {
    const dropped: string[] = [];
    const kept: Array<{ partition: string; reason: string }> = [];
    const horizon = this.validate.retentionHorizon(now);
    if (horizon === null) return { dropped, kept };
    const { offsetMs, periodMs } = this.periods;
    for (const shard of this.rt.storage.shards) {
      if (!shard.driver.capabilities.tablePartitioning) continue;
      const parts = await shard.reader.all<{ name: string }>(sql.partitionList);
      for (const { name } of parts) {
        const m = /^ledger_events_p(\d{4})(\d{2})$/.exec(name);
        if (!m) continue;
        const end = Date.UTC(Number(m[1]), Number(m[2]), 1);
        if (end > horizon) continue;
        const keep = (reason: string) => kept.push({ partition: `${shard.name}/${name}`, reason });
        const unaggregated = await shard.reader.all<{ n: string }>(sql.partitionUnaggregated(name));
        if (Number(unaggregated[0]?.n ?? 0) > 0) {
          keep(`${unaggregated[0]!.n} rows not aggregated yet`);
          continue;
        }
        const cursor = await this.reader.aggregatorPos(shard);
        const maxPos = await shard.reader.all<{ p: string | null }>(sql.partitionMaxPos(name));
        if (maxPos[0]?.p != null && Number(maxPos[0].p) > cursor) {
          keep('rows stamped beyond the aggregator cursor');
          continue;
        }
        const missing = await shard.reader.all<{ n: string }>(sql.partitionAccountsWithoutBalance(name), [
          offsetMs,
          periodMs,
          periodMs,
          offsetMs,
          periodMs,
        ]);
        if (Number(missing[0]?.n ?? 0) > 0) {
          keep(`${missing[0]!.n} accounts have no period-start balance after their last event in it`);
          continue;
        }
        // Writes dated before the horizon are refused, so only a write that
        // passed its check before the horizon moved can still land here: the
        // parent is locked first (the order inserts take), and the cheap check
        // runs again under the lock.
        const ok = await shard.write(async (tx) => {
          await tx.run(sql.eventsLockExclusive);
          if ((await tx.all(sql.partitionAnyUnaggregated(name))).length > 0) return false;
          await tx.run(sql.partitionDrop(name));
          return true;
        });
        if (ok) dropped.push(`${shard.name}/${name}`);
        else keep('rows not aggregated yet');
      }
    }
    return { dropped, kept };
  }
}
