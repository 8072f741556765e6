/**
 * The data behind the console's charts and browsers: the node's activity
 * series (in memory, last hour), a topic's events by key, type and time,
 * and the accounts of a ledger type with their balances.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { Activity, quantile, Ring, Series } from '../../src/core/activity.js';
import { startNode, type Node } from '../../src/serve.js';
import '../../src/machines/examples.js';
import { DIALECTS, createTestEnv, waitFor, type TestEnv } from '../support/env.js';
import { jsonRequest } from '../support/http.js';

describe('activity series (unit)', () => {
  it('keeps the newest samples of a full ring, oldest first', () => {
    const r = new Ring(3);
    for (const v of [1, 2, 3, 4, 5]) r.push(v);
    expect(r.toArray()).toEqual([3, 4, 5]);
    expect(r.length).toBe(3);
  });

  it('turns counters into per-second rates and durations into a p99 per interval', () => {
    let now = 1_000_000;
    const a = new Activity();
    const s = new Series(a, { intervalMs: 1000, windowMs: 5000, now: () => now });
    s.sample(); // baseline
    a.count('publish', 30);
    for (let i = 1; i <= 100; i++) a.time('call', i, true);
    a.count('step', 4, 'orders');
    now += 2000;
    s.sample();
    const r = s.read();
    expect(r.t).toEqual([1_002_000]);
    expect(r.series.publish_per_s).toEqual([15]);
    expect(r.series.call_per_s).toEqual([50]);
    expect(r.series.p99_call_ms).toEqual([99]);
    expect(r.series.p99_publish_ms).toEqual([null]);
    expect(r.series['steps_per_s:orders']).toEqual([2]);
    // The next interval has no calls: rate 0, no p99.
    now += 1000;
    s.sample();
    expect(s.read().series.call_per_s).toEqual([50, 0]);
    expect(s.read().series.p99_call_ms).toEqual([99, null]);
    // A namespace seen later is null before it appeared; `since` and `names` narrow the answer.
    a.count('step', 3, 'billing');
    now += 1000;
    s.sample();
    const late = s.read({ names: ['steps_per_s'] });
    expect(Object.keys(late.series).sort()).toEqual(['steps_per_s:billing', 'steps_per_s:orders']);
    expect(late.series['steps_per_s:billing']).toEqual([null, null, 3]);
    expect(s.read({ since: 1_003_000 }).t).toEqual([1_004_000]);
    // The window keeps windowMs / intervalMs samples.
    for (let i = 0; i < 10; i++) {
      now += 1000;
      s.sample();
    }
    expect(s.read().t).toHaveLength(5);
  });

  it('reads a gauge at each sample and keeps a failed read as null', async () => {
    let now = 0;
    let v: number | Error = 7;
    const errors: string[] = [];
    const s = new Series(new Activity(), { intervalMs: 1000, now: () => now, onError: (_e, g) => errors.push(g) });
    s.gauge('subscription_lag', async () => {
      if (v instanceof Error) throw v;
      return v;
    });
    const tick = async () => {
      s.sample();
      await new Promise((r) => setTimeout(r, 0));
      now += 1000;
    };
    // Each sample shows the value the previous one read.
    await tick();
    await tick();
    v = new Error('down');
    await tick();
    await tick();
    expect(s.read().series.subscription_lag).toEqual([7, 7, null]);
    expect(errors).toEqual(['subscription_lag', 'subscription_lag']);
  });

  it('reads a costly gauge at most every everyMs, repeating its last value between', async () => {
    let now = 0;
    let reads = 0;
    const s = new Series(new Activity(), { intervalMs: 1000, now: () => now });
    s.gauge('slow', () => ++reads, 3000);
    for (let i = 0; i < 7; i++) {
      s.sample();
      now += 1000;
    }
    // Read at 0, 3000 and 6000 ms.
    expect(reads).toBe(3);
    expect(s.read().series.slow).toEqual([1, 1, 2, 2, 2, 3]);
  });

  it('computes a nearest-rank quantile', () => {
    expect(quantile([5, 1, 3], 0.99)).toBe(5);
    expect(quantile([10], 0.99)).toBe(10);
    expect(
      quantile(
        Array.from({ length: 1000 }, (_, i) => i + 1),
        0.99,
      ),
    ).toBe(990);
  });
});

describe.each(DIALECTS)('console data routes (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  const req = (method: string, path: string, body?: unknown) => jsonRequest(node.url, method, path, body);

  beforeAll(async () => {
    env = await createTestEnv(dialect, {
      shards: 2,
      extra: {
        machines: { examples: true, namespaces: { counters: { processor: { in_process: 'example.counter' } } } },
        ledger: { accounts: { cash: { key: ['client'], aux: ['product'], scale: 2 } } },
        bus: { topics: ['orders', 'other'] },
      },
    });
    node = await startNode(buildConfig({ ...env.input, http: { host: '127.0.0.1', port: 0 } }));
  }, 60_000);
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  it("GET /v1/metrics/series shows this node's publish, call and step rates and the subscription lag", async () => {
    const series = node.runtime.series;
    series.sample();
    expect((await req('PUT', '/v1/bus/subscriptions/lagging', { topics: ['orders'], start: 'latest' })).status).toBe(
      201,
    );
    const events = Array.from({ length: 12 }, (_, i) => ({ key: `k${i % 3}`, type: 'created', data: { i } }));
    expect((await req('POST', '/v1/bus/topics/orders/events', { events })).status).toBe(200);
    expect((await req('POST', '/v1/namespaces/counters/machines/c1/start', { args: 1 })).status).toBe(200);
    expect((await req('POST', '/v1/namespaces/counters/machines/c1/call', { args: 2 })).status).toBe(200);
    series.sample();
    // The lag is read at most every 10 s (it scans backlogs): sample until a sample holds it.
    await waitFor(
      async () => {
        series.sample();
        await new Promise((r) => setTimeout(r, 200));
        return (
          (await req('GET', '/v1/metrics/series?names=subscription_lag')).body!.series.subscription_lag as Array<
            number | null
          >
        ).includes(12);
      },
      20_000,
      'a sample of the lag',
    );
    const r = await req('GET', '/v1/metrics/series');
    expect(r.status).toBe(200);
    const body = r.body as { interval_ms: number; t: number[]; series: Record<string, Array<number | null>> };
    expect(body.interval_ms).toBeGreaterThan(0);
    const sum = (name: string) => (body.series[name] ?? []).reduce<number>((a, v) => a + (v ?? 0), 0);
    for (const name of [
      'publish_per_s',
      'deliver_per_s',
      'call_per_s',
      'step_per_s',
      'push_per_s',
      'p99_publish_ms',
      'p99_call_ms',
      'p99_step_ms',
      'p99_push_ms',
      'subscription_lag',
    ]) {
      expect(body.series[name], name).toHaveLength(body.t.length);
    }
    expect(sum('publish_per_s')).toBeGreaterThan(0);
    expect(sum('call_per_s')).toBeGreaterThan(0);
    expect(sum('steps_per_s:counters')).toBeGreaterThan(0);
    expect(body.series.p99_call_ms!.some((v) => v !== null && v > 0)).toBe(true);
    expect(Math.max(...body.series.subscription_lag!.map((v) => v ?? 0))).toBe(12);
    const since = body.t[body.t.length - 2]!;
    const only = await req('GET', `/v1/metrics/series?names=call_per_s&since=${since}`);
    expect(Object.keys(only.body!.series)).toEqual(['call_per_s']);
    expect(only.body!.t[0]).toBe(body.t[body.t.length - 1]);
    const one = await req('GET', '/v1/metrics/series?names=steps_per_s:counters');
    expect(Object.keys(one.body!.series)).toEqual(['steps_per_s:counters']);
  });

  it('GET /v1/metrics/series refuses a bad query with bad_request', async () => {
    for (const q of ['since=soon', 'names=Bad%20Name', 'since=-1', 'other=1']) {
      const r = await req('GET', `/v1/metrics/series?${q}`);
      expect([q, r.status, r.body?.error?.code]).toEqual([q, 400, 'bad_request']);
    }
  });

  it("browses a topic's events by key, type and time, newest first, a page at a time", async () => {
    const t0 = Date.now();
    const events = Array.from({ length: 9 }, (_, i) => ({
      id: `b-${i}`,
      key: `acct-${i % 3}`,
      type: i % 2 ? 'paid' : 'created',
      data: { n: i },
    }));
    expect((await req('POST', '/v1/bus/topics/other/events', { events })).status).toBe(200);
    // All of the topic, 4 a page, across both shards.
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r: { status: number; body: Record<string, any> | null } = await req(
        'GET',
        `/v1/bus/topics/other/events?limit=4${cursor ? `&cursor=${cursor}` : ''}`,
      );
      expect(r.status).toBe(200);
      for (const e of r.body!.items) seen.push(e.id);
      cursor = r.body!.next_cursor;
      pages++;
    } while (cursor !== null && pages < 10);
    expect(seen.sort()).toEqual(events.map((e) => e.id).sort());
    expect(pages).toBeGreaterThanOrEqual(3);
    // One key: its events newest first, with what was published.
    const byKey = await req('GET', '/v1/bus/topics/other/events?key=acct-1');
    expect(byKey.body!.items.map((e: { data: { n: number } }) => e.data.n)).toEqual([7, 4, 1]);
    expect(byKey.body!.items[0]).toMatchObject({ topic: 'other', key: 'acct-1', id: 'b-7', type: 'paid', headers: {} });
    const byType = await req('GET', '/v1/bus/topics/other/events?key=acct-1&type=paid');
    expect(byType.body!.items.map((e: { id: string }) => e.id)).toEqual(['b-7', 'b-1']);
    // Time: nothing before the publish; everything after t0.
    const before = await req('GET', `/v1/bus/topics/other/events?to=${new Date(t0 - 60_000).toISOString()}`);
    expect(before.body!.items).toEqual([]);
    const after = await req('GET', `/v1/bus/topics/other/events?from=${new Date(t0 - 1000).toISOString()}&limit=100`);
    expect(after.body!.items).toHaveLength(9);
    // Another topic's events are not shown.
    expect(after.body!.items.every((e: { topic: string }) => e.topic === 'other')).toBe(true);
  });

  it('refuses a bad topic browse with its code', async () => {
    const cases: Array<[string, number, string]> = [
      ['/v1/bus/topics/nope/events', 404, 'topic_not_found'],
      ['/v1/bus/topics/other/events?from=yesterday', 400, 'bad_request'],
      ['/v1/bus/topics/other/events?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z', 400, 'bad_request'],
      ['/v1/bus/topics/other/events?cursor=bm9wZQ', 400, 'bad_request'],
      ['/v1/bus/topics/other/events?limit=0', 400, 'bad_request'],
    ];
    for (const [path, status, code] of cases) {
      const r = await req('GET', path);
      expect([path, r.status, r.body?.error?.code]).toEqual([path, status, code]);
    }
  });

  it('lists the accounts of a ledger type with their balances, paged', async () => {
    const ev = (client: string, side: string, amount: string) => ({
      account: { type: 'cash', attrs: { client, product: 'p' } },
      side,
      amount,
    });
    const w = await req('POST', '/v1/ledger/batches', {
      idempotency_key: `acc-${dialect}`,
      dt_default: '2026-01-05T10:00:00Z',
      events: [
        ev('a', 'debit', '10.00'),
        ev('a', 'credit', '2.50'),
        ev('b', 'debit', '1.00'),
        ev('c', 'credit', '7.25'),
      ],
    });
    expect(w.status).toBe(200);
    const first = await req('GET', '/v1/ledger/accounts?type=cash&limit=2&dt=2026-02-01T00:00:00Z');
    expect(first.status).toBe(200);
    expect(first.body!.items).toEqual([
      { key: { client: 'a' }, debit: '10.00', credit: '2.50' },
      { key: { client: 'b' }, debit: '1.00', credit: '0.00' },
    ]);
    const second = await req(
      'GET',
      `/v1/ledger/accounts?type=cash&limit=2&dt=2026-02-01T00:00:00Z&cursor=${first.body!.next_cursor}`,
    );
    expect(second.body!.items).toEqual([{ key: { client: 'c' }, debit: '0.00', credit: '7.25' }]);
    expect(second.body!.next_cursor).toBeNull();
    // Before the events: the accounts are there with nothing on them.
    const early = await req('GET', '/v1/ledger/accounts?type=cash&dt=2026-01-01T00:00:00Z');
    expect(early.body!.items.map((a: { debit: string }) => a.debit)).toEqual(['0.00', '0.00', '0.00']);
  });

  it('refuses a bad account list with its code', async () => {
    const cases: Array<[string, number, string]> = [
      ['/v1/ledger/accounts?type=nope', 404, 'account_type_not_found'],
      ['/v1/ledger/accounts', 400, 'bad_request'],
      ['/v1/ledger/accounts?type=cash&dt=someday', 400, 'invalid_date'],
      ['/v1/ledger/accounts?type=cash&cursor=bm9wZQ', 400, 'bad_request'],
    ];
    for (const [path, status, code] of cases) {
      const r = await req('GET', path);
      expect([path, r.status, r.body?.error?.code]).toEqual([path, status, code]);
    }
  });
});
