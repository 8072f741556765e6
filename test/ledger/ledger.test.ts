import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/clock.js';
import { DIALECTS } from '../support/env.js';
import { openLedger, type LedgerHarness } from './support.js';

const acc = (client: string, extra: Record<string, string> = {}) => ({
  type: 'commission',
  attrs: { client_id: client, currency: 'RUB', ...extra },
});
const key = (client: string) => ({ type: 'commission', key: { client_id: client, currency: 'RUB' } });
const ev = (
  client: string,
  side: 'debit' | 'credit',
  amount: string,
  dt = '2026-01-05T10:00:00Z',
  extra: Record<string, string> = {},
) => ({ account: acc(client, extra), side, amount, dt });

describe.each(DIALECTS)('ledger (%s)', (dialect) => {
  let h: LedgerHarness;
  const clock = new ManualClock(Date.parse('2026-02-01T00:00:00Z'));
  const count = async () => {
    let n = 0;
    for (const s of h.rt.storage.shards)
      n += Number((await s.reader.all<{ n: number }>('SELECT COUNT(*) AS n FROM ledger_events'))[0]!.n);
    return n;
  };
  const balance = async (client: string, dt = '2026-02-01T00:00:00Z', extra: object = {}) => {
    const r = await h.post('/v1/ledger/balances', { dt, accounts: [{ ...key(client), ...extra }] });
    expect(r.status).toBe(200);
    return r.body.balances[0].groups;
  };
  beforeAll(async () => {
    h = await openLedger(dialect, { clock });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('lists the configured types (read-only: other methods are refused)', async () => {
    const r = await h.app.inject({ method: 'GET', url: '/v1/ledger/types' });
    expect(r.statusCode).toBe(200);
    const body = r.json();
    expect(body.accounts.commission).toEqual({
      key: ['client_id', 'currency'],
      aux: ['product', 'region'],
      groupings: [['product'], ['region'], ['product', 'region']],
      shard_key: ['client_id'],
      scale: 2,
    });
    expect(body.accounts.micro).toMatchObject({ key: ['wallet'], aux: [], groupings: [], scale: 6 });
    expect(body.locks).toEqual({ client: { key: ['client_id'] } });
    expect(body.states).toEqual({ contract: { key: ['contract_id'] } });
    const put = await h.app.inject({ method: 'PUT', url: '/v1/ledger/types', payload: {} });
    expect(put.statusCode).toBeGreaterThanOrEqual(400);
    expect(put.statusCode).toBeLessThan(500);
    expect((await h.app.inject({ method: 'GET', url: '/v1/ledger/types' })).json()).toEqual(body);
  });

  it('writes a batch and reads balances, turnovers and paged events', async () => {
    const r = await h.post('/v1/ledger/batches', {
      dt_default: '2026-01-03T12:00:00Z',
      events: [
        { account: acc('b1', { product: 'taxi' }), side: 'debit', amount: '100.10' },
        {
          account: acc('b1', { product: 'food' }),
          side: 'credit',
          amount: '0.05',
          dt: '2026-01-04T00:00:00Z',
          info: { order: 7 },
        },
        {
          account: acc('b1', { product: 'taxi', region: 'msk' }),
          side: 'debit',
          amount: '3',
          dt: '2026-01-10T00:00:00Z',
        },
      ],
    });
    expect(r.status).toBe(200);
    expect(r.body.events).toBe(3);
    expect(await balance('b1', '2026-01-04T00:00:00Z')).toEqual([{ group: {}, debit: '100.10', credit: '0.00' }]);
    await h.face.ledger.aggregateOnce();
    expect(await balance('b1', '2026-01-04T00:00:00.001Z')).toEqual([{ group: {}, debit: '100.10', credit: '0.05' }]);
    expect(await balance('b1', undefined, { group_by: ['product'] })).toEqual([
      { group: { product: 'food' }, debit: '0.00', credit: '0.05' },
      { group: { product: 'taxi' }, debit: '103.10', credit: '0.00' },
    ]);
    expect(await balance('b1', undefined, { group_by: ['product'], filter: { region: 'msk' } })).toEqual([
      { group: { product: 'taxi' }, debit: '3.00', credit: '0.00' },
    ]);
    const t = await h.post('/v1/ledger/turnovers', {
      dt_from: '2026-01-04T00:00:00Z',
      dt_to: '2026-01-31T00:00:00Z',
      accounts: [key('b1')],
    });
    expect(t.body.turnovers[0].groups).toEqual([
      { group: {}, debit_init: '100.10', credit_init: '0.00', debit_turnover: '3.00', credit_turnover: '0.05' },
    ]);
    const seen: string[] = [];
    let cursor: string | undefined;
    for (;;) {
      const p = await h.post('/v1/ledger/events', {
        dt_from: '2026-01-01T00:00:00Z',
        dt_to: '2026-02-01T00:00:00Z',
        limit: 2,
        accounts: [key('b1')],
        ...(cursor ? { cursor } : {}),
      });
      expect(p.status).toBe(200);
      seen.push(...p.body.events.map((e: { amount: string }) => e.amount));
      if (!p.body.next_cursor) break;
      cursor = p.body.next_cursor;
    }
    expect(seen).toEqual(['100.10', '0.05', '3.00']);
  });

  it('repeats an idempotent batch without writing and refuses the key with another body', async () => {
    const body = { idempotency_key: 'k-1', events: [ev('i1', 'debit', '5.00')] };
    const a = await h.post('/v1/ledger/batches', body);
    const n = await count();
    const b = await h.post('/v1/ledger/batches', body);
    expect(b.status).toBe(200);
    expect(b.body).toEqual(a.body);
    expect(await count()).toBe(n);
    const c = await h.post('/v1/ledger/batches', { idempotency_key: 'k-1', events: [ev('i1', 'debit', '6.00')] });
    expect(c.status).toBe(409);
    expect(c.body.error.code).toBe('idempotency_key_reused');
    expect(await count()).toBe(n);
    expect(await balance('i1')).toEqual([{ group: {}, debit: '5.00', credit: '0.00' }]);
  });

  it('is all or nothing: one bad event, and every bad-input path is a typed 4xx that writes nothing', async () => {
    const n = await count();
    const good = ev('x1', 'debit', '1.00');
    const cases: Array<[unknown, number, string]> = [
      [{ events: [good, ev('x1', 'debit', '1.001')] }, 400, 'invalid_amount'],
      [{ events: [good, ev('x1', 'debit', '0')] }, 400, 'invalid_amount'],
      [{ events: [good, ev('x1', 'debit', '-1')] }, 400, 'invalid_amount'],
      [{ events: [good, ev('x1', 'debit', '1e3')] }, 400, 'invalid_amount'],
      [{ events: [good, ev('x1', 'debit', '99999999999999999999')] }, 422, 'overflow'],
      [{ events: [good, { ...good, account: { type: 'nope', attrs: {} } }] }, 404, 'account_type_not_found'],
      [
        { events: [good, { ...good, account: { type: 'commission', attrs: { client_id: 'x1' } } }] },
        400,
        'invalid_attributes',
      ],
      [{ events: [good, { ...good, account: acc('x1', { colour: 'red' }) }] }, 400, 'invalid_attributes'],
      [{ events: [good, { ...good, dt: 'yesterday' }] }, 400, 'invalid_date'],
      [{ events: [good, { account: acc('x1'), side: 'debit', amount: '1' }] }, 400, 'invalid_date'],
      [{ events: [good, { ...good, side: 'sideways' }] }, 400, 'bad_request'],
      [{ events: [good, { ...good, amount: 1 }] }, 400, 'bad_request'],
      [{ events: [good], extra: 1 }, 400, 'bad_request'],
      [
        { events: [good], locks: [{ type: 'client', attrs: { client_id: 'x1' }, uid: 'nobody' }] },
        409,
        'lock_not_held',
      ],
      [
        { events: [good], locks: [{ type: 'nolock', attrs: { client_id: 'x1' }, uid: 'u' }] },
        404,
        'lock_type_not_found',
      ],
      [
        { events: [good], states: [{ type: 'contract', attrs: { contract_id: 'x' }, state: {}, expected_version: 3 }] },
        409,
        'state_version_conflict',
      ],
      [
        { events: [good], states: [{ type: 'nostate', attrs: { contract_id: 'x' }, state: {} }] },
        404,
        'state_type_not_found',
      ],
      [{ events: [] }, 400, 'bad_request'],
    ];
    for (const [body, status, code] of cases) {
      const r = await h.post('/v1/ledger/batches', body);
      expect([JSON.stringify(body), r.status, r.body.error?.code]).toEqual([JSON.stringify(body), status, code]);
    }
    const reads: Array<[string, unknown, number, string]> = [
      [
        '/v1/ledger/balances',
        { dt: '2026-01-01T00:00:00Z', accounts: [{ ...key('x1'), group_by: ['client_id'] }] },
        400,
        'grouping_not_allowed',
      ],
      [
        '/v1/ledger/balances',
        { dt: '2026-01-01T00:00:00Z', accounts: [{ ...key('x1'), group_by: ['region', 'region'] }] },
        400,
        'grouping_not_allowed',
      ],
      [
        '/v1/ledger/balances',
        { dt: '2026-01-01T00:00:00Z', accounts: [{ type: 'units', key: { contract_id: 'c' }, group_by: ['nope'] }] },
        400,
        'grouping_not_allowed',
      ],
      [
        '/v1/ledger/balances',
        { dt: '2026-01-01T00:00:00Z', accounts: [{ type: 'commission', key: { client_id: 'x1' } }] },
        400,
        'invalid_attributes',
      ],
      [
        '/v1/ledger/balances',
        { dt: '2026-01-01T00:00:00Z', accounts: [{ ...key('x1'), filter: { colour: 'red' } }] },
        400,
        'invalid_attributes',
      ],
      ['/v1/ledger/balances', { dt: 'soon', accounts: [key('x1')] }, 400, 'invalid_date'],
      ['/v1/ledger/balances', { dt: '2026-01-01T00:00:00Z', accounts: [] }, 400, 'bad_request'],
      [
        '/v1/ledger/balances',
        { dt: '2026-01-01T00:00:00Z', accounts: [{ type: 'zzz', key: {} }] },
        404,
        'account_type_not_found',
      ],
      [
        '/v1/ledger/turnovers',
        { dt_from: '2026-02-01T00:00:00Z', dt_to: '2026-01-01T00:00:00Z', accounts: [key('x1')] },
        400,
        'invalid_date',
      ],
      [
        '/v1/ledger/events',
        { dt_from: '2026-01-01T00:00:00Z', dt_to: '2026-02-01T00:00:00Z', accounts: [key('x1')], limit: 0 },
        400,
        'bad_request',
      ],
      [
        '/v1/ledger/events',
        {
          dt_from: '2026-01-01T00:00:00Z',
          dt_to: '2026-02-01T00:00:00Z',
          accounts: [key('x1')],
          limit: 5,
          cursor: 'garbage',
        },
        400,
        'invalid_cursor',
      ],
      [
        '/v1/ledger/locks/acquire',
        { type: 'client', attrs: { client_id: 'x' }, uid: 'u', mode: 'both', timeout_s: 5 },
        400,
        'bad_request',
      ],
      [
        '/v1/ledger/locks/acquire',
        { type: 'client', attrs: { client_id: 'x' }, uid: 'u', mode: 'shared', timeout_s: 999999 },
        400,
        'bad_request',
      ],
      [
        '/v1/ledger/locks/acquire',
        { type: 'client', attrs: {}, uid: 'u', mode: 'shared', timeout_s: 5 },
        400,
        'invalid_attributes',
      ],
      [
        '/v1/ledger/locks/ping',
        { type: 'client', attrs: { client_id: 'x' }, uid: 'u', timeout_s: 5 },
        409,
        'lock_not_held',
      ],
      ['/v1/ledger/states/get', { type: 'contract', attrs: { other: 'x' } }, 400, 'invalid_attributes'],
    ];
    for (const [url, body, status, code] of reads) {
      const r = await h.post(url, body);
      expect([url, JSON.stringify(body), r.status, r.body.error?.code]).toEqual([
        url,
        JSON.stringify(body),
        status,
        code,
      ]);
    }
    const bad = await h.app.inject({
      method: 'POST',
      url: '/v1/ledger/batches',
      payload: '{not json',
      headers: { 'content-type': 'application/json' },
    });
    expect(bad.statusCode).toBe(400);
    expect(await count()).toBe(n);
    expect(
      (await h.post('/v1/ledger/states/get', { type: 'contract', attrs: { contract_id: 'x' } })).body,
    ).toMatchObject({ state: null, version: 0 });
  });

  it('keeps decimals exact at the scale edge and for sums beyond 64 bits', async () => {
    const micro = (amount: string) => ({
      account: { type: 'micro', attrs: { wallet: 'w1' } },
      side: 'debit',
      amount,
      dt: '2026-01-01T00:00:00Z',
    });
    expect(
      (await h.post('/v1/ledger/batches', { events: [micro('0.000001'), micro('0.000002'), micro('1.1')] })).status,
    ).toBe(200);
    const max = '9223372036854.775807'; // 2^63-1 minor units at scale 6
    const many = Array.from({ length: 20 }, () => ({ ...micro(max), dt: '2026-01-02T00:00:00Z' }));
    expect((await h.post('/v1/ledger/batches', { events: many })).status).toBe(200);
    const get = async () =>
      (
        await h.post('/v1/ledger/balances', {
          dt: '2026-01-03T00:00:00Z',
          accounts: [{ type: 'micro', key: { wallet: 'w1' } }],
        })
      ).body.balances[0].groups[0];
    const expected = ((2n ** 63n - 1n) * 20n + 1_100_003n).toString();
    const want = `${expected.slice(0, -6)}.${expected.slice(-6)}`;
    expect((await get()).debit).toBe(want);
    await h.face.ledger.aggregateOnce();
    expect((await get()).debit).toBe(want);
    const units = {
      account: { type: 'units', attrs: { contract_id: 'u1' } },
      side: 'credit',
      amount: '7',
      dt: '2026-01-01T00:00:00Z',
    };
    expect((await h.post('/v1/ledger/batches', { events: [units] })).status).toBe(200);
    expect((await h.post('/v1/ledger/batches', { events: [{ ...units, amount: '7.0' }] })).body.error.code).toBe(
      'invalid_amount',
    );
  });

  it('locks: exclusive vs shared, expiry by clock, ping, release, writes refused without the lock', async () => {
    const L = { type: 'client', attrs: { client_id: 'L1' } };
    const acquire = (uid: string, mode: string, timeout_s = 10) =>
      h.post('/v1/ledger/locks/acquire', { ...L, uid, mode, timeout_s });
    expect((await acquire('a', 'shared')).status).toBe(200);
    expect((await acquire('b', 'shared')).status).toBe(200);
    const x = await acquire('c', 'exclusive');
    expect([x.status, x.body.error.code, x.body.error.details.held_mode]).toEqual([409, 'lock_held', 'shared']);
    expect((await h.post('/v1/ledger/locks/get', L)).body.holders.map((r: { uid: string }) => r.uid)).toEqual([
      'a',
      'b',
    ]);
    expect((await h.post('/v1/ledger/locks/release', { ...L, uid: 'a' })).body).toEqual({ released: true });
    expect((await h.post('/v1/ledger/locks/release', { ...L, uid: 'b' })).body).toEqual({ released: true });
    expect((await acquire('c', 'exclusive', 10)).status).toBe(200);
    const s = await acquire('a', 'shared');
    expect([s.status, s.body.error.details.held_mode]).toEqual([409, 'exclusive']);
    // writes guarded by the lock
    const batch = (uid: string) =>
      h.post('/v1/ledger/batches', { events: [ev('L1', 'debit', '1')], locks: [{ ...L, uid }] });
    expect((await batch('c')).status).toBe(200);
    expect((await batch('a')).body.error.code).toBe('lock_not_held');
    // ping extends, expiry frees
    clock.advance(8_000);
    expect((await h.post('/v1/ledger/locks/ping', { ...L, uid: 'c', timeout_s: 10 })).status).toBe(200);
    clock.advance(8_000);
    expect((await acquire('a', 'shared')).status).toBe(409);
    expect((await batch('c')).status).toBe(200);
    clock.advance(3_000);
    expect((await batch('c')).body.error.code).toBe('lock_not_held');
    expect((await h.post('/v1/ledger/locks/ping', { ...L, uid: 'c', timeout_s: 10 })).body.error.code).toBe(
      'lock_not_held',
    );
    expect((await acquire('a', 'exclusive')).status).toBe(200);
    expect((await h.post('/v1/ledger/locks/release', { ...L, uid: 'c' })).body).toEqual({ released: false });
    await h.post('/v1/ledger/locks/release', { ...L, uid: 'a' });
    expect(await balance('L1')).toEqual([{ group: {}, debit: '2.00', credit: '0.00' }]);
  });

  it('two writers guarded by one exclusive lock never interleave', async () => {
    const L = { type: 'client', attrs: { client_id: 'W' } };
    const order: string[] = [];
    const writer = async (uid: string) => {
      for (let round = 0; round < 3; round++) {
        for (;;) {
          const r = await h.post('/v1/ledger/locks/acquire', { ...L, uid, mode: 'exclusive', timeout_s: 60 });
          if (r.status === 200) break;
          expect(r.body.error.code).toBe('lock_held');
          await new Promise((res) => setTimeout(res, 2));
        }
        for (let i = 0; i < 3; i++) {
          const r = await h.post('/v1/ledger/batches', {
            events: [{ ...ev('W', 'debit', '1'), info: { uid } }],
            locks: [{ ...L, uid }],
          });
          expect(r.status).toBe(200);
          order.push(uid);
        }
        await h.post('/v1/ledger/locks/release', { ...L, uid });
      }
    };
    await Promise.all([writer('p'), writer('q')]);
    const p = await h.post('/v1/ledger/events', {
      dt_from: '2026-01-01T00:00:00Z',
      dt_to: '2026-02-01T00:00:00Z',
      limit: 100,
      accounts: [key('W')],
    });
    const uids: string[] = p.body.events.map((e: { info: { uid: string } }) => e.info.uid);
    expect(uids).toHaveLength(18);
    for (let i = 0; i < uids.length; i += 3) expect(new Set(uids.slice(i, i + 3)).size).toBe(1);
  });

  it('states: written in batches with optimistic versions', async () => {
    const S = { type: 'contract', attrs: { contract_id: 'k9' } };
    const w = (state: unknown, expected_version?: number) =>
      h.post('/v1/ledger/batches', {
        states: [{ ...S, state, ...(expected_version === undefined ? {} : { expected_version }) }],
      });
    expect((await w({ a: 1 }, 0)).body.states).toEqual([{ ...S, version: 1 }]);
    expect((await w({ a: 2 }, 1)).body.states).toEqual([{ ...S, version: 2 }]);
    expect((await w({ a: 3 }, 1)).body.error.code).toBe('state_version_conflict');
    const n = await count();
    const r = await h.post('/v1/ledger/batches', {
      events: [ev('s1', 'debit', '1')],
      states: [{ ...S, state: {}, expected_version: 1 }],
    });
    expect(r.body.error.code).toBe('state_version_conflict');
    expect(await count()).toBe(n);
    expect((await h.post('/v1/ledger/states/get', S)).body).toEqual({ ...S, state: { a: 2 }, version: 2 });
  });
});
