import { Gauge } from 'prom-client';
import type { Face } from '../face.js';
import type { Consumer } from '../log/cursor.js';
import type { Runtime } from '../runtime.js';
import { registerLedgerRoutes } from './http.js';
import { AGGREGATOR_CURSOR, Ledger } from './ledger.js';

export interface LedgerFace extends Face {
  readonly ledger: Ledger;
}

/** Timer (owner and kind) creating the PostgreSQL events partitions ahead of time and dropping those retention lets go. */
export const PARTITIONS_TIMER = 'ledger.partitions';

/** The ledger face: HTTP routes, one transactional aggregator cursor per shard (exclusive: one node runs it),
 * and (PostgreSQL) the partition timer; neither runs without account types (nor retention). */
export function createLedgerFace(rt: Runtime): LedgerFace {
  const ledger = new Ledger(rt, rt.config.ledger);
  const consumers: Consumer[] = [];
  // Postings (and so aggregation and partitions of ledger_events) exist only with account types.
  const hasAccounts = Object.keys(rt.config.ledger.accounts).length > 0;
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
  return {
    name: 'ledger',
    ledger,
    async start() {
      // Nothing configured, nothing to run: no timer, no aggregator (a node of a
      // cluster that uses other faces only adds no background work).
      if (!hasAccounts && rt.config.ledger.retention_months === undefined) return;
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
      if (!rt.config.ledger.aggregation.enabled || !hasAccounts) return;
      for (const s of rt.storage.shards) {
        consumers.push(
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
    },
    async stop() {
      for (const c of consumers.splice(0)) await c.stop();
    },
    http(app) {
      registerLedgerRoutes(app, ledger);
    },
  };
}
