import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { status } from '@grpc/grpc-js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { busClient, publish, sleep, startBusNode, Subscriber, type BusClient, type WireDelivery } from './support.js';
import type { Node } from '../../src/serve.js';
import type { Bus } from '../../src/bus/bus.js';

describe.each(DIALECTS)('bus over gRPC (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  let bus: Bus;
  let client: BusClient;
  let addr: string;
  beforeAll(async () => {
    env = await createTestEnv(dialect);
    ({ node, bus, addr } = await startBusNode(env));
    client = busClient(addr);
  });
  afterAll(async () => {
    client?.close();
    await node?.close();
    await env?.cleanup();
  });

  const ev = (key: string, n: number, extra: Record<string, unknown> = {}) => ({
    topic: 'orders',
    key,
    type: 'created',
    data: JSON.stringify({ key, n }),
    ...extra,
  });
  const parsed = (d: WireDelivery) => JSON.parse(d.event.data) as { key: string; n: number };

  it('publishes (unary and streaming), dedupes by id, and refuses bad input with codes, writing nothing', async () => {
    const ps = await publish(client, [ev('a', 1, { id: 'x1' }), ev('a', 2), ev('b', 1, { id: 'x1' })]);
    expect(ps.map((p) => p.duplicate)).toEqual([false, false, true]);
    expect(ps[2]!.pos).toBe(ps[0]!.pos);
    const again = await publish(client, [ev('a', 1, { id: 'x1' })]);
    expect(again[0]).toEqual({ ...ps[0], duplicate: true });
    const streamed = await new Promise<Array<{ pos: number }>>((resolve, reject) => {
      const w = client.PublishStream((err, res) => (err ? reject(err) : resolve(res.positions)));
      w.write({ events: [ev('c', 1)] });
      w.write({ events: [ev('c', 2), ev('c', 3)] });
      w.end();
    });
    expect(streamed).toHaveLength(3);
    const head = await node.runtime.log.headPos('s0');
    const bad: Array<[unknown[], number, string]> = [
      [[], status.INVALID_ARGUMENT, 'bad_request'],
      [[{ topic: 'nope', type: 't' }], status.NOT_FOUND, 'topic_not_found'],
      [[ev('a', 9), { topic: 'orders', type: '' }], status.INVALID_ARGUMENT, 'bad_request'],
      [[{ topic: 'orders', type: 't', data: '{not json' }], status.INVALID_ARGUMENT, 'bad_request'],
    ];
    for (const [events, code, errorCode] of bad) {
      const err = (await publish(client, events).catch((e: unknown) => e)) as {
        code: number;
        metadata: { get(k: string): unknown[] };
      };
      expect(err.code).toBe(code);
      expect(err.metadata.get('error-code')[0]).toBe(errorCode);
    }
    await sleep(100);
    expect(await node.runtime.log.headPos('s0')).toBe(head);
  });

  it('publishes over PublishBatches: one answer per batch, in order, the batches written in the order sent; a refused batch ends the call with its code', async () => {
    const call = client.PublishBatches();
    const answers: Array<Array<{ pos: number }>> = [];
    call.on('data', (m: { positions: Array<{ pos: number }> }) => answers.push(m.positions));
    const statusP = new Promise<{ code: number; errorCode: unknown }>((resolve) => {
      call.on('status', (s: { code: number; metadata: { get(k: string): unknown[] } }) =>
        resolve({ code: s.code, errorCode: s.metadata.get('error-code')[0] }),
      );
    });
    call.on('error', () => {});
    for (let b = 0; b < 20; b++) call.write({ events: Array.from({ length: 5 }, (_, i) => ev('pb', b * 5 + i)) });
    await waitFor(() => answers.length >= 20, 10_000, 'every batch answered');
    expect(answers.map((a) => a.length)).toEqual(Array.from({ length: 20 }, () => 5));
    const all = answers.flat().map((p) => p.pos);
    expect(all).toEqual([...all].sort((x, y) => x - y));
    const head = await node.runtime.log.headPos('s0');
    call.write({ events: [{ topic: 'nope', type: 't' }] });
    call.write({ events: [ev('pb', 100)] });
    const st = await statusP;
    expect([st.code, st.errorCode]).toEqual([status.NOT_FOUND, 'topic_not_found']);
    await sleep(100);
    expect(await node.runtime.log.headPos('s0')).toBe(head);
    expect(answers).toHaveLength(20);
  });

  it('delivers from the acked position after random disconnects while publishers write: the missed events, then live, per-key order, none twice', async () => {
    let round = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 0, max: 40 }),
        async (cuts, pauseMs) => {
          const name = `prop-${dialect}-${round++}`;
          const topic = 'payments';
          const total = 240;
          const keys = ['k0', 'k1', 'k2', 'k3'];
          // The subscription exists before the writers start, so `latest` is "before the first event".
          await bus.putSubscription(name, { topics: [topic], start: 'latest', max_in_flight: 16 });
          const published: Array<{ key: string; n: number }> = [];
          const writer = (async () => {
            for (let i = 0; i < total / 8; i++) {
              const batch = Array.from({ length: 8 }, (_, j) => {
                const n = i * 8 + j;
                return { topic, key: keys[n % 4]!, type: 't', data: JSON.stringify({ key: keys[n % 4], n }) };
              });
              await publish(client, batch);
              published.push(...batch.map((b) => JSON.parse(b.data) as { key: string; n: number }));
              await sleep(3);
            }
          })();
          const acked: Array<{ key: string; n: number }> = [];
          const config = { topics: [topic], start: 'latest', maxInFlight: 16 };
          const session = async (limit: number) => {
            let got = 0;
            let resolveDone!: () => void;
            const done = new Promise<void>((r) => (resolveDone = r));
            const s = new Subscriber(client, name, config, (d, sub) => {
              acked.push(JSON.parse(d.event.data) as { key: string; n: number });
              sub.ack([d.deliveryId]);
              if (++got >= limit || acked.length >= total) resolveDone();
            });
            await s.opened;
            await Promise.race([done, sleep(5000)]);
            await s.end();
          };
          for (const cut of cuts) {
            await session(cut);
            await sleep(pauseMs);
          }
          await writer;
          while (acked.length < total) {
            const before = acked.length;
            await session(total);
            if (acked.length === before) break;
          }
          expect(acked.length).toBe(total);
          expect(new Set(acked.map((a) => a.n)).size).toBe(total);
          for (const k of keys) {
            const ns = acked.filter((a) => a.key === k).map((a) => a.n);
            expect(ns).toEqual([...ns].sort((x, y) => x - y));
          }
          expect(published.length).toBe(total);
        },
      ),
      { numRuns: 3 },
    );
  });

  it('resumes exactly after a server restart', async () => {
    const name = `restart-${dialect}`;
    await bus.putSubscription(name, { topics: ['orders'], start: 'latest' });
    await publish(
      client,
      Array.from({ length: 20 }, (_, i) => ev('r', i)),
    );
    const got: number[] = [];
    const s1 = new Subscriber(client, name, undefined, (d, s) => {
      if (got.length < 12) {
        got.push(parsed(d).n);
        s.ack([d.deliveryId]);
      }
    });
    await s1.opened;
    await waitFor(() => got.length >= 12, 5000, '12 deliveries');
    await s1.end();
    client.close();
    await node.close();
    ({ node, bus, addr } = await startBusNode(env));
    client = busClient(addr);
    await publish(
      client,
      Array.from({ length: 10 }, (_, i) => ev('r', 20 + i)),
    );
    const s2 = new Subscriber(client, name, undefined, (d, s) => {
      got.push(parsed(d).n);
      s.ack([d.deliveryId]);
    });
    await s2.opened;
    await waitFor(() => got.length >= 30, 5000, 'all deliveries');
    await sleep(100);
    await s2.end();
    expect(got).toEqual(Array.from({ length: 30 }, (_, i) => i));
  });

  it('delivers in batches when the call opens with batch: catch-up then live, in order, fewer messages than events, resuming after acks', async () => {
    const name = `batch-${dialect}`;
    await bus.putSubscription(name, {
      topics: ['orders'],
      start: 'latest',
      max_in_flight: 500,
      filter: { key_prefix: 'bat' },
    });
    await publish(
      client,
      Array.from({ length: 300 }, (_, i) => ev('bat', i)),
    );
    const got: number[] = [];
    const s = new Subscriber(
      client,
      name,
      undefined,
      (d, sub) => {
        got.push(parsed(d).n);
        sub.ack([d.deliveryId]);
      },
      { batch: true },
    );
    await s.opened;
    await waitFor(() => got.length >= 300, 10_000, 'catch-up');
    await publish(
      client,
      Array.from({ length: 50 }, (_, i) => ev('bat', 300 + i)),
    );
    await waitFor(() => got.length >= 350, 10_000, 'live');
    await sleep(150);
    await s.end();
    expect(got).toEqual(Array.from({ length: 350 }, (_, i) => i));
    expect(s.messages).toBeLessThan(350 / 2);
    // Acked up to the end: a new connection (one by one this time) gets only what comes next.
    await publish(client, [ev('bat', 350)]);
    const s2 = new Subscriber(client, name);
    await s2.opened;
    await waitFor(() => s2.deliveries.length >= 1, 5000, 'the next event');
    await sleep(100);
    await s2.end();
    expect(s2.deliveries.map(parsed).map((e) => e.n)).toEqual([350]);
    expect(s2.messages).toBe(1);
  });

  it('keeps a consumer 10x slower than the writers connected, losing nothing', async () => {
    const name = `slow-${dialect}`;
    await bus.putSubscription(name, {
      topics: ['orders'],
      start: 'latest',
      max_in_flight: 4,
      filter: { key_prefix: 'slow' },
    });
    const got: number[] = [];
    const s = new Subscriber(client, name, undefined, (d, sub) => {
      setTimeout(() => {
        got.push(parsed(d).n);
        sub.ack([d.deliveryId]);
      }, 10);
    });
    await s.opened;
    const total = 150;
    for (let i = 0; i < total; i += 10) {
      await publish(
        client,
        Array.from({ length: 10 }, (_, j) => ev('slow', i + j)),
      );
      await sleep(10);
    }
    await waitFor(() => got.length >= total, 20_000, 'slow consumer to finish');
    await s.end();
    expect((await s.status).code).toBe(status.OK);
    expect(got).toEqual(Array.from({ length: total }, (_, i) => i));
  });

  it('redelivers after the ack wait, after a nack delay, and dead-letters after max deliveries', async () => {
    const name = `redeliver-${dialect}`;
    await bus.putSubscription(name, {
      topics: ['orders'],
      start: 'latest',
      ack_wait_ms: 150,
      max_deliveries: 3,
      dead_letter_topic: 'dlq',
      filter: { key_prefix: 'rd' },
    });
    const seen: Array<{ n: number; count: number; at: number }> = [];
    const s = new Subscriber(client, name, undefined, (d, sub) => {
      const n = parsed(d).n;
      seen.push({ n, count: d.deliveryCount, at: Date.now() });
      if (n === 1 && d.deliveryCount === 2) sub.ack([d.deliveryId]); // ack wait → redelivered once, then acked
      if (n === 2 && d.deliveryCount === 1) sub.nack(d.deliveryId, 400);
      if (n === 2 && d.deliveryCount === 2) sub.ack([d.deliveryId]);
      // n === 3: never acked → dead letter after 3 deliveries
    });
    await s.opened;
    const dl = new Subscriber(client, `dl-${dialect}`, { topics: ['dlq'], start: 'earliest' }, (d, sub) =>
      sub.ack([d.deliveryId]),
    );
    await dl.opened;
    await publish(client, [ev('rd', 1), ev('rd', 2), ev('rd', 3)]);
    await waitFor(() => dl.deliveries.length >= 1, 5000, 'dead letter');
    await sleep(300);
    await s.end();
    await dl.end();
    expect(seen.filter((x) => x.n === 1).map((x) => x.count)).toEqual([1, 2]);
    const two = seen.filter((x) => x.n === 2);
    expect(two.map((x) => x.count)).toEqual([1, 2]);
    expect(two[1]!.at - two[0]!.at).toBeGreaterThanOrEqual(350);
    expect(seen.filter((x) => x.n === 3).map((x) => x.count)).toEqual([1, 2, 3]);
    expect(dl.deliveries).toHaveLength(1);
    const dead = dl.deliveries[0]!;
    expect(JSON.parse(dead.event.data)).toEqual({ key: 'rd', n: 3 });
    expect(dead.event.headers['x-dead-letter-subscription']).toBe(name);
    expect(dead.event.headers['x-deliveries']).toBe('3');
    const info = await bus.getSubscription(name);
    expect(info.positions.s0).toBeGreaterThanOrEqual(dead.pos - 1 > 0 ? 1 : 0);
  });

  it('refuses a second connection with subscription_busy, and bad opens with codes', async () => {
    const name = `busy-${dialect}`;
    const a = new Subscriber(client, name, { topics: ['orders'] });
    await a.opened;
    const b = new Subscriber(client, name, { topics: ['orders'] });
    const st = await b.status;
    expect(st.code).toBe(status.FAILED_PRECONDITION);
    expect(st.errorCode).toBe('subscription_busy');
    await a.end();
    const c = new Subscriber(client, name);
    await c.opened;
    await c.end();
    const bads: Array<[string, Record<string, unknown> | undefined, number, string]> = [
      ['never-made', undefined, status.NOT_FOUND, 'subscription_not_found'],
      ['bad name!', { topics: ['orders'] }, status.INVALID_ARGUMENT, 'bad_request'],
      ['x-topic', { topics: ['nope'] }, status.NOT_FOUND, 'topic_not_found'],
      ['x-start', { topics: ['orders'], start: 'yesterday' }, status.INVALID_ARGUMENT, 'bad_request'],
    ];
    for (const [n, cfg, code, ec] of bads) {
      const s = new Subscriber(client, n, cfg);
      const r = await s.status;
      expect([n, r.code, r.errorCode]).toEqual([n, code, ec]);
    }
    expect(await bus.listSubscriptions()).not.toContain('x-topic');
  });

  it('filters by type, key prefix and headers', async () => {
    const name = `filter-${dialect}`;
    const s = new Subscriber(
      client,
      name,
      { topics: ['orders'], start: 'latest', filter: { types: ['paid'], keyPrefix: 'eu-', headers: { region: 'x' } } },
      (d, sub) => sub.ack([d.deliveryId]),
    );
    await s.opened;
    await publish(client, [
      { topic: 'orders', key: 'eu-1', type: 'paid', headers: { region: 'x' }, data: '1' },
      { topic: 'orders', key: 'eu-1', type: 'created', headers: { region: 'x' }, data: '2' },
      { topic: 'orders', key: 'us-1', type: 'paid', headers: { region: 'x' }, data: '3' },
      { topic: 'orders', key: 'eu-2', type: 'paid', headers: { region: 'y' }, data: '4' },
      { topic: 'payments', key: 'eu-2', type: 'paid', headers: { region: 'x' }, data: '5' },
      { topic: 'orders', key: 'eu-3', type: 'paid', headers: { region: 'x', other: 'z' }, data: '6' },
    ]);
    await waitFor(() => s.deliveries.length >= 2, 5000, 'filtered deliveries');
    await sleep(150);
    await s.end();
    expect(s.deliveries.map((d) => d.event.data)).toEqual(['1', '6']);
  });

  it('starts at earliest, latest, a position and a time', async () => {
    const first = await publish(client, [ev('st', 1)]);
    await sleep(20);
    const t = Date.now();
    await sleep(20);
    const second = await publish(client, [ev('st', 2), ev('st', 3)]);
    const collect = async (name: string, start: string) => {
      const s = new Subscriber(client, name, { topics: ['orders'], start, filter: { keyPrefix: 'st' } }, (d, sub) =>
        sub.ack([d.deliveryId]),
      );
      await s.opened;
      await sleep(250);
      await s.end();
      return s.deliveries.map((d) => parsed(d).n);
    };
    expect(await collect(`st-e-${dialect}`, 'earliest')).toEqual([1, 2, 3]);
    expect(await collect(`st-l-${dialect}`, 'latest')).toEqual([]);
    expect(await collect(`st-p-${dialect}`, `position:${first[0]!.pos}`)).toEqual([2, 3]);
    expect(await collect(`st-t-${dialect}`, `time:${new Date(t).toISOString()}`)).toEqual([2, 3]);
    expect(second).toHaveLength(2);
  });
});
