import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProcessorRequest } from '../../src/machines/processor.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, type TestEnv } from '../support/env.js';
import { jsonRequest } from '../support/http.js';

/** The ops routes over HTTP on one node: answers, statuses and the shapes OpenAPI describes. */
describe('schedules, bulk jobs and pauses over HTTP (sqlite)', () => {
  let env: TestEnv;
  let node: Node;
  const req = (method: string, path: string, body?: unknown) => jsonRequest(node.url, method, path, body);

  beforeAll(async () => {
    env = await createTestEnv('sqlite', {
      extra: {
        machines: { namespaces: { ns: { processor: { in_process: 'ops-http-fn' } } } },
        bus: { topics: ['beats'] },
      } as never,
    });
    const processors = new Map([
      [
        'ops-http-fn',
        (r: ProcessorRequest) => {
          if (r.kind === 'call' && 'args' in r && r.args === 'fail') throw new Error('E9 broken');
          return { response: r.kind, events: [] };
        },
      ],
    ]);
    node = await startNode(env.config, { processors });
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  it('defines, reads, pauses, resumes, backfills and deletes a schedule', async () => {
    const def = {
      spec: { cron: '0 0 9 * * *', timezone: 'America/New_York' },
      action: { publish: { topic: 'beats', type: 'beat', data: { at: '{{fire_time}}' } } },
    };
    const put = await req('PUT', '/v1/schedules/nine', def);
    expect(put.status).toBe(201);
    expect(put.body).toMatchObject({
      name: 'nine',
      source: 'runtime',
      paused: false,
      running: 0,
      missed: 0,
      definition: { overlap: 'skip', catchup_window_ms: 60000 },
    });
    expect((await req('PUT', '/v1/schedules/nine', def)).status).toBe(200);
    const next = await req('GET', '/v1/schedules/nine/next?count=2');
    expect(next.status).toBe(200);
    expect(next.body!.items).toHaveLength(2);
    expect(next.body!.items[0].fire_at).toMatch(/T1[34]:00:00\.000Z$/);
    expect((await req('POST', '/v1/schedules/nine/pause')).body).toMatchObject({ paused: true, next_fire_at: null });
    expect((await req('POST', '/v1/schedules/nine/resume')).body).toMatchObject({ paused: false });
    const bf = await req('POST', '/v1/schedules/nine/backfill', {
      from: '2026-03-07T00:00:00Z',
      to: '2026-03-09T00:00:00Z',
    });
    expect(bf).toEqual({ status: 202, body: { fire_times: 2, queued: 2, already: 0 } });
    const list = await req('GET', '/v1/schedules');
    expect(list.body!.items.map((s: { name: string }) => s.name)).toEqual(['nine']);
    // Bad input: typed errors.
    expect(
      (await req('PUT', '/v1/schedules/bad', { spec: { cron: 'nope' }, action: def.action })).body!.error.code,
    ).toBe('bad_request');
    expect((await req('GET', '/v1/schedules/missing')).body!.error.code).toBe('schedule_not_found');
    expect((await req('POST', '/v1/schedules/nine/backfill', { from: 'x' })).status).toBe(400);
    expect((await req('DELETE', '/v1/schedules/nine')).status).toBe(204);
    expect((await req('GET', '/v1/schedules/nine')).status).toBe(404);
  });

  it('runs a bulk repair with a dry run first, and shows its progress', async () => {
    for (const id of ['f1', 'f2', 'ok'])
      expect((await req('POST', `/v1/namespaces/ns/machines/${id}/start`, {})).status).toBe(200);
    for (const id of ['f1', 'f2']) await req('POST', `/v1/namespaces/ns/machines/${id}/call`, { args: 'fail' });
    const spec = { filter: { status: 'failed', reason_contains: 'E9' }, action: { op: 'simple_repair' } };
    expect(await req('POST', '/v1/namespaces/ns/bulk-jobs', { ...spec, dry_run: true })).toEqual({
      status: 200,
      body: { dry_run: true, matched: 2 },
    });
    const job = await req('POST', '/v1/namespaces/ns/bulk-jobs', spec);
    expect(job.status).toBe(202);
    expect(job.body).toMatchObject({ target: 'machines', status: 'running', total: 2 });
    const deadline = Date.now() + 20_000;
    let got = job.body!;
    while (got.status !== 'done' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      got = (await req('GET', `/v1/bulk-jobs/${job.body!.id}`)).body!;
    }
    expect(got).toMatchObject({ status: 'done', matched: 2, succeeded: 2, failed: 0, progress: 1, errors: [] });
    expect((await req('GET', '/v1/namespaces/ns/machines/f1')).body!.status).toBe('working');
    expect((await req('POST', `/v1/bulk-jobs/${job.body!.id}/cancel`)).body!.error.code).toBe('bulk_job_finished');
    expect((await req('POST', '/v1/namespaces/ns/bulk-jobs', { action: { op: 'nuke' } })).body!.error.code).toBe(
      'bad_request',
    );
    expect((await req('GET', '/v1/bulk-jobs')).body!.items).toHaveLength(1);
  });

  it('pauses a namespace: calls answer 503 paused with Retry-After, GETs show it', async () => {
    await req('POST', '/v1/namespaces/ns/machines/p1/start', {});
    expect((await req('POST', '/v1/namespaces/ns/pause', { reason: 'deploy' })).body).toMatchObject({
      kind: 'namespace',
      name: 'ns',
      reason: 'deploy',
    });
    const r = await fetch(`${node.url}/v1/namespaces/ns/machines/p1/call`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"args":1}',
    });
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('1');
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('paused');
    expect((await req('GET', '/v1/namespaces/ns')).body).toMatchObject({ name: 'ns', paused: true });
    expect((await req('GET', '/v1/namespaces/ns/machines/p1')).body).toMatchObject({ paused: true });
    expect((await req('GET', '/v1/pauses')).body!.items).toEqual([
      { kind: 'namespace', name: 'ns', paused_at: expect.any(String), reason: 'deploy' },
    ]);
    expect((await req('POST', '/v1/namespaces/ns/pause', { why: 1 })).status).toBe(400);
    expect((await req('POST', '/v1/namespaces/nope/pause')).body!.error.code).toBe('namespace_not_found');
    expect((await req('POST', '/v1/namespaces/ns/resume')).body).toEqual({
      kind: 'namespace',
      name: 'ns',
      resumed: true,
    });
    expect((await req('POST', '/v1/namespaces/ns/machines/p1/call', { args: 1 })).status).toBe(200);
  });
});
