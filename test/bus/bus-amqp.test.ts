import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import amqp, { type ChannelModel } from 'amqplib';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { Runtime } from '../../src/runtime.js';
import { buildConfig } from '../../src/core/config.js';
import { Publisher } from '../../src/bus/publisher.js';
import { routingKeyMatches } from '../../src/amqp/ingress.js';
import '../../src/bus/bus.js';
import { sleep } from './support.js';
import { runCli, spawnReady, writeConfigFile } from '../support/proc.js';

const AMQP_URL = process.env.MILLRACE_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

async function startChild(configPath: string): Promise<ChildProcess> {
  return (await spawnReady('test/bus/bus-child.ts', [configPath], /ready/)).child;
}

function kill9(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

it('matches AMQP topic routing keys', () => {
  expect(routingKeyMatches('orders.*', 'orders.created')).toBe(true);
  expect(routingKeyMatches('orders.*', 'orders.a.b')).toBe(false);
  expect(routingKeyMatches('orders.#', 'orders')).toBe(true);
  expect(routingKeyMatches('#.paid', 'a.b.paid')).toBe(true);
  expect(routingKeyMatches('a.b', 'a.c')).toBe(false);
});

describe.each(DIALECTS)('bus and RabbitMQ (%s)', (dialect) => {
  let env: TestEnv;
  let conn: ChannelModel;
  const tag = randomBytes(4).toString('hex');
  beforeAll(async () => {
    // RabbitMQ is required: an unreachable broker fails these tests.
    conn = await amqp.connect(AMQP_URL);
  });
  afterAll(async () => {
    await conn?.close();
  });

  it('ingress: kill -9 mid-stream stores every message exactly once', async () => {
    env = await createTestEnv(dialect);
    const exchange = `mr.test.in.${tag}.${dialect}`;
    const queue = `mr.test.q.${tag}.${dialect}`;
    const input = {
      ...env.input,
      http: { port: 0, drain_timeout_ms: 300 },
      bus: {
        topics: ['orders'],
        rabbitmq: {
          url: AMQP_URL,
          ingress: {
            queue,
            prefetch: 200,
            exchanges: [{ name: exchange, type: 'topic' }],
            bindings: [{ exchange, routing_key: 'orders.#', topic: 'orders' }],
          },
        },
      },
    };
    const path = writeConfigFile(env.dataDir, input, 'child.json');
    let child = await startChild(path);
    const ch = await conn.createConfirmChannel();
    const total = 1500;
    try {
      for (let i = 0; i < total; i++) {
        ch.publish(exchange, `orders.created.${i % 5}`, Buffer.from(JSON.stringify({ i })), {
          messageId: `m-${i}`,
          persistent: true,
          type: 'created',
        });
        if (i % 100 === 99) {
          await ch.waitForConfirms();
          await sleep(15);
        }
        if (i === 600) {
          await kill9(child);
          child = await startChild(path);
        }
      }
      await ch.waitForConfirms();
      const rt = await Runtime.open(buildConfig(input), { background: false, migrate: false });
      try {
        const rows = await waitFor(
          async () => {
            const r = await rt.storage.shards[0]!.reader.all<{ meta: string }>(
              "SELECT meta FROM events WHERE stream LIKE 't/orders/%'",
            );
            return r.length >= total ? r : null;
          },
          30_000,
          'every message stored',
        );
        await sleep(300);
        const again = await rt.storage.shards[0]!.reader.all<{ meta: string }>(
          "SELECT meta FROM events WHERE stream LIKE 't/orders/%'",
        );
        const ids = again.map((r) => (JSON.parse(r.meta) as { id: string }).id);
        expect(rows.length).toBe(total);
        expect(ids.length).toBe(total);
        expect(new Set(ids).size).toBe(total);
      } finally {
        await rt.close();
      }
    } finally {
      child.kill('SIGKILL');
      // Teardown: the broker objects are named per test; one left behind does not change another test.
      await ch.close().catch(() => {});
      const c2 = await conn.createChannel();
      // Likewise.
      await c2.deleteQueue(queue).catch(() => {});
      await c2.deleteExchange(exchange).catch(() => {});
      await c2.close().catch(() => {});
      await env.cleanup();
    }
  });

  it('exporter: kill -9 mid-stream; the exchange gets every event in order, repeats only with the same message id', async () => {
    env = await createTestEnv(dialect);
    const exchange = `mr.test.out.${tag}.${dialect}`;
    const input = {
      ...env.input,
      http: { port: 0, drain_timeout_ms: 300 },
      bus: {
        topics: ['orders'],
        rabbitmq: { url: AMQP_URL },
        exporters: [{ name: 'sink', topic: 'orders', exchange, batch: 50 }],
      },
    };
    const total = 1200;
    const rt = await Runtime.open(buildConfig(input));
    const pub = new Publisher(rt.log, rt.clock, 600_000);
    for (let i = 0; i < total; i += 200) {
      await pub.publish(
        Array.from({ length: 200 }, (_, j) => ({
          topic: 'orders',
          key: `k${(i + j) % 3}`,
          type: 'created',
          data: { i: i + j },
        })),
      );
      await rt.log.append('other/stream', [{ type: 'noise', data: i }]);
    }
    await rt.close();
    const ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true });
    const q = await ch.assertQueue('', { exclusive: true });
    await ch.bindQueue(q.queue, exchange, '#');
    const got: Array<{ id: string; body: string }> = [];
    await ch.consume(
      q.queue,
      (m) => m && got.push({ id: String(m.properties.messageId), body: m.content.toString() }),
      { noAck: true },
    );
    const path = writeConfigFile(env.dataDir, input, 'child.json');
    let child = await startChild(path);
    try {
      await waitFor(() => got.length >= 300, 20_000, 'some exported');
      await kill9(child);
      child = await startChild(path);
      await waitFor(() => new Set(got.map((g) => g.id)).size >= total, 30_000, 'every event exported');
      const firstSeen = new Map<string, string>();
      const order: number[] = [];
      for (const g of got) {
        const prev = firstSeen.get(g.id);
        if (prev !== undefined) {
          expect(g.body).toBe(prev);
          continue;
        }
        firstSeen.set(g.id, g.body);
        order.push(Number(g.id.split(':')[1]));
      }
      expect(order).toEqual([...order].sort((a, b) => a - b));
      expect(order.length).toBe(total);
      expect([...new Set(got.map((g) => (JSON.parse(g.body) as { i: number }).i))].sort((a, b) => a - b)).toEqual(
        Array.from({ length: total }, (_, i) => i),
      );
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      });
      const cli = await runCli(['-c', path, 'export', 'status']);
      expect(cli.code).toBe(0);
      expect(cli.stdout).toMatch(/sink\s+s0\s+position \d+ head \d+ lag 0/);
    } finally {
      child.kill('SIGKILL');
      // Teardown: the broker objects are named per test; one left behind does not change another test.
      await ch.deleteExchange(exchange).catch(() => {});
      await ch.close().catch(() => {});
      await env.cleanup();
    }
  });
});
