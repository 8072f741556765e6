import { MillraceError } from '../core/errors.js';
import { decodeCursor, encodeCursor, pageLimit, type Page } from '../core/paging.js';
import type { LogEvent } from '../log/log.js';
import type { Runtime } from '../runtime.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import { Aggregator } from './aggregator.js';
import { BatchWriter } from './batch-writer.js';
import type { LedgerConfig } from './config.js';
import { LedgerReader } from './ledger-reader.js';
import type {
  AccountQuery,
  AccountType,
  Attrs,
  BatchAnswer,
  BatchRequest,
  GroupSums,
  LedgerEventOut,
  LockMode,
} from './ledger-types.js';
import { LockStore } from './lock-store.js';
import { PartitionManager } from './partition-manager.js';
import { Periods } from './periods.js';
import { RequestValidator } from './request-validator.js';
import { StateStore } from './state-store.js';

export * from './ledger-types.js';
export { parseDt } from './request-validator.js';

/**
 * The ledger: config-typed accounts whose events live on the shard their
 * shard key routes to, with balances served from period aggregates built by a
 * transactional (exactly-once) cursor over each shard's log positions.
 *
 * A façade over one part per job: request validation, batch writes, the
 * aggregator (over a pure fold), reads, locks, states and partitions.
 */
export class Ledger {
  readonly types: Map<string, AccountType>;
  readonly periodMs: number;
  readonly offsetMs: number;
  /** Aggregator transactions and the events they covered, for metrics. */
  readonly stats: { aggregatorChunks: number; aggregatedEvents: number };

  private readonly validate: RequestValidator;
  private readonly periods: Periods;
  private readonly writer: BatchWriter;
  private readonly aggregator: Aggregator;
  private readonly reader: LedgerReader;
  private readonly locks: LockStore;
  private readonly states: StateStore;
  private readonly partitions: PartitionManager;

  constructor(
    readonly rt: Runtime,
    readonly cfg: LedgerConfig,
  ) {
    this.validate = new RequestValidator(rt, cfg);
    this.types = this.validate.types;
    this.periods = new Periods(cfg.aggregation);
    this.periodMs = this.periods.periodMs;
    this.offsetMs = this.periods.offsetMs;
    if (cfg.retention_months !== undefined && rt.storage.shards.some((s) => !s.driver.capabilities.tablePartitioning)) {
      throw new MillraceError(
        'config_invalid',
        'ledger.retention_months needs PostgreSQL: SQLite keeps one unpartitioned events table and never drops events',
      );
    }
    this.locks = new LockStore(rt, this.validate);
    this.states = new StateStore(this.validate);
    this.writer = new BatchWriter(rt, this.validate, this.locks, this.states);
    this.aggregator = new Aggregator(rt, cfg, this.types, this.periods);
    this.stats = this.aggregator.stats;
    this.reader = new LedgerReader(rt, cfg, this.validate, this.periods);
    this.partitions = new PartitionManager(rt, cfg, this.validate, this.periods, this.reader);
  }

  // ---------------------------------------------------------------- types, routing, periods

  /** Start of the oldest UTC month retention keeps at `now` (the current month and `retention_months` before it); null without retention. */
  retentionHorizon(now: number = this.rt.clock.now()): number | null {
    return this.validate.retentionHorizon(now);
  }

  accountType(name: string): AccountType {
    return this.validate.accountType(name);
  }

  /** Validates account attributes; returns key values (in key order) and aux values. */
  accountAttrs(
    t: AccountType,
    attrs: unknown,
    where: string,
    allowAux: boolean,
  ): { keyVals: string[]; aux: Record<string, string> } {
    return this.validate.accountAttrs(t, attrs, where, allowAux);
  }

  accountShard(t: AccountType, keyVals: readonly string[]): Shard {
    return this.validate.accountShard(t, keyVals);
  }

  /** Start of the aggregation period holding `ms`. */
  periodStart(ms: number): number {
    return this.periods.periodStart(ms);
  }

  periodEnd(ms: number): number {
    return this.periods.periodEnd(ms);
  }

  /** Bucket sizes inside a period: level 1 = period / 24 (an hour for days), level 2 = level 1 / 60 (a minute). */
  bucketMs(level: number): number {
    return this.periods.bucketMs(level);
  }

  /** Start of the level-`level` bucket holding `ms` (buckets nest inside periods and inside each other). */
  bucketStart(ms: number, level: number): number {
    return this.periods.bucketStart(ms, level);
  }

  // ---------------------------------------------------------------- writes and aggregation

