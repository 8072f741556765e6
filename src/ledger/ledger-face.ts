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

/** The ledger face: HTTP routes, one transactional aggregator cursor per shard, and (PostgreSQL) the partition timer. */
export function createLedgerFace(rt: Runtime): LedgerFace {
  const ledger = new Ledger(rt, rt.config.ledger);
  const consumers: Consumer[] = [];
  new Gauge({
    name: 'millrace_ledger_aggregator_lag_positions',
    help: 'Log positions the ledger aggregator has not processed yet, per shard',
    labelNames: ['shard'],
    registers: [rt.metrics],
    async collect() {
      for (const [shard, lag] of Object.entries(await ledger.lag())) this.set({ shard }, lag);
    },
  });
  return {
    name: 'ledger',
    ledger,
    async start() {
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
      if (!rt.config.ledger.aggregation.enabled) return;
      for (const s of rt.storage.shards) {
        consumers.push(
          rt.cursors.consume({
            shard: s.name,
            name: AGGREGATOR_CURSOR,
            mode: 'transactional',
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
