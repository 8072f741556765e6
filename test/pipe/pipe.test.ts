import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNode, type Node } from '../../src/serve.js';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { Storage } from '../../src/storage/storage.js';
import { nodeMigrations } from '../../src/runtime.js';
import { BUILT_IN_FACE_SPECS } from '../../src/face-specs.js';
import { newSessionId } from '../../src/pipe/pipe.js';
import { pipeFace } from '../../src/pipe/face.js';
import { ManualClock } from '../../src/core/clock.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { api, b64, HandlerServer, StreamClient } from './support.js';

const ttl = 0.4;

function pipeConfig(url: string): Record<string, unknown> {
  const fast = { default_delay_s: 0.05, retry_base_s: 0.02, retry_max_s: 0.1 };
  return {
    session_ttl_s: ttl,
    store_jitter_s: 0,
    max_record_bytes: 4096,
    kinds: {
      payments: { code: 7, handler: `${url}/payments`, max_repeats: 5, ...fast },
      flaky: { handler: `${url}/flaky`, max_repeats: 3, ...fast },
      lazy: { handler: `${url}/lazy`, max_repeats: 2, ...fast },
      ordered: { handler: `${url}/ordered`, concurrency: 1, ...fast },
      orphan: { ...fast },
    },
  };
}

describe.each(DIALECTS)('pipe (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  let base: string;
  const handler = new HandlerServer();

  beforeAll(async () => {
    const url = await handler.start();
    env = await createTestEnv(dialect, {
      extra: { pipe: pipeConfig(url), grpc: { enabled: true, port: 0 }, scheduler: { poll_ms: 20 } } as never,
    });
    node = await startNode(env.config, { faces: [pipeFace] });
    base = node.url;
  });
  afterAll(async () => {
    await node?.close();
    await handler.close();
    await env?.cleanup();
  });

  const create = async (kind: string | number = 'payments'): Promise<string> => {
    const r = await api(base, 'POST', '/v1/pipe/sessions', { kind });
    expect(r.status).toBe(201);
    return r.body.id as string;
  };
  const append = (id: string, text: string, seq?: number) =>
    api(
      base,
      'POST',
      `/v1/pipe/sessions/${id}/append`,
      seq === undefined ? { record: b64(text) } : { record: b64(text), seq },
    );
  const records = async (id: string): Promise<string[]> => {
    const r = await api(base, 'GET', `/v1/pipe/sessions/${id}`);
    return (r.body.records as string[]).map((x) => Buffer.from(x, 'base64').toString('utf8'));
  };

  it('runs a full lifecycle: new, append, store, push to the handler, handler deletes', async () => {
    handler.behaviours.set('/payments', async (p) => {
      const d = await api(base, 'DELETE', `/v1/pipe/sessions/${p.id}`);
      return d.status === 204 ? 200 : 500;
    });
    const id = await create(7); // by code
    expect(id).toMatch(/^[0-9a-z]{26}$/);
    for (const t of ['one', 'two', 'three']) expect((await append(id, t)).body).toEqual({ duplicate: false });
    const open = await api(base, 'GET', `/v1/pipe/sessions/${id}`);
    expect(open.body).toMatchObject({ id, kind: 'payments', state: 'open', repeats: 0, due_at: null });
    expect(await records(id)).toEqual(['one', 'two', 'three']);

    const st = await api(base, 'POST', `/v1/pipe/sessions/${id}/store`, { timeout_s: 0.05 });
    expect(st.status).toBe(200);
    expect(Date.parse(st.body.due_at)).toBeGreaterThan(0);
    const stored = await api(base, 'GET', `/v1/pipe/sessions/${id}`);
    expect(stored.body.state === 'stored' || stored.body.state === 'delivering' || stored.status === 404).toBe(true);

    await waitFor(
      async () => (await api(base, 'GET', `/v1/pipe/sessions/${id}`)).status === 404,
      10_000,
      'the handler to delete the session',
    );
    expect(handler.of(id)).toEqual([
      { path: '/payments', id, kind: 'payments', repeats: 1, records: ['one', 'two', 'three'] },
    ]);
    expect((await append(id, 'late')).body.error.code).toBe('session_not_found');
  });

  it('applies a verdict in the handler answer: delete finishes, store brings it back, a malformed one counts as a failed push', async () => {
    const verdicts = new Map<string, string>();
    handler.behaviours.set('/payments', (p) => ({ status: 200, body: verdicts.get(`${p.id}:${p.repeats}`) ?? '' }));
    const gone = await create();
    await append(gone, 'g');
    verdicts.set(`${gone}:1`, '{"action":"delete"}');
    const again = await create();
    await append(again, 'a');
    verdicts.set(`${again}:1`, '{"action":"store","timeout_s":0.05}');
    verdicts.set(`${again}:2`, '{"action":"delete"}');
    const bad = await create();
    verdicts.set(`${bad}:1`, '{"action":"explode"}');
    verdicts.set(`${bad}:2`, '{"action":"store"}');
    verdicts.set(`${bad}:3`, '{"action":"delete"}');
    for (const id of [gone, again, bad]) await api(base, 'POST', `/v1/pipe/sessions/${id}/store`, { timeout_s: 0 });
    await waitFor(
      async () => (await api(base, 'GET', `/v1/pipe/sessions/${gone}`)).status === 404,
      10_000,
      'delete verdict',
    );
    expect(handler.of(gone).map((p) => p.repeats)).toEqual([1]);
    await waitFor(
      async () => (await api(base, 'GET', `/v1/pipe/sessions/${again}`)).status === 404,
      10_000,
      'store then delete verdicts',
    );
    expect(handler.of(again).map((p) => [p.repeats, p.records])).toEqual([
      [1, ['a']],
      [2, ['a']],
    ]);
    await waitFor(
      async () => (await api(base, 'GET', `/v1/pipe/sessions/${bad}`)).status === 404,
      10_000,
      'malformed verdicts retried',
    );
    expect(handler.of(bad).map((p) => p.repeats)).toEqual([1, 2, 3]);
    handler.behaviours.delete('/payments');
  });

  it('replaces the records of a session atomically', async () => {
    const id = await create();
    await append(id, 'a');
    await append(id, 'b');
    const r = await api(base, 'POST', `/v1/pipe/sessions/${id}/replace`, { record: b64('c') });
    expect(r).toEqual({ status: 200, body: { duplicate: false } });
    expect(await records(id)).toEqual(['c']);
    await append(id, 'd');
    expect(await records(id)).toEqual(['c', 'd']);
    expect((await api(base, 'DELETE', `/v1/pipe/sessions/${id}`)).status).toBe(204);
  });

  it('acknowledges a duplicate append by seq without writing it twice', async () => {
    const id = await create();
    expect((await append(id, 'r1', 1)).body).toEqual({ duplicate: false });
    expect((await append(id, 'r2', 2)).body).toEqual({ duplicate: false });
    expect((await append(id, 'r1', 1)).body).toEqual({ duplicate: true });
    expect((await append(id, 'r2-again', 2)).body).toEqual({ duplicate: true });
    expect((await append(id, 'no seq')).body).toEqual({ duplicate: false });
    expect(await records(id)).toEqual(['r1', 'r2', 'no seq']);
    await api(base, 'DELETE', `/v1/pipe/sessions/${id}`);
  });

  it('backs off a failing handler, dead-letters after max_repeats, and redrives', async () => {
    let fail = true;
    handler.behaviours.set('/flaky', async (p) => {
      if (fail) return 503;
      await api(base, 'DELETE', `/v1/pipe/sessions/${p.id}`);
      return 200;
    });
    const id = await create('flaky');
    await append(id, 'x');
    await api(base, 'POST', `/v1/pipe/sessions/${id}/store`, { timeout_s: 0 });
    await waitFor(
      async () => (await api(base, 'GET', `/v1/pipe/sessions/${id}`)).body.state === 'dead',
      10_000,
      'the dead letter',
    );
    expect(handler.of(id).map((p) => p.repeats)).toEqual([1, 2, 3]);

    const list = await api(base, 'GET', '/v1/pipe/dead-letters?kind=flaky');
    expect(list.body.dead_letters).toEqual([expect.objectContaining({ id, kind: 'flaky', repeats: 3 })]);
    expect(list.body.dead_letters[0].last_error).toContain('503');
    const dl = await api(base, 'GET', `/v1/pipe/dead-letters/${id}`);
    expect(dl.body).toMatchObject({ id, state: 'dead', records: [b64('x')] });
    expect((await append(id, 'y')).body.error.code).toBe('session_closed');

    fail = false;
    expect((await api(base, 'POST', `/v1/pipe/dead-letters/${id}/redrive`)).status).toBe(200);
    await waitFor(
      async () => (await api(base, 'GET', `/v1/pipe/sessions/${id}`)).status === 404,
      10_000,
      'the redriven session to be handled',
    );
    expect(handler.of(id).map((p) => p.repeats)).toEqual([1, 2, 3, 1]);
    expect((await api(base, 'GET', '/v1/pipe/dead-letters?kind=flaky')).body.dead_letters).toEqual([]);

    // An operator may also delete a dead letter.
    fail = true;
    const id2 = await create('flaky');
    await api(base, 'POST', `/v1/pipe/sessions/${id2}/store`, { timeout_s: 0 });
    await waitFor(
      async () => (await api(base, 'GET', `/v1/pipe/sessions/${id2}`)).body.state === 'dead',
      10_000,
      'the second dead letter',
    );
    expect((await api(base, 'DELETE', `/v1/pipe/dead-letters/${id2}`)).status).toBe(204);
    expect((await api(base, 'GET', `/v1/pipe/sessions/${id2}`)).status).toBe(404);
  });

  it('makes an HTTP session whose lease ran out unfinished, and pushes it with its records', async () => {
    handler.behaviours.set('/payments', async (p) =>
      (await api(base, 'DELETE', `/v1/pipe/sessions/${p.id}`)).status === 204 ? 200 : 500,
    );
    const id = await create();
    await append(id, 'kept');
    // No more writes: the lease (ttl) runs out, then the kind's default delay.
    await waitFor(() => handler.of(id).length > 0, 10_000, 'the push after lease expiry');
    expect(handler.of(id)[0]).toMatchObject({ repeats: 1, records: ['kept'] });
    await waitFor(async () => (await api(base, 'GET', `/v1/pipe/sessions/${id}`)).status === 404);
  });

  it('pushes again (with backoff) when the handler does not finish within the lease', async () => {
    // "lazy" answers 200 but never finishes the session.
    handler.behaviours.set('/lazy', () => 200);
    const id = await create('lazy');
    await append(id, 'z');
    await api(base, 'POST', `/v1/pipe/sessions/${id}/store`, { timeout_s: 0 });
    await waitFor(
      async () => (await api(base, 'GET', `/v1/pipe/sessions/${id}`)).body.state === 'dead',
      10_000,
      'dead after two lazy pushes',
    );
    expect(handler.of(id).map((p) => p.repeats)).toEqual([1, 2]);
    expect((await api(base, 'GET', `/v1/pipe/dead-letters/${id}`)).body.last_error).toContain('lease expired');
  });

  it('keeps sessions of a kind without a handler stored', async () => {
    const id = await create('orphan');
    await api(base, 'POST', `/v1/pipe/sessions/${id}/store`, { timeout_s: 0 });
    await new Promise((r) => setTimeout(r, 200));
    expect((await api(base, 'GET', `/v1/pipe/sessions/${id}`)).body).toMatchObject({ state: 'stored', repeats: 0 });
  });

  it('multiplexes sessions over one stream; a broken stream makes its sessions unfinished', async () => {
    handler.behaviours.set('/payments', async (p) =>
      (await api(base, 'DELETE', `/v1/pipe/sessions/${p.id}`)).status === 204 ? 200 : 500,
    );
    const c = new StreamClient(`127.0.0.1:${node.grpc!.port}`);
    const ids = await Promise.all([c.newSession('payments'), c.newSession('7'), c.newSession('payments')]);
    // Sessions interleave on the stream; within a session the client waits for each ack (that is what orders records).
    await Promise.all(
      ids.map(async (id, i) => {
        expect((await c.append(id, `${i}-a`, 1)).error).toBeFalsy();
        expect((await c.append(id, `${i}-b`, 2)).error).toBeFalsy();
      }),
    );
    expect((await c.append(ids[0]!, '0-a', 1)).duplicate).toBe(true);
    const bad = await c.append('nope', 'x');
    expect(bad.error?.code).toBe('session_not_found');
    expect((await c.send({ new: { kind: 'nope' } })).error?.code).toBe('kind_not_found');
    // One finished session: stored over the stream with a timeout.
    expect((await c.store(ids[2]!, 0.05)).due_at_ms).toBeGreaterThan(0);
    c.cancel();
    for (const [i, id] of ids.entries()) {
      await waitFor(() => handler.of(id).length > 0, 10_000, `push of stream session ${i}`);
      expect(handler.of(id)).toEqual([expect.objectContaining({ repeats: 1, records: [`${i}-a`, `${i}-b`] })]);
    }

    // A half-closed stream also releases its sessions.
    const c2 = new StreamClient(`127.0.0.1:${node.grpc!.port}`);
    const id = await c2.newSession('payments');
    await c2.append(id, 'last');
    c2.end();
    await c2.ended;
    c2.close();
    await waitFor(() => handler.of(id).length > 0, 10_000, 'push of the half-closed stream session');
    expect(handler.of(id)[0]!.records).toEqual(['last']);
  });

  it('handles requests pipelined in one stream message in order: repeated seq, replace, append after store', async () => {
    for (const batched of [true, false]) {
      const c = new StreamClient(`127.0.0.1:${node.grpc!.port}`, { batched });
      const id = await c.newSession('orphan');
      const other = await c.newSession('orphan');
      // Sent in one turn: with `batched` they travel in one message and land in one write batch.
      const rs = await Promise.all([
        c.append(id, 'a', 1),
        c.append(id, 'a again', 1),
        c.append(other, 'x', 1),
        c.append(id, 'b', 2),
        c.replace(other, 'y', 2),
        c.append(other, 'z'),
        c.append(id, 'b again', 2),
        c.append(id, 'c'),
        c.store(id, 60),
        c.append(id, 'too late', 3),
      ]);
      expect(rs.map((r) => r.error?.code ?? (r.duplicate ? 'duplicate' : 'ok'))).toEqual([
        'ok',
        'duplicate',
        'ok',
        'ok',
        'ok',
        'ok',
        'duplicate',
        'ok',
        'ok',
        'session_closed',
      ]);
      expect(await records(id)).toEqual(['a', 'b', 'c']);
      expect(await records(other)).toEqual(['y', 'z']);
      c.cancel();
    }
  });

  it('refuses every bad input with a typed 4xx and writes nothing', async () => {
    // A kind without a handler: should a session's lease run out during the loop, it is stored, never pushed and finished.
    const id = await create('orphan');
    await append(id, 'only');
    const stored = await create('orphan');
    await api(base, 'POST', `/v1/pipe/sessions/${stored}/store`, { timeout_s: 3600 });
    const unknown = '0'.repeat(26);
    const cases: Array<[string, string, unknown, number, string]> = [
      ['POST', '/v1/pipe/sessions', { kind: 'nope' }, 404, 'kind_not_found'],
      ['POST', '/v1/pipe/sessions', { kind: 99 }, 404, 'kind_not_found'],
      ['POST', '/v1/pipe/sessions', { kind: -1 }, 400, 'bad_request'],
      ['POST', '/v1/pipe/sessions', { kind: '' }, 400, 'bad_request'],
      ['POST', '/v1/pipe/sessions', { kind: 1.5 }, 400, 'bad_request'],
      ['POST', '/v1/pipe/sessions', {}, 400, 'bad_request'],
      ['POST', '/v1/pipe/sessions', { kind: 'payments', extra: 1 }, 400, 'bad_request'],
      ['POST', '/v1/pipe/sessions', '{"kind":', 400, 'bad_json'],
      ['POST', `/v1/pipe/sessions/${id}/append`, { record: 'not base64!' }, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/append`, { record: 'YWJj' + '=' }, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/append`, { record: 5 }, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/append`, {}, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/append`, { record: b64('x'), seq: -1 }, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/append`, { record: b64('x'), seq: '1' }, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/append`, { record: b64('x'), more: true }, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/replace`, { record: '***' }, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/store`, { timeout_s: -1 }, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/store`, { timeout_s: '5' }, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/store`, {}, 400, 'bad_request'],
      ['POST', `/v1/pipe/sessions/${id}/append`, { record: b64('x'.repeat(4097)) }, 413, 'payload_too_large'],
      ['POST', `/v1/pipe/sessions/${id}/replace`, { record: b64('x'.repeat(4097)) }, 413, 'payload_too_large'],
      ['POST', `/v1/pipe/sessions/${unknown}/append`, { record: b64('x') }, 404, 'session_not_found'],
      ['POST', '/v1/pipe/sessions/bad-id/append', { record: b64('x') }, 404, 'session_not_found'],
      ['POST', `/v1/pipe/sessions/${unknown}/replace`, { record: b64('x') }, 404, 'session_not_found'],
      ['POST', `/v1/pipe/sessions/${unknown}/store`, { timeout_s: 1 }, 404, 'session_not_found'],
      ['DELETE', `/v1/pipe/sessions/${unknown}`, undefined, 404, 'session_not_found'],
      ['GET', `/v1/pipe/sessions/${unknown}`, undefined, 404, 'session_not_found'],
      ['POST', `/v1/pipe/sessions/${stored}/append`, { record: b64('x') }, 409, 'session_closed'],
      ['POST', `/v1/pipe/sessions/${stored}/replace`, { record: b64('x') }, 409, 'session_closed'],
      ['POST', `/v1/pipe/sessions/${stored}/store`, { timeout_s: 1 }, 409, 'session_closed'],
      ['POST', `/v1/pipe/dead-letters/${stored}/redrive`, undefined, 404, 'dead_letter_not_found'],
      ['GET', `/v1/pipe/dead-letters/${id}`, undefined, 404, 'dead_letter_not_found'],
      ['DELETE', `/v1/pipe/dead-letters/${unknown}`, undefined, 404, 'dead_letter_not_found'],
      ['GET', '/v1/pipe/dead-letters?limit=0', undefined, 400, 'bad_request'],
      ['GET', '/v1/pipe/dead-letters?kind=nope', undefined, 404, 'kind_not_found'],
    ];
    const count = async () => {
      const s = node.runtime.storage.shards[0]!;
      // Only this test's sessions (and the unknown id): sessions of earlier tests may still be pushed and finished meanwhile.
      const mine = [id, stored, unknown];
      const a = await s.reader.all<{ n: number }>(
        'SELECT count(*) AS n FROM pipe_sessions WHERE id IN (?, ?, ?)',
        mine,
      );
      const b = await s.reader.all<{ n: number }>(
        'SELECT count(*) AS n FROM pipe_records WHERE session_id IN (?, ?, ?)',
        mine,
      );
      return [Number(a[0]!.n), Number(b[0]!.n)];
    };
    const before = await count();
    for (const [method, path, body, status, code] of cases) {
      const r = await api(base, method, path, body);
      expect([method, path, JSON.stringify(body), r.status, r.body?.error?.code]).toEqual([
        method,
        path,
        JSON.stringify(body),
        status,
        code,
      ]);
    }
    expect(await count()).toEqual(before);
    expect(await records(id)).toEqual(['only']);
    expect((await api(base, 'GET', `/v1/pipe/sessions/${stored}`)).body).toMatchObject({
      state: 'stored',
      records: [],
    });
    // a client may cancel a session it stored: it and its records are gone, and it is never pushed
    await append(stored, 'kept?').catch(() => {});
    expect((await api(base, 'DELETE', `/v1/pipe/sessions/${stored}`)).status).toBe(204);
    expect((await api(base, 'GET', `/v1/pipe/sessions/${stored}`)).body.error.code).toBe('session_not_found');
    expect((await api(base, 'DELETE', `/v1/pipe/sessions/${stored}`)).body.error.code).toBe('session_not_found');
    await api(base, 'DELETE', `/v1/pipe/sessions/${id}`);
  });
});

