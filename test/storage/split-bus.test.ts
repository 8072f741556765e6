import { randomBytes } from 'node:crypto';
import amqp, { type ChannelModel } from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bus } from '../../src/bus/bus.js';
import { CLAIM } from '../../src/bus/bus-sql.js';
import { busFace } from '../../src/bus/face.js';
import { buildConfig } from '../../src/core/config.js';
import { parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';
import { verifyShard } from '../../src/log/verify.js';
import { startNode, type Node } from '../../src/serve.js';
import { busClient, Subscriber, type BusClient } from '../bus/support.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { withSpare } from '../support/split.js';
import { checkOnceInOrder, movesAt, publishRetried, TOPIC } from './split-bus-support.js';

const AT = '8';
const AMQP_URL = process.env.MILLRACE_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const hashMoves = (key: readonly string[]): boolean => sha1(shardKeyText(key)) >= parseHashBound(AT);
/** The first of `name0`, `name1`, ... that `pick` takes. */
const first = (prefix: string, pick: (s: string) => boolean): string => {
  for (let i = 0; ; i++) if (pick(`${prefix}${i}`)) return `${prefix}${i}`;
};

const busOf = (node: Node): Bus => (node.faces.find((f) => f.name === 'bus') as unknown as { bus: Bus }).bus;

describe.each(DIALECTS)('a shard split moves the bus (%s)', (dialect) => {
  let env: TestEnv;
  let a: Node;
  /** PostgreSQL: a second node, not the one splitting, that publishes half the load and serves the subscriber. */
  let b: Node | undefined;
  let client: BusClient;

  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 2 });
    const input = {
      ...withSpare(env),
      grpc: { enabled: true, host: '127.0.0.1', port: 0 },
      http: { port: 0, drain_timeout_ms: 300 },
      bus: { topics: [TOPIC], lease_ms: 2000 },
    };
    a = await startNode(buildConfig(input as never), { faces: [busFace] });
    if (dialect === 'postgres')
      b = await startNode(buildConfig({ ...input, node_id: `${env.config.node_id}-b` } as never), { faces: [busFace] });
    client = busClient(`127.0.0.1:${(b ?? a).grpc!.port}`);
  });
  afterAll(async () => {
    client?.close();
    await b?.close();
    await a?.close();
    await env?.cleanup();
  });

  it('a gRPC subscriber connected throughout sees every key once, in publish order; retried ids answer duplicates', async () => {
    const keys = Array.from({ length: 8 }, (_, i) => `key${i}`);
    expect(keys.some((k) => movesAt(AT, k)) && keys.some((k) => !movesAt(AT, k))).toBe(true);
    // Its config, lease and acked positions live on a home that moves too.
    const name = first('live', (n) => hashMoves(['bus/sub', n]));
    const acked: Array<{ id: string; key: string }> = [];
    let ended = false;
    const sub = new Subscriber(client, name, { topics: [TOPIC], maxInFlight: 8, ackWaitMs: 600_000 }, (d, s) => {
      acked.push({ id: d.event.id, key: d.event.key });
      s.ack([d.deliveryId]);
    });
    void sub.status.then(() => (ended = true));
    await sub.opened;

    const published = new Map<string, string[]>(keys.map((k) => [k, []]));
    let stop = false;
    let count = 0;
    const load = Promise.all(
      keys.map(async (key, k) => {
        const bus = b !== undefined && k % 2 === 1 ? busOf(b) : busOf(a);
        for (let i = 0; !stop; i++) {
          const batch = [0, 1].map((j) => ({ id: `${key}#${i}.${j}`, topic: TOPIC, key, type: 't', data: i }));
          await publishRetried(bus, batch);
          published.get(key)!.push(...batch.map((e) => e.id));
          count += batch.length;
        }
      }),
    );
    let job;
    try {
      await waitFor(() => count >= 100, 30_000, 'load running');
      job = await a.runtime.splitter.start('s0', AT, 's1');
      await a.runtime.splitter.wait(job.id);
      const after = count + 100;
      await waitFor(() => count >= after, 30_000, 'load after the cut-over');
    } finally {
      stop = true;
      await load;
    }
    expect((await a.runtime.splitter.jobs()).map((j) => [j.id, j.phase])).toEqual([[job!.id, 'done']]);
    const total = [...published.values()].flat().length;
    await waitFor(() => acked.length >= total, 60_000, 'every event acked');
    checkOnceInOrder(acked, published);
    expect(ended).toBe(false);

    // The subscription now lives on s1 alone.
    const s0 = a.runtime.storage.shard('s0');
    const s1 = a.runtime.storage.shard('s1');
    expect(await s1.reader.all('SELECT name FROM bus_subscriptions WHERE name = ?', [name])).toHaveLength(1);
    expect(await s0.reader.all('SELECT name FROM bus_subscriptions WHERE name = ?', [name])).toHaveLength(0);
    expect((await busOf(a).getSubscription(name)).config.topics).toEqual([TOPIC]);

    // Every id published again after the split (and the source's cleanup) answers duplicate; none is stored twice.
    for (const key of keys) {
      const ids = published.get(key)!;
      const again = await busOf(a).publish(ids.map((id) => ({ id, topic: TOPIC, key, type: 't', data: null })));
      expect(
        again.every((p) => p.duplicate),
        key,
      ).toBe(true);
      const home = movesAt(AT, key) ? s1 : s0;
      const rows = await home.reader.all<{ meta: string }>('SELECT meta FROM events WHERE stream = ? ORDER BY seq', [
        `t/${TOPIC}/${key}`,
      ]);
      expect(
        rows.map((r) => (JSON.parse(r.meta) as { id: string }).id),
        key,
      ).toEqual(ids);
    }
    await sub.end();
    await waitFor(
      async () => (await s1.reader.all<{ n: number }>('SELECT count(*) AS n FROM events WHERE pos IS NULL'))[0]!.n == 0,
      10_000,
      'numbered',
    );
    for (const s of [s0, s1]) expect((await verifyShard(s)).ok, s.name).toBe(true);
  }, 180_000);
});

