import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import amqp from 'amqplib';
import { afterEach, describe, expect, it } from 'vitest';
import { withHeartbeat } from '../../src/amqp/edge.js';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { busFace } from '../../src/bus/face.js';
import { createTestEnv, DIALECTS, waitFor } from '../support/env.js';
import { spawnReady, writeConfigFile } from '../support/proc.js';

const AMQP_URL = process.env.MILLRACE_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const ROLE_LEASE_MS = 2000;

it('adds a heartbeat of half the role lease to an AMQP URL that sets none, and keeps one that does', () => {
  expect(withHeartbeat('amqp://guest:guest@127.0.0.1:5672', 5000)).toBe(
    'amqp://guest:guest@127.0.0.1:5672?heartbeat=2',
  );
  expect(withHeartbeat('amqp://h/vhost?heartbeat=30', 5000)).toBe('amqp://h/vhost?heartbeat=30');
  expect(withHeartbeat('amqp://h', 500)).toBe('amqp://h?heartbeat=1');
});

describe.runIf(DIALECTS.includes('postgres'))('RabbitMQ ingress on a hung node (postgres)', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('messages a frozen (SIGSTOP) node took but did not ack are stored by another node within about the role lease, each once', async () => {
    const env = await createTestEnv('postgres', { extra: { cluster: { role_lease_ms: ROLE_LEASE_MS } } });
    cleanups.push(() => env.cleanup());
    const tag = randomBytes(4).toString('hex');
    const exchange = `mr.test.hung.${tag}`;
    const queue = `mr.test.hungq.${tag}`;
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
    const conn = await amqp.connect(AMQP_URL);
    cleanups.push(async () => {
      const c2 = await conn.createChannel();
      // Teardown: the broker objects are named per test; one left behind does not change another test.
      await c2.deleteQueue(queue).catch(() => {});
      await c2.deleteExchange(exchange).catch(() => {});
      await c2.close().catch(() => {});
      await conn.close().catch(() => {});
    });
    const { child } = (await spawnReady(
      'test/bus/bus-child.ts',
      [writeConfigFile(env.dataDir, { ...input, node_id: 'frozen' }, 'child.json')],
      /ready/,
    )) as { child: ChildProcess };
    cleanups.push(() => {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    });
    const b: Node = await startNode(buildConfig({ ...input, node_id: 'awake' } as ConfigInput), { faces: [busFace] });
    cleanups.push(() => b.close());
    const stored = async (): Promise<string[]> =>
      (
        await b.runtime.storage
          .shard('s0')
          .reader.all<{ meta: string }>("SELECT meta FROM events WHERE stream LIKE 't/orders/%'")
      ).map((r) => (JSON.parse(r.meta) as { id: string }).id);
    const ch = await conn.createConfirmChannel();
    const send = async (from: number, n: number): Promise<void> => {
      for (let i = from; i < from + n; i++)
        ch.publish(exchange, `orders.created.${i % 5}`, Buffer.from(JSON.stringify({ i })), {
          messageId: `m-${i}`,
          persistent: true,
          type: 'created',
        });
      await ch.waitForConfirms();
    };
    await send(0, 20);
    await waitFor(async () => (await stored()).length === 20, 20_000, 'both nodes to store the first messages');

    // Frozen, the node still holds its connection: the broker keeps pushing it its share, which it never acks.
    child.kill('SIGSTOP');
    await send(20, 200);
    // Failure detection only: the broker gives up on the frozen node after two missed heartbeats (about the role lease).
    await waitFor(
      async () => (await stored()).length === 220,
      ROLE_LEASE_MS * 10,
      'every message to be stored while the node is frozen',
    );
    const ids = await stored();
    expect(new Set(ids).size).toBe(220);
    expect(child.exitCode).toBe(null);
    await ch.close();
  });
});
