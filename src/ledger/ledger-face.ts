import { Gauge } from 'prom-client';
import type { Face, FaceDefinition } from '../face.js';
import type { Consumer } from '../log/cursor.js';
import type { Runtime } from '../runtime.js';
import { AGGREGATOR_CURSOR, Ledger } from './ledger.js';
import { ledgerSpec } from './spec.js';

/** Timer (owner and kind) creating the PostgreSQL events partitions ahead of time and dropping those retention lets go. */
export const PARTITIONS_TIMER = 'ledger.partitions';

/** The ledger face: one transactional aggregator cursor per shard (exclusive: one node runs it),
 * and (PostgreSQL) the partition timer; neither runs without account types (nor retention). */
export class LedgerFace implements Face {
  readonly name = 'ledger';
  readonly ledger: Ledger;
  private readonly consumers: Consumer[] = [];
  /** Postings (and so aggregation and partitions of ledger_events) exist only with account types. */
  private readonly hasAccounts: boolean;

  constructor(private readonly rt: Runtime) {
    const ledger = (this.ledger = new Ledger(rt, rt.config.ledger));
    const hasAccounts = (this.hasAccounts = Object.keys(rt.config.ledger.accounts).length > 0);
    new Gauge({
      name: 'millrace_ledger_aggregator_lag_positions',
      help: 'Log positions the ledger aggregator has not processed yet, per shard',
      labelNames: ['shard'],
      registers: [rt.metrics],
      async collect() {
        if (!hasAccounts) return;
        for (const [shard, lag] of Object.entries(await ledger.lag())) this.set({ shard }, lag);
      },
    });
  }

  async start(): Promise<void> {
    const { rt, ledger } = this;
    // Nothing configured, nothing to run: no timer, no aggregator (a node of a
    // cluster that uses other faces only adds no background work).
    if (!this.hasAccounts && rt.config.ledger.retention_months === undefined) return;
    if (rt.storage.shards.some((s) => s.driver.capabilities.tablePartitioning)) {
      await rt.scheduler.periodic(
        PARTITIONS_TIMER,
        rt.config.ledger.partitions.every_ms,
        async () => {
          await ledger.ensurePartitions(rt.clock.now());
          await ledger.dropExpiredPartitions(rt.clock.now());
        },
        { firstInMs: 0 },
      );
    }
    if (!rt.config.ledger.aggregation.enabled || !this.hasAccounts) return;
    for (const s of rt.storage.shards) {
      this.consumers.push(
        rt.cursors.consume({
          shard: s.name,
          name: AGGREGATOR_CURSOR,
          mode: 'transactional',
          // One node aggregates a shard at a time; the others stand by.
          exclusive: true,
          chunk: rt.config.ledger.aggregation.chunk,
          handler: async (events, tx) => ledger.aggregate(events, tx!),
        }),
      );
    }
  }

  async stop(): Promise<void> {
    for (const c of this.consumers.splice(0)) await c.stop();
  }
}

/** The ledger face, for `BUILT_IN_FACES` or `startNode({faces})`. */
export const ledgerFace: FaceDefinition = { ...ledgerSpec, create: (rt) => new LedgerFace(rt) };

/** Builds the ledger face (throws config_invalid for a config the storage cannot serve). */
export const createLedgerFace = (rt: Runtime): LedgerFace => new LedgerFace(rt);