  write(req: BatchRequest): Promise<BatchAnswer> {
    return this.writer.write(req);
  }

  /** Aggregator step, inside the cursor's transaction (see Aggregator.aggregate). */
  aggregate(batch: readonly LogEvent[], tx: Tx): Promise<void> {
    return this.aggregator.aggregate(batch, tx);
  }

  /** Runs the aggregator on every shard until it has caught up with the readable log. */
  aggregateOnce(): Promise<number> {
    return this.aggregator.aggregateOnce();
  }

  /** Log positions not yet aggregated, per shard (the aggregator lag). */
  lag(): Promise<Record<string, number>> {
    return this.aggregator.lag();
  }

  // ---------------------------------------------------------------- partitions and retention

  /** Creates this month's and the next `ahead_months` partitions on every partitioned shard; returns those created. */
  ensurePartitions(now: number): Promise<string[]> {
    return this.partitions.ensurePartitions(now);
  }

  /** Drops the partitions past the retention horizon that the aggregates cover (see PartitionManager). */
  dropExpiredPartitions(
    now: number,
  ): Promise<{ dropped: string[]; kept: Array<{ partition: string; reason: string }> }> {
    return this.partitions.dropExpiredPartitions(now);
  }

  // ---------------------------------------------------------------- reads

  balances(req: {
    dt: string;
    accounts: AccountQuery[];
  }): Promise<{ dt: string; balances: Array<{ type: string; key: Attrs; groups: GroupSums[] }> }> {
    return this.reader.balances(req);
  }

  /**
   * The accounts of a type that have events, by key, paged, each with its
   * balance (all groups together) at `dt` (default: now). Reads every shard.
   */
  async accounts(
    type: string,
    opts: { dt?: string | undefined; limit?: number | undefined; cursor?: string | undefined } = {},
  ): Promise<Page<{ key: Attrs; debit: string; credit: string }> & { dt: string }> {
    const limit = pageLimit(opts.limit);
    const t = this.validate.accountType(type);
    const after = decodeCursor(opts.cursor, (v): v is string => typeof v === 'string') ?? '';
    const dt = opts.dt ?? new Date(this.rt.clock.now()).toISOString();
    const keys = new Set<string>();
    for (const shard of this.rt.storage.shards) {
      const rows = await shard.reader.all<{ acc_key: string }>(
        'SELECT DISTINCT acc_key FROM ledger_events WHERE type = ? AND acc_key > ? ORDER BY acc_key LIMIT ?',
        [t.name, after, limit + 1],
      );
      for (const r of rows) keys.add(r.acc_key);
    }
    const sorted = [...keys].sort();
    const page = sorted.slice(0, limit);
    const attrs = page.map(
      (k) =>
        Object.fromEntries(t.key.map((name, i) => [name, (JSON.parse(k) as Array<string | null>)[i] ?? ''])) as Attrs,
    );
    const b =
      page.length === 0
        ? { dt, balances: [] }
        : await this.balances({ dt, accounts: attrs.map((key) => ({ type: t.name, key })) });
    const items = attrs.map((key, i) => {
      const g = b.balances[i]?.groups[0];
      return { key, debit: g?.debit ?? '0', credit: g?.credit ?? '0' };
    });
    return { dt: b.dt, items, next_cursor: sorted.length > limit ? encodeCursor(page[page.length - 1]) : null };
  }

  turnovers(req: { dt_from: string; dt_to: string; accounts: AccountQuery[] }) {
    return this.reader.turnovers(req);
  }

  events(req: {
    dt_from: string;
    dt_to: string;
    accounts: AccountQuery[];
    limit: number;
    cursor?: string | undefined;
  }): Promise<{ events: LedgerEventOut[]; next_cursor: string | null }> {
    return this.reader.events(req);
  }

  // ---------------------------------------------------------------- locks and states

  acquireLock(req: { type: string; attrs: Attrs; uid: string; mode: LockMode; timeout_s: number }) {
    return this.locks.acquireLock(req);
  }

  pingLock(req: { type: string; attrs: Attrs; uid: string; timeout_s: number }) {
    return this.locks.pingLock(req);
  }

  releaseLock(req: { type: string; attrs: Attrs; uid: string }) {
    return this.locks.releaseLock(req);
  }

  getLock(req: { type: string; attrs: Attrs }) {
    return this.locks.getLock(req);
  }

  getState(req: {
    type: string;
    attrs: Attrs;
  }): Promise<{ type: string; attrs: Attrs; state: unknown; version: number }> {
    return this.states.getState(req);
  }
}
