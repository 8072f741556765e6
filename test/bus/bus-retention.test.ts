import { afterEach, describe, expect, it } from 'vitest';
import type { Node } from '../../src/serve.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { busClient, startBusNode, Subscriber } from './support.js';

const envs: TestEnv[] = [];
const nodes: Node[] = [];
afterEach(async () => {
  // Teardown: a node that fails to close has failed its test already.
  for (const n of nodes.splice(0)) await n.close().catch(() => {});
  for (const e of envs.splice(0)) await e.cleanup();
});

describe.each(DIALECTS)('bus retention over HTTP and gRPC (%s)', (dialect) => {
  it('a runtime topic takes a retention rule (a bad one is refused); SSE subscribers get position_expired or a gap notice', async () => {
    const env = await createTestEnv(dialect, { extra: { retention: { enabled: false } } as never });
    envs.push(env);
    const { node, bus } = await startBusNode(env);
    nodes.push(node);
    const call = async (method: string, path: string, body?: unknown) => {
      const r = await fetch(`${node.url}${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: r.status, body: (r.status === 204 ? null : await r.json()) as Record<string, any> };
    };
    const bad = await call('PUT', '/v1/bus/topics/short', { retention: { per: 'key' } });
    expect([bad.status, bad.body.error.code]).toEqual([400, 'bad_request']);
    expect((await call('GET', '/v1/bus/topics/short')).status).toBe(404);
    expect([200, 201]).toContain(
      (await call('PUT', '/v1/bus/topics/short', { retention: { max_events: 2, per: 'key' } })).status,
    );
    expect((await call('PUT', '/v1/bus/subscriptions/sse-stop', { topics: ['short'] })).status).toBe(201);
    expect(
      (await call('PUT', '/v1/bus/subscriptions/sse-resume', { topics: ['short'], on_expired: 'resume' })).status,
    ).toBe(201);
    expect((await call('PUT', '/v1/bus/subscriptions/bad', { topics: ['short'], on_expired: 'skip' })).status).toBe(
      400,
    );
    expect(
      (await call('PUT', '/v1/bus/subscriptions/grpc-resume', { topics: ['short'], on_expired: 'resume' })).status,
    ).toBe(201);
    for (let i = 0; i < 5; i++) await bus.publish([{ topic: 'short', key: 'k', type: 'e', data: { i } }]);
    await bus.publish([{ topic: 'orders', key: 'z', type: 'e', data: {} }]);
    const shard = node.runtime.storage.shards[0]!;
    while ((await node.runtime.pruner.pass(shard)).removed > 0);

    const stop = await fetch(`${node.url}/v1/bus/subscriptions/sse-stop/stream`);
    expect(stop.status).toBe(410);
    const err = (await stop.json()) as { error: { code: string; details: { lost: number } } };
    expect(err.error.code).toBe('position_expired');
    expect(err.error.details.lost).toBe(3);

    const ctl = new AbortController();
    const res = await fetch(`${node.url}/v1/bus/subscriptions/sse-resume/stream`, { signal: ctl.signal });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    let text = '';
    void (async () => {
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
        if (done) return;
        text += new TextDecoder().decode(value);
      }
    })();
    await waitFor(
      () => (text.match(/event: delivery/g) ?? []).length >= 2 && text.includes('event: gap'),
      10_000,
      'SSE gap and deliveries',
    );
    const gap = JSON.parse(/event: gap\ndata: (.+)\n/.exec(text)![1]!) as {
      shard: string;
      lost: number;
      horizon: number;
    };
    expect(gap).toMatchObject({ shard: 's0', lost: 3 });
    ctl.abort();
  }, 60_000);

  it('a gRPC subscriber with on_expired "resume" gets a Gap message with the count lost', async () => {
    const env = await createTestEnv(dialect, { extra: { retention: { enabled: false } } as never });
    envs.push(env);
    const { node, bus, addr } = await startBusNode(env);
    nodes.push(node);
    const call = async (method: string, path: string, body?: unknown) => {
      const r = await fetch(`${node.url}${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: r.status, body: (r.status === 204 ? null : await r.json()) as Record<string, any> };
    };
    const bad = await call('PUT', '/v1/bus/topics/short', { retention: { per: 'key' } });
    expect([bad.status, bad.body.error.code]).toEqual([400, 'bad_request']);
    expect((await call('GET', '/v1/bus/topics/short')).status).toBe(404);
    expect([200, 201]).toContain(
      (await call('PUT', '/v1/bus/topics/short', { retention: { max_events: 2, per: 'key' } })).status,
    );
    expect((await call('PUT', '/v1/bus/subscriptions/sse-stop', { topics: ['short'] })).status).toBe(201);
    expect(
      (await call('PUT', '/v1/bus/subscriptions/sse-resume', { topics: ['short'], on_expired: 'resume' })).status,
    ).toBe(201);
    expect((await call('PUT', '/v1/bus/subscriptions/bad', { topics: ['short'], on_expired: 'skip' })).status).toBe(
      400,
    );
    expect(
      (await call('PUT', '/v1/bus/subscriptions/grpc-resume', { topics: ['short'], on_expired: 'resume' })).status,
    ).toBe(201);
    for (let i = 0; i < 5; i++) await bus.publish([{ topic: 'short', key: 'k', type: 'e', data: { i } }]);
    await bus.publish([{ topic: 'orders', key: 'z', type: 'e', data: {} }]);
    const shard = node.runtime.storage.shards[0]!;
    while ((await node.runtime.pruner.pass(shard)).removed > 0);

    const client = busClient(addr);
    try {
      const gaps: Array<{ shard: string; lost: string | number }> = [];
      const sub = new Subscriber(client, 'grpc-resume');
      sub.call.on('data', (m: { gap?: { shard: string; lost: string | number } }) => {
        if (m.gap) gaps.push(m.gap);
      });
      await sub.opened;
      await waitFor(() => gaps.length === 1 && sub.deliveries.length >= 2, 10_000, 'gRPC gap');
      expect(gaps[0]!.shard).toBe('s0');
      expect(Number(gaps[0]!.lost)).toBe(3);
      await sub.end();
    } finally {
      client.close();
    }
  }, 60_000);
});
