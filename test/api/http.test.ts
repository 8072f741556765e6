import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInterface } from 'node:readline';
import type { FastifyInstance } from 'fastify';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, DIALECTS, type Dialect, type TestEnv } from '../support/env.js';
import { spawnTs, writeConfigFile } from '../support/proc.js';

/** Routes that exist only here: one POST route with a strict body schema. */
function echoRoutes(app: FastifyInstance): void {
  app.post<{ Body: { n: number; s?: string } }>(
    '/test/echo',
    {
      schema: {
        hide: true,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['n'],
          properties: { n: { type: 'integer' }, s: { type: 'string' } },
        },
      },
    },
    async (req) => ({ n: req.body.n, s: req.body.s ?? null, type: typeof req.body.n }),
  );
}

interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

describe.each(DIALECTS)('HTTP API (%s)', (dialect: Dialect) => {
  let env: TestEnv;
  let node: Node;
  let app: FastifyInstance;
  const appended: Array<{ stream: string; seq: number; data: unknown }> = [];

  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 2, extra: { http: { port: 0, body_limit_bytes: 2048 } } });
    node = await startNode(env.config, { faces: [], routes: [echoRoutes] });
    app = node.http;
    const rt = node.runtime;
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        rt.log.append(`http/${i % 9}`, [{ type: 'made', data: { i, text: `é-${i}` }, meta: { k: i } }]),
      ),
    );
    await Promise.all(results.map((r) => rt.log.positions(r)));
    results.forEach((r, i) => appended.push({ stream: r.stream, seq: r.seqs[0]!, data: { i, text: `é-${i}` } }));
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  const errorOf = (body: string): ErrorBody['error'] => {
    const parsed = JSON.parse(body) as ErrorBody;
    expect(typeof parsed.error.message).toBe('string');
    return parsed.error;
  };

  it('serves /healthz and /readyz over a real socket, echoing x-request-id', async () => {
    const h = await fetch(`${node.url}/healthz`, { headers: { 'x-request-id': 'req-abc-123' } });
    expect(h.status).toBe(200);
    expect(h.headers.get('x-request-id')).toBe('req-abc-123');
    expect(await h.json()).toEqual({ ok: true });

    const r = await fetch(`${node.url}/readyz`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ ok: true });
    // Without one, the node makes up a request id.
    expect(r.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('echoes x-request-id on errors too', async () => {
    const res = await app.inject({ method: 'GET', url: '/nope', headers: { 'x-request-id': 'err-42' } });
    expect(res.statusCode).toBe(404);
    expect(res.headers['x-request-id']).toBe('err-42');
  });

  it('reports not ready (503) while a migration is missing, and ready again once it is back', async () => {
    const shard = node.runtime.storage.shard('s1');
    const [row] = await shard.reader.all<{ id: string; applied_at: number }>(
      "SELECT id, applied_at FROM schema_migrations WHERE id = 'core/0003_leases'",
    );
    expect(row).toBeDefined();
    await shard.write((tx) => tx.run('DELETE FROM schema_migrations WHERE id = ?', [row!.id]));
    try {
      const res = await app.inject({ method: 'GET', url: '/readyz' });
      expect(res.statusCode).toBe(503);
      const body = res.json<{ ok: boolean; problems: string[] }>();
      expect(body.ok).toBe(false);
      expect(body.problems).toEqual(['shard s1 misses migrations core/0003_leases']);
    } finally {
      await shard.write((tx) =>
        tx.run('INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)', [row!.id, row!.applied_at]),
      );
    }
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
  });

  it('exposes Prometheus metrics named millrace_*', async () => {
    await app.inject({ method: 'GET', url: '/v1/shards' });
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    const text = res.body;
    const heads = await Promise.all(['s0', 's1'].map((s) => node.runtime.log.headPos(s)));
    expect(text).toContain('# TYPE millrace_log_head_position gauge');
    expect(text).toContain(`millrace_log_head_position{shard="s0"} ${heads[0]}`);
    expect(text).toContain(`millrace_log_head_position{shard="s1"} ${heads[1]}`);
    expect(text).toMatch(/^millrace_group_commit_jobs_total\{shard="s0"\} \d+$/m);
    expect(text).toMatch(
      /^millrace_http_request_duration_seconds_count\{method="GET",route="\/v1\/shards",status="200"\} [1-9]\d*$/m,
    );
    expect(text).toMatch(/^millrace_process_cpu_user_seconds_total /m);
    // Every sample line is `name{labels} value` with a millrace_ name.
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      expect(line).toMatch(/^millrace_[a-zA-Z0-9_]+(\{[^}]*\})? [-+0-9.eEaNInf]+$/);
    }
  });

  it('serves an OpenAPI document with the log routes', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const doc = JSON.parse(res.body) as { openapi: string; paths: Record<string, Record<string, unknown>> };
    expect(doc.openapi).toMatch(/^3\./);
    expect(doc.paths['/v1/shards']).toHaveProperty('get');
    expect(doc.paths['/v1/shards/{shard}/events']).toHaveProperty('get');
    expect(doc.paths).not.toHaveProperty('/healthz');
    expect(doc.paths).not.toHaveProperty('/test/echo');
  });

  it('lists shards with ranges and heads', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/shards' });
    expect(res.statusCode).toBe(200);
    const body = res.json<{
      dialect: string;
      shards: Array<{ name: string; from: string; to: string; head: number }>;
    }>();
    expect(body.dialect).toBe(dialect);
    expect(body.shards.map((s) => [s.name, s.from, s.to])).toEqual([
      ['s0', '0'.repeat(40), `8${'0'.repeat(39)}`],
      ['s1', `8${'0'.repeat(39)}`, 'end'],
    ]);
    expect(body.shards[0]!.head + body.shards[1]!.head).toBe(40);
  });

  it('lists the nodes on this storage: this one first, with its sessions per shard where nodes share a database', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/nodes' });
    expect(res.statusCode).toBe(200);
    const body = res.json<{
      items: Array<{
        node_id: string;
        self: boolean;
        sessions: Record<string, { pool: number; listen: number; lock: number }>;
      }>;
    }>();
    expect(body.items[0]).toMatchObject({ node_id: env.config.node_id, self: true });
    expect(body.items.filter((n) => n.node_id === env.config.node_id)).toHaveLength(1);
    if (dialect === 'postgres') {
      // Every shard shows this node's LISTEN session and its sequencer's lock session.
      for (const shard of ['s0', 's1']) {
        expect(body.items[0]!.sessions[shard]!.listen).toBe(1);
        expect(body.items[0]!.sessions[shard]!.lock).toBeGreaterThanOrEqual(1);
      }
    } else {
      expect(body.items).toEqual([{ node_id: env.config.node_id, self: true, sessions: {} }]);
    }
  });

  it("reads a shard's log in position order, page by page", async () => {
    for (const shard of ['s0', 's1']) {
      const head = await node.runtime.log.headPos(shard);
      expect(head).toBeGreaterThanOrEqual(4);
      const first = await app.inject({ method: 'GET', url: `/v1/shards/${shard}/events?after=0&limit=3` });
      expect(first.statusCode).toBe(200);
      const p1 = first.json<{ events: Array<Record<string, unknown>>; next_after: number }>();
      expect(p1.events.map((e) => e.pos)).toEqual([1, 2, 3]);
      expect(p1.next_after).toBe(3);
      const rest = (
        await app.inject({ method: 'GET', url: `/v1/shards/${shard}/events?after=${p1.next_after}` })
      ).json<{ events: Array<Record<string, unknown>>; next_after: number }>();
      expect(rest.events.map((e) => e.pos)).toEqual(Array.from({ length: head - 3 }, (_, i) => i + 4));
      expect(rest.next_after).toBe(head);
      const all = [...p1.events, ...rest.events];
      for (const e of all) {
        expect(e.shard).toBe(shard);
        expect(e.type).toBe('made');
        expect(e.hash).toMatch(/^[0-9a-f]{64}$/);
        expect(new Date(e.created_at as string).toISOString()).toBe(e.created_at);
        const want = appended.find((a) => a.stream === e.stream && a.seq === e.seq);
        expect(want, `${String(e.stream)}#${String(e.seq)}`).toBeDefined();
        expect(e.data).toEqual(want!.data);
        expect(e.meta).toEqual({ k: (want!.data as { i: number }).i });
      }
      const end = (await app.inject({ method: 'GET', url: `/v1/shards/${shard}/events?after=${head}` })).json<{
        events: unknown[];
        next_after: number;
      }>();
      expect(end).toEqual({ events: [], next_after: head });
    }
  });

  it.each([
    ['after=-1', 'after'],
    ['after=abc', 'after'],
    ['after=1.5', 'after'],
    ['limit=0', 'limit'],
    ['limit=10001', 'limit'],
    ['limit=x', 'limit'],
    ['after=1&after=2', 'after'],
    // Beyond 2^53 a position cannot be represented exactly (and PostgreSQL's bigint overflows at 1e20).
    ['after=9007199254740993', 'after'],
    ['after=99999999999999999999', 'after'],
    ['foo=1', 'foo'],
  ])('refuses the query %s with 400 bad_request', async (query, what) => {
    const res = await app.inject({ method: 'GET', url: `/v1/shards/s0/events?${query}` });
    expect(res.statusCode).toBe(400);
    const err = errorOf(res.body);
    expect(err.code).toBe('bad_request');
    expect(JSON.stringify(err)).toContain(what);
  });

  it('answers an unknown shard with 404 shard_not_found and an unknown route with 404 not_found', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/shards/nope/events' });
    expect(res.statusCode).toBe(404);
    expect(errorOf(res.body)).toMatchObject({ code: 'shard_not_found', details: { shard: 'nope' } });

    for (const [method, url] of [
      ['GET', '/v1/nothing'],
      ['DELETE', '/v1/shards'],
      ['GET', '/v1/shards/s0/events/extra'],
    ] as const) {
      const r = await app.inject({ method, url });
      expect(r.statusCode, `${method} ${url}`).toBe(404);
      expect(errorOf(r.body).code).toBe('not_found');
    }
  });

  it('validates POST bodies strictly: bad JSON, unknown fields, wrong types, no coercion', async () => {
    const post = (payload: string, contentType = 'application/json') =>
      app.inject({ method: 'POST', url: '/test/echo', payload, headers: { 'content-type': contentType } });

    const ok = await post('{"n": 7, "s": "x"}');
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({ n: 7, s: 'x', type: 'number' });

    for (const bad of ['{"n": 1', '{n: 1}', "{'n': 1}", 'not json', '']) {
      const r = await post(bad);
      expect(r.statusCode, JSON.stringify(bad)).toBe(400);
      expect(errorOf(r.body).code, JSON.stringify(bad)).toBe('bad_json');
    }

    const unknown = await post('{"n": 1, "extra": true}');
    expect(unknown.statusCode).toBe(400);
    expect(errorOf(unknown.body).code).toBe('bad_request');
    expect(unknown.body).toContain('extra');

    for (const wrong of [
      '{"n": "1"}',
      '{"n": 1.5}',
      '{"n": true}',
      '{"n": null}',
      '{"n": 1, "s": 5}',
      '{}',
      '[]',
      '"n"',
    ]) {
      const r = await post(wrong);
      expect(r.statusCode, wrong).toBe(400);
      expect(errorOf(r.body).code, wrong).toBe('bad_request');
    }

    // text/plain parses to a string, which the object schema refuses.
    const text = await post('{"n": 1}', 'text/plain');
    expect(text.statusCode).toBe(400);
    expect(errorOf(text.body).code).toBe('bad_request');

    const media = await post('<n>1</n>', 'application/xml');
    expect(media.statusCode).toBe(415);
    expect(errorOf(media.body).code).toBe('unsupported_media_type');

    const big = await post(JSON.stringify({ n: 1, s: 'x'.repeat(4096) }));
    expect(big.statusCode).toBe(413);
    expect(errorOf(big.body).code).toBe('payload_too_large');
  });
});