describe.each(DIALECTS)('pipe redelivery order (%s)', (dialect) => {
  it('pushes stored sessions in due order, ties in the order they were stored', async () => {
    const handler = new HandlerServer();
    const url = await handler.start();
    const env = await createTestEnv(dialect, { extra: { pipe: pipeConfig(url), scheduler: { poll_ms: 20 } } as never });
    const clock = new ManualClock(Date.now());
    const node = await startNode(env.config, { faces: [pipeFace], clock });
    try {
      const base = node.url;
      handler.behaviours.set('/ordered', async (p) =>
        (await api(base, 'DELETE', `/v1/pipe/sessions/${p.id}`)).status === 204 ? 200 : 500,
      );
      const timeouts = [4, 2, 3, 2, 1, 3];
      const ids: string[] = [];
      for (const [i] of timeouts.entries()) {
        const id = (await api(base, 'POST', '/v1/pipe/sessions', { kind: 'ordered' })).body.id as string;
        await api(base, 'POST', `/v1/pipe/sessions/${id}/append`, { record: b64(`rec-${i}`) });
        ids.push(id);
      }
      // Store in an order unrelated to creation.
      for (const i of [3, 0, 5, 1, 4, 2])
        await api(base, 'POST', `/v1/pipe/sessions/${ids[i]}/store`, { timeout_s: timeouts[i] });
      await new Promise((r) => setTimeout(r, 100));
      expect(handler.pushes).toEqual([]);
      clock.advance(10_000);
      await waitFor(() => handler.pushes.length === 6, 10_000, 'six pushes').catch((e: unknown) => {
        throw new Error(`${String(e)}: ${JSON.stringify(handler.pushes)}`);
      });
      // due 1: #4; due 2: #3 then #1 (stored in that order); due 3: #5 then #2; due 4: #0
      expect(handler.pushes.map((p) => p.records[0])).toEqual(['rec-4', 'rec-3', 'rec-1', 'rec-5', 'rec-2', 'rec-0']);
      // Let the handler finish the last session before the node closes.
      await waitFor(
        async () => (await api(base, 'GET', `/v1/pipe/sessions/${ids[0]}`)).status === 404,
        10_000,
        'the last session to be deleted',
      );
    } finally {
      await node.close();
      await handler.close();
      await env.cleanup();
    }
  });
});

