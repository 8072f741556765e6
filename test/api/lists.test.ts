import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { jsonRequest } from '../support/http.js';

const listsFn: ProcessorFn = (req) => {
  if (req.kind === 'call' && req.args === 'boom') throw new Error('bad input');
  return { response: req.kind, events: [{ kind: req.kind }] };
};

describe.each(DIALECTS)('list APIs for the console (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 2 });
    const input = {
      ...env.input,
      http: { port: 0, drain_timeout_ms: 300 },
      grpc: { enabled: false },
      machines: { namespaces: { l: { processor: { in_process: 'lists-fn' }, retry: { base_ms: 5, max_ms: 20 } } } },
      pipe: { kinds: { k: {}, j: {} } },
      bus: { topics: ['orders', 'other', 'dlq'] },
    } as ConfigInput;
    node = await startNode(buildConfig(input), { processors: new Map([['lists-fn', listsFn]]) });
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });
  const call = (method: string, path: string, body?: unknown) => jsonRequest(node.url, method, path, body);
  /** Every item of a paged list, following next_cursor with the given page size. */
  const all = async (path: string, limit: number): Promise<any[]> => {
    const out: any[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 100; i++) {
      const sep = path.includes('?') ? '&' : '?';
      const r = await call(
        'GET',
        `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      );
      expect(r.status).toBe(200);
      expect(r.body!.items.length).toBeLessThanOrEqual(limit);
      out.push(...r.body!.items);
      cursor = r.body!.next_cursor;
      if (cursor === null) return out;
    }
    throw new Error('paging did not end');
  };

  it('lists machines failed first with their reason, by status, paged', async () => {
    for (const id of ['m1', 'm2', 'm3', 'm4', 'm5']) {
      const r = await call('POST', `/v1/namespaces/l/machines/${id}/start`, {});
      expect([r.status, r.body]).toEqual([200, { response: 'signal' }]);
    }
    for (const id of ['m4', 'm2'])
      expect((await call('POST', `/v1/namespaces/l/machines/${id}/call`, { args: 'boom' })).body!.error.code).toBe(
        'machine_failed',
      );
    const list = await all('/v1/namespaces/l/machines', 2);
    expect(list.map((m) => [m.id, m.status])).toEqual([
      ['m2', 'failed'],
      ['m4', 'failed'],
      ['m1', 'working'],
      ['m3', 'working'],
      ['m5', 'working'],
    ]);
    expect(list[0].reason).toContain('bad input');
    expect(list[2].reason).toBeUndefined();
    expect(list[2].events).toBe(1);
    expect(list[0].events).toBe(1);
    expect(typeof list[0].updated_at).toBe('string');
    expect((await all('/v1/namespaces/l/machines?status=failed', 1)).map((m) => m.id)).toEqual(['m2', 'm4']);
    expect((await all('/v1/namespaces/l/machines?status=working', 500)).map((m) => m.id)).toEqual(['m1', 'm3', 'm5']);
    // A removed machine leaves the list.
    expect((await call('DELETE', '/v1/namespaces/l/machines/m3')).status).toBe(204);
    expect((await all('/v1/namespaces/l/machines?status=working', 500)).map((m) => m.id)).toEqual(['m1', 'm5']);
  });

  it('refuses bad list queries with typed 4xx', async () => {
    const bad: Array<[string, number, string]> = [
      ['/v1/namespaces/nope/machines', 404, 'namespace_not_found'],
      ['/v1/namespaces/l/machines?status=none', 400, 'bad_request'],
      ['/v1/namespaces/l/machines?limit=0', 400, 'bad_request'],
      ['/v1/namespaces/l/machines?limit=501', 400, 'bad_request'],
      ['/v1/namespaces/l/machines?cursor=garbage', 400, 'bad_request'],
      ['/v1/pipe/sessions?state=gone', 400, 'bad_request'],
      ['/v1/pipe/sessions?cursor=%7B', 400, 'bad_request'],
      ['/v1/bus/subscriptions?limit=-1', 400, 'bad_request'],
    ];
    for (const [path, status, code] of bad) {
      const r = await call('GET', path);
      expect([path, r.status, r.body!.error.code]).toEqual([path, status, code]);
    }
  });

  it('lists pipe sessions by kind and state, paged, with their record counts', async () => {
    const ids: string[] = [];
    for (const kind of ['k', 'k', 'k', 'j']) {
      const r = await call('POST', '/v1/pipe/sessions', { kind });
      expect(r.status).toBe(201);
      ids.push(r.body!.id);
    }
    for (const rec of ['a', 'b'])
      expect(
        (await call('POST', `/v1/pipe/sessions/${ids[0]}/append`, { record: Buffer.from(rec).toString('base64') }))
          .status,
      ).toBe(200);
    await call('POST', `/v1/pipe/sessions/${ids[1]}/store`, { timeout_s: 3600 });
    const k = await all('/v1/pipe/sessions?kind=k', 1);
    expect(k.map((s) => s.id)).toEqual(ids.slice(0, 3).sort());
    const first = k.find((s) => s.id === ids[0]);
    expect(first).toMatchObject({ kind: 'k', state: 'open', records: 2 });
    const stored = await all('/v1/pipe/sessions?kind=k&state=stored', 10);
    expect(stored.map((s) => s.id)).toEqual([ids[1]]);
    expect(typeof stored[0].due_at).toBe('string');
    expect((await all('/v1/pipe/sessions', 2)).length).toBe(4);
    expect(await all('/v1/pipe/sessions?kind=absent', 2)).toEqual([]);
  });

  it('lists subscriptions with lag over their own topics only, connected and dead-letter topic', async () => {
    expect(
      (
        await call('PUT', '/v1/bus/subscriptions/sub-a', {
          topics: ['orders'],
          start: 'earliest',
          dead_letter_topic: 'dlq',
        })
      ).status,
    ).toBe(201);
    expect((await call('PUT', '/v1/bus/subscriptions/sub-b', { topics: ['other'], start: 'earliest' })).status).toBe(
      201,
    );
    const ev = (n: number) => Array.from({ length: n }, (_, i) => ({ key: `k${i}`, type: 'x' }));
    expect((await call('POST', '/v1/bus/topics/orders/events', { events: ev(3) })).status).toBe(200);
    expect((await call('POST', '/v1/bus/topics/other/events', { events: ev(5) })).status).toBe(200);
    const list = await all('/v1/bus/subscriptions', 1);
    expect(list.map((s) => s.name)).toEqual(['sub-a', 'sub-b']);
    // The shards also hold machine and pipe events; lag counts only the subscription's own topics.
    expect(list[0]).toMatchObject({ lag_total: 3, connected: false, dead_letter_topic: 'dlq' });
    expect(list[1]).toMatchObject({ lag_total: 5, connected: false, dead_letter_topic: null });
    expect(Object.keys(list[0].lag).sort()).toEqual(['s0', 's1']);
    expect((await call('GET', '/v1/bus/subscriptions/sub-b')).body!.lag_total).toBe(5);
  });
});
