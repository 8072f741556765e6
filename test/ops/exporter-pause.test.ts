/**
 * Pausing a RabbitMQ exporter stops its shipping, the pause holds across a
 * restart of the node, and resuming ships what waited, in order, once.
 * Needs RabbitMQ (MILLRACE_TEST_AMQP_URL, default 127.0.0.1:5672): an
 * unreachable broker fails the test.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import amqp, { type Channel, type ChannelModel } from 'amqplib';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { DIALECTS, createTestEnv, waitFor, type TestEnv } from '../support/env.js';
import { jsonRequest } from '../support/http.js';

const AMQP_URL = process.env.MILLRACE_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
/** Long enough for an unpaused exporter to ship (it ships within its poll), so silence means it waits. */
const SETTLE_MS = 2500;

describe.each(DIALECTS)('exporter pause and resume (%s)', (dialect) => {
  let env: TestEnv;
  let conn: ChannelModel;
  let ch: Channel;
  let node: Node | undefined;
  const exchange = `mr.test.pause.${randomBytes(4).toString('hex')}.${dialect}`;
  const got: number[] = [];
  let input: ConfigInput;

  beforeAll(async () => {
    conn = await amqp.connect(AMQP_URL);
    ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true });
    const q = await ch.assertQueue('', { exclusive: true });
    await ch.bindQueue(q.queue, exchange, '#');
    await ch.consume(q.queue, (m) => m && got.push((JSON.parse(m.content.toString()) as { n: number }).n), {
      noAck: true,
    });
    env = await createTestEnv(dialect);
    input = {
      ...env.input,
      http: { host: '127.0.0.1', port: 0, drain_timeout_ms: 300 },
      bus: {
        topics: ['orders'],
        rabbitmq: { url: AMQP_URL },
        exporters: [{ name: 'sink', topic: 'orders', exchange, batch: 10 }],
      },
    } as ConfigInput;
    node = await startNode(buildConfig(input));
  }, 60_000);
  afterAll(async () => {
    await node?.close();
    await ch?.deleteExchange(exchange).catch((err: unknown) => console.warn('could not delete the test exchange', err));
    await conn?.close();
    await env?.cleanup();
  });

  const publish = async (from: number, count: number) => {
    const events = Array.from({ length: count }, (_, i) => ({ key: 'k', type: 'created', data: { n: from + i } }));
    expect((await jsonRequest(node!.url, 'POST', '/v1/bus/topics/orders/events', { events })).status).toBe(200);
  };

  it('ships, stops while paused (across a restart), and ships what waited once resumed', async () => {
    await publish(0, 5);
    await waitFor(() => got.length >= 5, 20_000, 'the first events exported');
    expect(got).toEqual([0, 1, 2, 3, 4]);

    const paused = await jsonRequest(node!.url, 'POST', '/v1/bus/exporters/sink/pause', {
      reason: 'broker maintenance',
    });
    expect(paused.status).toBe(200);
    expect(paused.body).toMatchObject({ kind: 'exporter', name: 'sink', reason: 'broker maintenance' });
    await publish(5, 5);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    expect(got).toEqual([0, 1, 2, 3, 4]);

    // The pause is stored: a restarted node still holds the events back.
    await node!.close();
    node = await startNode(buildConfig(input));
    expect((await jsonRequest(node.url, 'GET', '/v1/pauses')).body!.items).toContainEqual(
      expect.objectContaining({ kind: 'exporter', name: 'sink' }),
    );
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    expect(got).toEqual([0, 1, 2, 3, 4]);

    const resumed = await jsonRequest(node.url, 'POST', '/v1/bus/exporters/sink/resume', {});
    expect(resumed.body).toEqual({ kind: 'exporter', name: 'sink', resumed: true });
    await waitFor(() => got.length >= 10, 20_000, 'the waiting events exported after the resume');
    await publish(10, 2);
    await waitFor(() => got.length >= 12, 20_000, 'new events exported after the resume');
    expect(got).toEqual(Array.from({ length: 12 }, (_, i) => i));
  }, 90_000);

  it('refuses to pause an unknown exporter with exporter_not_found, storing nothing', async () => {
    const r = await jsonRequest(node!.url, 'POST', '/v1/bus/exporters/nope/pause', {});
    expect([r.status, r.body?.error?.code]).toEqual([404, 'exporter_not_found']);
    expect((await jsonRequest(node!.url, 'GET', '/v1/pauses')).body!.items).toEqual([]);
  });
});