describe.each(DIALECTS)('pipe kind without a handler (%s)', (dialect) => {
  it('keeps its stored sessions until a node starts with a handler for the kind, then pushes each once with its records', async () => {
    const handler = new HandlerServer();
    const url = await handler.start();
    const env = await createTestEnv(dialect, { extra: { pipe: pipeConfig(url), scheduler: { poll_ms: 20 } } as never });
    try {
      let node = await startNode(env.config, { faces: [pipeFace] });
      const ids: string[] = [];
      try {
        for (let i = 0; i < 3; i++) {
          const id = (await api(node.url, 'POST', '/v1/pipe/sessions', { kind: 'orphan' })).body.id as string;
          await api(node.url, 'POST', `/v1/pipe/sessions/${id}/append`, { record: b64(`o-${i}`) });
          expect((await api(node.url, 'POST', `/v1/pipe/sessions/${id}/store`, { timeout_s: 0 })).status).toBe(200);
          ids.push(id);
        }
        await new Promise((r) => setTimeout(r, 300));
        for (const id of ids)
          expect((await api(node.url, 'GET', `/v1/pipe/sessions/${id}`)).body).toMatchObject({
            state: 'stored',
            repeats: 0,
          });
        expect(handler.pushes).toEqual([]);
      } finally {
        await node.close();
      }
      // The same storage, now with a handler for the kind.
      const input = structuredClone(env.input) as Record<string, any>;
      input.pipe.kinds.orphan.handler = `${url}/orphan`;
      // Pushes may start before startNode resolves: the handler waits for the node's address.
      let base2 = '';
      handler.behaviours.set('/orphan', async (p) => {
        while (!base2) await new Promise((r) => setTimeout(r, 5));
        return (await api(base2, 'DELETE', `/v1/pipe/sessions/${p.id}`)).status === 204 ? 200 : 500;
      });
      node = await startNode(buildConfig(input as ConfigInput), { faces: [pipeFace] });
      base2 = node.url;
      try {
        for (const id of ids)
          await waitFor(
            async () => (await api(node.url, 'GET', `/v1/pipe/sessions/${id}`)).status === 404,
            10_000,
            'push of a parked session',
          );
        expect(handler.pushes.map((p) => [p.path, p.records, p.repeats]).sort()).toEqual(
          ids.map((_, i) => ['/orphan', [`o-${i}`], 1]).sort(),
        );
      } finally {
        await node.close();
      }
    } finally {
      await handler.close();
      await env.cleanup();
    }
  });
});