describe.each(DIALECTS)('dedupe claims in flight at the fence (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 2 });
    node = await startNode(buildConfig({ ...withSpare(env), bus: { topics: [TOPIC], lease_ms: 2000 } } as never), {
      faces: [busFace],
    });
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  it('are neither stranded nor doubled: the id is stored once, on the shard that owns its key now', async () => {
    const bus = busOf(node);
    const key = first('k', (k) => movesAt(AT, k));
    const stream = `t/${TOPIC}/${key}`;
    // Ids whose home moves, and one whose home stays, each claimed by an attempt that never stored its event
    // (refused by the fence, or dead), aimed at the source; and one stored before the split.
    const movingHome = first('a', (id) => hashMoves(['dedupe', `${TOPIC}/${id}`]));
    const stayingHome = first('b', (id) => !hashMoves(['dedupe', `${TOPIC}/${id}`]));
    const storedBefore = first('c', (id) => hashMoves(['dedupe', `${TOPIC}/${id}`]));
    await publishRetried(bus, [{ id: storedBefore, topic: TOPIC, key, type: 't', data: 0 }]);
    const s0 = node.runtime.storage.shard('s0');
    const now = node.runtime.clock.now();
    for (const id of [movingHome, stayingHome])
      await s0.write((tx) =>
        tx.run('INSERT INTO bus_dedupe (ref, stream, seq, created_at, token, target) VALUES (?, ?, ?, ?, ?, ?)', [
          `${TOPIC}/${id}`,
          stream,
          CLAIM,
          now,
          `0000000000.dead.0`,
          's0',
        ]),
      );
    const subName = first('sub', (n) => hashMoves(['bus/sub', n]));
    await bus.putSubscription(subName, { topics: [TOPIC] });
    const job = await node.runtime.splitter.start('s0', AT, 's1');
    // Until the cleanup, the source keeps the moved subscription's row: it is listed once, from its new home.
    await waitFor(
      async () => (await node.runtime.splitter.job('s0', job.id))!.phase === 'cleanup',
      30_000,
      'the cleanup phase',
    );
    expect(await s0.reader.all('SELECT name FROM bus_subscriptions WHERE name = ?', [subName])).toHaveLength(1);
    expect(await bus.listSubscriptions()).toEqual([subName]);
    expect((await bus.listSubscriptionInfos()).items.map((i) => i.name)).toEqual([subName]);
    await node.runtime.splitter.wait(job.id);
    const s1 = node.runtime.storage.shard('s1');
    expect(await s1.reader.all('SELECT name FROM bus_subscriptions WHERE name = ?', [subName])).toHaveLength(1);
    expect(await s0.reader.all('SELECT name FROM bus_subscriptions WHERE name = ?', [subName])).toHaveLength(0);
    // Its lag on the target leaves the imports out (the source delivers them): one event there, imported.
    expect((await bus.getSubscription(subName)).lag).toEqual({ s0: 1, s1: 0 });
    // The claim whose home moved is aimed at the target now.
    const moved = await s1.reader.all<{ seq: number; target: string }>(
      'SELECT seq, target FROM bus_dedupe WHERE ref = ?',
      [`${TOPIC}/${movingHome}`],
    );
    expect(moved.map((r) => [Number(r.seq), r.target])).toEqual([[CLAIM, 's1']]);
    expect(await s0.reader.all('SELECT ref FROM bus_dedupe WHERE ref = ?', [`${TOPIC}/${movingHome}`])).toEqual([]);

    for (const id of [movingHome, stayingHome, storedBefore]) {
      const first = await publishRetried(bus, [{ id, topic: TOPIC, key, type: 't', data: 1 }]);
      const again = await publishRetried(bus, [{ id, topic: TOPIC, key, type: 't', data: 2 }]);
      expect([first.duplicates, again.duplicates], id).toEqual([id === storedBefore ? 1 : 0, 1]);
    }
    const rows = await s1.reader.all<{ meta: string }>('SELECT meta FROM events WHERE stream = ? ORDER BY seq', [
      stream,
    ]);
    expect(rows.map((r) => (JSON.parse(r.meta) as { id: string }).id)).toEqual([storedBefore, movingHome, stayingHome]);
  }, 60_000);
});

