import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARTITIONS_TIMER } from '../../src/ledger/ledger-face.js';
import { DIALECTS } from '../support/env.js';
import { openLedger, type LedgerHarness } from './support.js';

const monthName = (ms: number) => {
  const d = new Date(ms);
  return `ledger_events_p${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
};

// PostgreSQL only: SQLite keeps one unpartitioned events table.
describe.runIf(DIALECTS.includes('postgres')).each(['postgres' as const])(
  'ledger events partitions (%s)',
  (dialect) => {
    let h: LedgerHarness;
    beforeAll(async () => {
      h = await openLedger(dialect, { shards: 3 });
    });
    afterAll(async () => {
      await h?.close();
    });

    const partOf = async (client: string, batchId: string): Promise<string[]> => {
      const rows = await h.rt.storage
        .shardFor([client])
        .reader.all<{ part: string }>(
          'SELECT tableoid::regclass::text AS part FROM ledger_events WHERE batch_id = ? ORDER BY id',
          [batchId],
        );
      return rows.map((r) => r.part);
    };
    const post = async (client: string, dt: string, amount: string) => {
      const r = await h.post('/v1/ledger/batches', {
        events: [
          { account: { type: 'commission', attrs: { client_id: client, currency: 'RUB' } }, side: 'debit', amount, dt },
        ],
      });
      expect(r.status).toBe(200);
      return r.body.batch_id as string;
    };

    it('the partition timer creates this month and the months ahead on every shard', async () => {
      const name = monthName(Date.now());
      const deadline = Date.now() + 15_000;
      for (;;) {
        const found = await Promise.all(
          h.rt.storage.shards.map(
            async (s) => (await s.reader.all<{ r: string | null }>('SELECT to_regclass(?) AS r', [name]))[0]?.r ?? null,
          ),
        );
        if (found.every((r) => r !== null)) break;
        if (Date.now() > deadline) throw new Error(`partition ${name} not created on every shard`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await h.rt.scheduler.get(PARTITIONS_TIMER)).not.toBeNull();
    });

    it('moves rows out of the default partition when their month is created, routes new rows to it, and balances stay exact', async () => {
      const now = Date.now();
      const later = Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth() + 30, 10); // beyond any partition made ahead
      const dt = new Date(later).toISOString();
      const before = await post('pt1', dt, '1.50');
      expect(await partOf('pt1', before)).toEqual(['ledger_events_default']);
      const created = await h.face.ledger.ensurePartitions(later);
      expect(created.some((c) => c.endsWith(`/${monthName(later)}`))).toBe(true);
      expect(await partOf('pt1', before)).toEqual([monthName(later)]);
      const after = await post('pt1', new Date(later + 3_600_000).toISOString(), '2.25');
      expect(await partOf('pt1', after)).toEqual([monthName(later)]);
      expect(await h.face.ledger.ensurePartitions(later)).toEqual([]); // idempotent
      await h.face.ledger.aggregateOnce();
      const b = await h.post('/v1/ledger/balances', {
        dt: new Date(later + 2 * 86_400_000).toISOString(),
        accounts: [{ type: 'commission', key: { client_id: 'pt1', currency: 'RUB' } }],
      });
      expect(b.status).toBe(200);
      expect(b.body.balances[0].groups).toEqual([{ group: {}, debit: '3.75', credit: '0.00' }]);
    });
  },
);
