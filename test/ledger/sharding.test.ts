import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MillraceError } from '../../src/core/errors.js';
import { DIALECTS } from '../support/env.js';
import { openLedger, type LedgerHarness } from './support.js';

const ev = (client: string, currency = 'RUB', amount = '1.00') => ({
  account: { type: 'commission', attrs: { client_id: client, currency } },
  side: 'debit',
  amount,
  dt: '2026-01-05T00:00:00Z',
});

describe.each(DIALECTS)('ledger sharding over 3 shards (%s)', (dialect) => {
  let h: LedgerHarness;
  beforeAll(async () => {
    h = await openLedger(dialect, { shards: 3 });
  });
  afterAll(async () => {
    await h?.close();
  });
  const rowsOn = async (shard: string) =>
    h.rt.storage
      .shard(shard)
      .reader.all<{ acc_key: string; n: number }>('SELECT acc_key, COUNT(*) AS n FROM ledger_events GROUP BY acc_key');

  it('routes the same account (and every account of one shard key) to one shard, spreading accounts over all 3', async () => {
    const clients = Array.from({ length: 30 }, (_, i) => `route-${i}`);
    for (const c of clients) {
      expect((await h.post('/v1/ledger/batches', { events: [ev(c), ev(c, 'USD')] })).status).toBe(200);
      expect((await h.post('/v1/ledger/batches', { events: [ev(c)] })).status).toBe(200);
    }
    const where = new Map<string, string[]>();
    for (const s of h.rt.storage.shards) {
      for (const r of await rowsOn(s.name)) {
        const [client] = JSON.parse(r.acc_key) as string[];
        where.set(client!, [...(where.get(client!) ?? []), s.name]);
      }
    }
    for (const c of clients) {
      // both currencies of a client sit on the shard its SHA-1 shard key (client_id) routes to
      expect(where.get(c)).toEqual([h.rt.storage.shardFor([c]).name, h.rt.storage.shardFor([c]).name]);
    }
    const used = new Set(clients.map((c) => where.get(c)![0]));
    expect(used.size).toBe(3);
  });

  it('cross-shard batches: refused as a whole on bad input or a stale state found in preflight; idempotent repeat writes nothing', async () => {
    const a = 'xs-a';
    let b = 'xs-b0';
    for (let i = 0; h.rt.storage.shardFor([b]).name === h.rt.storage.shardFor([a]).name; i++) b = `xs-b${i}`;
    const count = async () => {
      let n = 0;
      for (const s of h.rt.storage.shards)
        n += Number((await s.reader.all<{ n: number }>('SELECT COUNT(*) AS n FROM ledger_events'))[0]!.n);
      return n;
    };
    const n0 = await count();
    expect((await h.post('/v1/ledger/batches', { events: [ev(a), ev(b, 'RUB', '1.001')] })).body.error.code).toBe(
      'invalid_amount',
    );
    // the state lives on some shard; its stale version is found before any shard is written
    const stale = await h.post('/v1/ledger/batches', {
      events: [ev(a), ev(b)],
      states: [{ type: 'contract', attrs: { contract_id: 'xs' }, state: 1, expected_version: 5 }],
    });
    expect(stale.body.error.code).toBe('state_version_conflict');
    expect(await count()).toBe(n0);
    const body = { idempotency_key: 'xs-1', events: [ev(a), ev(b)] };
    const first = await h.post('/v1/ledger/batches', body);
    expect(first.status).toBe(200);
    expect(await count()).toBe(n0 + 2);
    expect((await h.post('/v1/ledger/batches', body)).body).toEqual(first.body);
    expect(await count()).toBe(n0 + 2);
    expect((await h.post('/v1/ledger/batches', { ...body, events: [ev(a)] })).body.error.code).toBe(
      'idempotency_key_reused',
    );
  });

  it('a part that fails after another shard committed is reported; a retry with the same idempotency key completes it without repeating the first', async () => {
    const a = 'pc-a';
    let b = 'pc-b0';
    for (let i = 0; h.rt.storage.shardFor([b]).name === h.rt.storage.shardFor([a]).name; i++) b = `pc-b${i}`;
    const body = { idempotency_key: 'pc-1', events: [ev(a), ev(b)] };
    const [first, second] = [h.rt.storage.shardFor([a]), h.rt.storage.shardFor([b])].sort((x, y) =>
      x.name < y.name ? -1 : 1,
    );
    // The second shard becomes unavailable once, after the first shard's part committed. (shardFor answers a
    // per-key view of a shard; the writes go through the shard itself, which every view inherits from.)
    const shard2 = second!.base;
    const write = shard2.write.bind(shard2);
    // (only the ledger's part write fails; the scheduler's timer claims on that shard go through)
    shard2.write = ((fn: Parameters<typeof write>[0]) => {
      if (!fn.toString().includes('batchPartPut')) return write(fn); // the batch part's write (its SQL lives in ledger-sql.ts)
      shard2.write = write;
      return Promise.reject(new MillraceError('unavailable', 'shard down'));
    }) as typeof write;
    const failed = await h.post('/v1/ledger/batches', body);
    expect(failed.status).toBe(503);
    expect(failed.body.error.details.committed_shards).toEqual([first!.name]);
    const retry = await h.post('/v1/ledger/batches', body);
    expect(retry.status).toBe(200);
    const after = await h.post('/v1/ledger/balances', {
      dt: '2026-02-01T00:00:00Z',
      accounts: [a, b].map((c) => ({ type: 'commission', key: { client_id: c, currency: 'RUB' } })),
    });
    expect(after.body.balances.map((x: { groups: Array<{ debit: string }> }) => x.groups[0]!.debit)).toEqual([
      '1.00',
      '1.00',
    ]);
  });
});