describe.each(DIALECTS)('millrace serve (%s)', (dialect: Dialect) => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await createTestEnv(dialect, {
      extra: { logging: { level: 'info' }, http: { port: 0, drain_timeout_ms: 5000 } },
    });
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('serves until SIGTERM, then drains and exits 0', async () => {
    const configPath = writeConfigFile(env.dataDir, env.input);
    const child = spawnTs('test/support/cli.ts', ['--config', configPath, 'serve']);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
      child.on('close', (code, signal) => res({ code, signal })),
    );
    const messages: Array<Record<string, unknown>> = [];
    const rl = createInterface({ input: child.stdout! });
    const url = await new Promise<string>((resolve, reject) => {
      const guard = setTimeout(() => reject(new Error(`serve did not start:\n${stderr}`)), 30_000);
      rl.on('line', (line) => {
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return;
        }
        messages.push(msg);
        if (msg.msg === 'millrace serving') {
          clearTimeout(guard);
          resolve(msg.http as string);
        }
      });
      void exited.then(() => reject(new Error(`serve exited early:\n${stderr}`)));
    });
    try {
      const res = await fetch(`${url}/v1/shards`, { headers: { 'x-request-id': 'drain-1' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-request-id')).toBe('drain-1');
      expect((await res.json()) as unknown).toMatchObject({ dialect, shards: [{ name: 's0', head: 0 }] });
      // The keep-alive connection of that request stays open while the node drains.
      expect(child.kill('SIGTERM')).toBe(true);
      const { code, signal } = await exited;
      expect(signal).toBeNull();
      expect(code, stderr).toBe(0);
      expect(messages.map((m) => m.msg)).toEqual(expect.arrayContaining(['draining', 'stopped']));
      const after = await fetch(`${url}/healthz`).then(
        () => 'answered',
        () => 'refused',
      );
      expect(after).toBe('refused');
    } finally {
      child.kill('SIGKILL');
    }
  });
});