describe.each(DIALECTS)('an AMQP exporter across a split (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  let conn: ChannelModel;
  const exchange = `mr.test.split.${randomBytes(4).toString('hex')}.${dialect}`;
  beforeAll(async () => {
    // RabbitMQ is required: an unreachable broker fails these tests.
    conn = await amqp.connect(AMQP_URL);
    env = await createTestEnv(dialect, { shards: 2 });
    node = await startNode(
      buildConfig({
        ...withSpare(env),
        bus: {
          topics: [TOPIC],
          rabbitmq: { url: AMQP_URL },
          exporters: [{ name: 'sink', topic: TOPIC, exchange, batch: 20 }],
        },
      } as never),
      { faces: [busFace] },
    );
  });
  afterAll(async () => {
    await node?.close();
    await conn?.close();
    await env?.cleanup();
  });

  it('ships every event once (by message id), per key in publish order, imports left out', async () => {
    const ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true });
    const q = await ch.assertQueue('', { exclusive: true });
    await ch.bindQueue(q.queue, exchange, '#');
    const got: Array<{ msg: string; id: string; key: string }> = [];
    await ch.consume(
      q.queue,
      (m) =>
        m &&
        got.push({
          msg: String(m.properties.messageId),
          id: String(m.properties.headers!['x-event-id']),
          key: String(m.properties.headers!['x-key']),
        }),
      { noAck: true },
    );
    const bus = busOf(node);
    const keys = Array.from({ length: 6 }, (_, i) => `key${i}`);
    const published = new Map<string, string[]>(keys.map((k) => [k, []]));
    let n = 0;
    const round = async (): Promise<void> => {
      for (const key of keys) {
        const id = `${key}#${n++}`;
        await publishRetried(bus, [{ id, topic: TOPIC, key, type: 't', data: n }]);
        published.get(key)!.push(id);
      }
    };
    for (let i = 0; i < 10; i++) await round();
    const job = await node.runtime.splitter.start('s0', AT, 's1');
    while ((await node.runtime.splitter.job('s0', job.id))!.phase !== 'done') await round();
    for (let i = 0; i < 10; i++) await round();
    const total = [...published.values()].flat().length;
    const firsts = (): Array<{ id: string; key: string }> => {
      const seen = new Set<string>();
      return got.filter((g) => !seen.has(g.msg) && seen.add(g.msg));
    };
    await waitFor(() => firsts().length >= total, 60_000, 'every event exported');
    checkOnceInOrder(firsts(), published);
    await ch.close();
  }, 120_000);
});