describe.each(DIALECTS)('pipe records migration (%s)', (dialect) => {
  it('moves records written under the first schema to the id-keyed table, in order, keeping seq dedupe', async () => {
    const env = await createTestEnv(dialect, { extra: { pipe: pipeConfig('http://127.0.0.1:9') } as never });
    try {
      // A store as the previous release left it: every migration up to the first pipe schema, and rows in it.
      const storage = Storage.open(env.config);
      const all = nodeMigrations(BUILT_IN_FACE_SPECS);
      await storage.migrate(
        all.slice(
          0,
          all.findIndex((m) => m.id === 'pipe/0002_records_by_id'),
        ),
      );
      const id = newSessionId(Date.now());
      await storage.shards[0]!.write(async (tx) => {
        await tx.run(
          `INSERT INTO pipe_sessions (id, kind, state, owner, created_at, touched_at, next_idx) VALUES (?, 'orphan', 'open', NULL, ?, ?, 3)`,
          [id, Date.now(), Date.now()],
        );
        // Inserted out of idx order: the order that counts is idx.
        for (const [idx, seq, text] of [
          [3, null, 'c'],
          [1, 1, 'a'],
          [2, 2, 'b'],
        ] as const) {
          await tx.run('INSERT INTO pipe_records (session_id, idx, seq, data) VALUES (?, ?, ?, ?)', [
            id,
            idx,
            seq,
            Buffer.from(text),
          ]);
        }
      });
      await storage.close();
      const node = await startNode(env.config, { faces: [pipeFace] });
      try {
        const r = await api(node.url, 'GET', `/v1/pipe/sessions/${id}`);
        expect((r.body.records as string[]).map((x) => Buffer.from(x, 'base64').toString())).toEqual(['a', 'b', 'c']);
        expect(
          (await api(node.url, 'POST', `/v1/pipe/sessions/${id}/append`, { record: b64('again'), seq: 2 })).body,
        ).toEqual({ duplicate: true });
        expect(
          (await api(node.url, 'POST', `/v1/pipe/sessions/${id}/append`, { record: b64('d'), seq: 3 })).body,
        ).toEqual({ duplicate: false });
        const after = await api(node.url, 'GET', `/v1/pipe/sessions/${id}`);
        expect((after.body.records as string[]).map((x) => Buffer.from(x, 'base64').toString())).toEqual([
          'a',
          'b',
          'c',
          'd',
        ]);
      } finally {
        await node.close();
      }
    } finally {
      await env.cleanup();
    }
  });
});
