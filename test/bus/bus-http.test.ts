import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { startBusNode } from './support.js';
import type { Node } from '../../src/serve.js';
import { jsonRequest } from '../support/http.js';

describe.each(DIALECTS)('bus over HTTP (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  beforeAll(async () => {
    env = await createTestEnv(dialect);
    ({ node } = await startBusNode(env));
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });
  const call = (method: string, path: string, body?: unknown) => jsonRequest(node.url, method, path, body);

  it('publishes, refuses bad input with typed 4xx and writes nothing', async () => {
    const ok = await call('POST', '/v1/bus/topics/orders/events', {
      events: [{ id: 'h1', key: 'a', type: 'created', data: { n: 1 } }, { type: 'created' }],
    });
    expect(ok.status).toBe(200);
    expect(ok.body!.positions).toHaveLength(2);
    const head = await node.runtime.log.headPos('s0');
    const bad: Array<[string, unknown, number, string]> = [
      ['/v1/bus/topics/orders/events', { events: [] }, 400, 'bad_request'],
      ['/v1/bus/topics/orders/events', { events: [{ type: 'x', extra: 1 }] }, 400, 'bad_request'],
      ['/v1/bus/topics/orders/events', { events: [{ type: 'x' }, { type: '' }] }, 400, 'bad_request'],
      ['/v1/bus/topics/orders/events', { events: [{ type: 'x', headers: { a: 1 } }] }, 400, 'bad_request'],
      ['/v1/bus/topics/nope/events', { events: [{ type: 'x' }] }, 404, 'topic_not_found'],
    ];
    for (const [path, body, status, code] of bad) {
      const r = await call('POST', path, body);
      expect([path, r.status, r.body!.error.code]).toEqual([path, status, code]);
    }
    const dup = await call('POST', '/v1/bus/topics/orders/events', {
      events: [{ id: 'h1', key: 'a', type: 'created' }],
    });
    expect(dup.body!.positions[0]).toEqual({ ...ok.body!.positions[0], duplicate: true });
    expect(await node.runtime.log.headPos('s0')).toBe(head);
  });

  it('creates, shows, streams (SSE with acks) and deletes a subscription', async () => {
    expect(
      (await call('PUT', '/v1/bus/subscriptions/web', { topics: ['orders'], start: 'earliest', max_in_flight: 10 }))
        .status,
    ).toBe(201);
    expect(
      (await call('PUT', '/v1/bus/subscriptions/web', { topics: ['orders'], start: 'earliest', max_in_flight: 5 }))
        .status,
    ).toBe(200);
    expect((await call('PUT', '/v1/bus/subscriptions/bad', { topics: ['nope'] })).body!.error.code).toBe(
      'topic_not_found',
    );
    expect((await call('PUT', '/v1/bus/subscriptions/bad', { topics: ['orders'], max_in_flight: 0 })).status).toBe(400);
    expect((await call('GET', '/v1/bus/subscriptions/none')).body!.error.code).toBe('subscription_not_found');
    const ctl = new AbortController();
    const res = await fetch(`${node.url}/v1/bus/subscriptions/web/stream`, { signal: ctl.signal });
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
    await waitFor(() => (text.match(/event: delivery/g) ?? []).length >= 2, 5000, 'SSE deliveries');
    const ids = [...text.matchAll(/^id: (.+)$/gm)].map((m) => m[1]!);
    const busy = await fetch(`${node.url}/v1/bus/subscriptions/web/stream`);
    expect(busy.status).toBe(409);
    expect(((await busy.json()) as { error: { code: string } }).error.code).toBe('subscription_busy');
    expect((await call('POST', '/v1/bus/subscriptions/web/ack', { ids })).body).toEqual({ acked: 2, nacked: 0 });
    ctl.abort();
    const info = await waitFor(
      async () => {
        const r = await call('GET', '/v1/bus/subscriptions/web');
        return r.body!.connected === false ? r : null;
      },
      5000,
      'disconnect',
    );
    expect(info.body!.config.max_in_flight).toBe(5);
    expect(info.body!.positions.s0).toBeGreaterThanOrEqual(2);
    expect((await call('POST', '/v1/bus/subscriptions/web/ack', { ids })).body!.error.code).toBe(
      'subscription_not_connected',
    );
    expect((await call('DELETE', '/v1/bus/subscriptions/web')).status).toBe(204);
    expect((await call('GET', '/v1/bus/subscriptions/web')).status).toBe(404);
  });

  it('an SSE subscriber that closes its stream may reconnect at once (the lease is released when the response closes)', async () => {
    expect((await call('PUT', '/v1/bus/subscriptions/re', { topics: ['orders'], start: 'latest' })).status).toBe(201);
    for (let round = 0; round < 5; round++) {
      const ctl = new AbortController();
      const res = await fetch(`${node.url}/v1/bus/subscriptions/re/stream`, { signal: ctl.signal });
      expect([round, res.status]).toEqual([round, 200]);
      const reader = res.body!.getReader();
      let text = '';
      while (!text.includes('event: opened')) text += new TextDecoder().decode((await reader.read()).value);
      ctl.abort();
    }
    const last = await fetch(`${node.url}/v1/bus/subscriptions/re/stream`);
    expect(last.status).toBe(200);
    await last.body!.cancel();
  });
});
