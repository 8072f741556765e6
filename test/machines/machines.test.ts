import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNode, type Node } from '../../src/serve.js';
import { isMillraceError, MillraceError } from '../../src/core/errors.js';
import { machinesFace } from '../../src/machines/face.js';
import { MachinesClient } from '../../src/machines/client.js';
import { verifyShard } from '../../src/log/verify.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { machinesConfig, TestProcessor } from './support.js';

const codeOf = async (p: Promise<unknown>): Promise<string> => {
  const e = await p.then(
    () => 'ok',
    (err: unknown) => err,
  );
  if (e === 'ok') return 'ok';
  if (isMillraceError(e)) return e.code;
  throw e;
};

describe.each(DIALECTS)('machines over HTTP (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  let proc: TestProcessor;
  let c: MachinesClient;
  const T = 't';

  beforeAll(async () => {
    proc = await new TestProcessor().listen();
    env = await createTestEnv(dialect, { extra: { machines: machinesConfig(proc.url) } as never });
    node = await startNode(env.config, { faces: [machinesFace] });
    c = new MachinesClient(node.url);
  });
  afterAll(async () => {
    await node?.close();
    await proc?.close();
    await env?.cleanup();
  });

  it('starts, calls and reads history in both directions', async () => {
    const r = await c.start(T, 'm1', { events: [{ n: 1 }], aux: { a: 1 }, response: 'hello' });
    expect(r.response).toBe('hello');
    for (let i = 2; i <= 5; i++) await c.call(T, { id: 'm1' }, { events: [{ n: i }] });
    const all = await c.get(T, { id: 'm1' });
    expect(all.status).toBe('working');
    expect(all.aux).toEqual({ a: 1 });
    expect(all.history.map((e) => e.id)).toEqual([1, 2, 3, 4, 5]);
    expect(all.history.map((e) => e.data)).toEqual([1, 2, 3, 4, 5].map((n) => ({ n })));
    expect((await c.get(T, { id: 'm1' }, { after: 2, limit: 2 })).history.map((e) => e.id)).toEqual([3, 4]);
    expect((await c.get(T, { id: 'm1' }, { direction: 'backward', limit: 2 })).history.map((e) => e.id)).toEqual([
      5, 4,
    ]);
    expect((await c.get(T, { id: 'm1' }, { direction: 'backward', after: 3 })).history.map((e) => e.id)).toEqual([
      2, 1,
    ]);
    expect(await codeOf(c.get(T, { id: 'm1' }, { after: 9 }))).toBe('event_not_found');
    // the processor saw the history before each call
    const last = (await c.call(T, { id: 'm1' }, {})).response;
    expect(last).toEqual({ history: [1, 2, 3, 4, 5] });
    expect(await codeOf(c.start(T, 'm1', {}))).toBe('machine_already_exists');
    expect(await codeOf(c.call(T, { id: 'nope' }, {}))).toBe('machine_not_found');
    // the processor got a traceparent and a deadline
    const req = proc.seen[proc.seen.length - 1]!;
    expect(req.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(Date.parse(String(req.headers['x-request-deadline']))).toBeGreaterThan(Date.now());
  });

  it('init failure leaves a failed machine; repair and simple-repair bring it back', async () => {
    expect(await codeOf(c.start(T, 'f1', { fail: 'http500' }))).toBe('machine_failed');
    const g = await c.get(T, { id: 'f1' });
    expect(g.status).toBe('failed');
    expect(g.reason).toMatchObject({ code: 'processor_error', status: 500 });
    expect(await codeOf(c.call(T, { id: 'f1' }, {}))).toBe('machine_failed');
    expect(await codeOf(c.repair(T, { id: 'f1' }, { refuse: true }))).toBe('repair_failed');
    expect((await c.get(T, { id: 'f1' })).status).toBe('failed');
    expect((await c.repair(T, { id: 'f1' }, {})).response).toBe('repaired');
    const after = await c.get(T, { id: 'f1' });
    expect(after.status).toBe('working');
    expect(after.history.map((e) => e.data)).toEqual([{ repaired: true }]);
    expect(await codeOf(c.repair(T, { id: 'f1' }, {}))).toBe('machine_already_working');
    expect(await codeOf(c.simpleRepair(T, { id: 'f1' }))).toBe('machine_already_working');

    // a bad result shape fails a working machine; simple-repair resumes it with its timer
    await c.call(T, { id: 'f1' }, { timer: { set: { timeout: 0.2 } } });
    expect(await codeOf(c.call(T, { id: 'f1' }, { fail: 'bad_shape' }))).toBe('machine_failed');
    expect((await c.get(T, { id: 'f1' })).reason).toMatchObject({ code: 'bad_processor_result' });
    await new Promise((r) => setTimeout(r, 400));
    expect((await c.get(T, { id: 'f1' })).history.some((e) => (e.data as { fired?: number }).fired)).toBe(false);
    await c.simpleRepair(T, { id: 'f1' });
    await waitFor(
      async () => (await c.get(T, { id: 'f1' })).history.some((e) => (e.data as { fired?: number }).fired),
      10_000,
      'resumed timer',
    );
  });

  it('timers: set, fire, re-set inside the handler, unset', async () => {
    await c.start(T, 'tm', { aux: { rearm: 3 }, timer: { set: { timeout: 0.05 } } });
    const g = await waitFor(
      async () => {
        const v = await c.get(T, { id: 'tm' });
        return v.history.length >= 3 && v.timer === null ? v : null;
      },
      15_000,
      'three firings',
    );
    expect(g.history.map((e) => e.data)).toEqual([{ fired: 1 }, { fired: 2 }, { fired: 3 }]);

    await c.start(T, 'tu', { timer: { set: { timeout: 1 } } });
    expect((await c.get(T, { id: 'tu' })).timer).not.toBeNull();
    await c.call(T, { id: 'tu' }, { timer: 'unset' });
    expect((await c.get(T, { id: 'tu' })).timer).toBeNull();
    await new Promise((r) => setTimeout(r, 1300));
    expect((await c.get(T, { id: 'tu' })).history).toEqual([]);

    const deadline = new Date(Date.now() + 100).toISOString();
    await c.start(T, 'td', { timer: { set: { deadline } } });
    await waitFor(async () => (await c.get(T, { id: 'td' })).history.length === 1, 10_000, 'deadline timer');
  });

  it('tags: set, reach by tag, collision fails the asker only', async () => {
    await c.start(T, 'tag1', { tag: 'order-7', events: [{ x: 1 }] });
    expect((await c.get(T, { tag: 'order-7' })).id).toBe('tag1');
    await c.call(T, { tag: 'order-7' }, { events: [{ x: 2 }] });
    expect((await c.get(T, { id: 'tag1' })).history.length).toBe(2);
    await c.start(T, 'tag2', {});
    expect(await codeOf(c.call(T, { id: 'tag2' }, { tag: 'order-7' }))).toBe('machine_failed');
    const t2 = await c.get(T, { id: 'tag2' });
    expect(t2.status).toBe('failed');
    expect(t2.reason).toMatchObject({ code: 'tag_already_taken' });
    expect((await c.get(T, { tag: 'order-7' })).id).toBe('tag1');
    expect((await c.get(T, { id: 'tag1' })).status).toBe('working');
    expect(await codeOf(c.get(T, { tag: 'unknown' }))).toBe('machine_not_found');
    // removal frees the tag
    await c.remove(T, { tag: 'order-7' });
    expect(await codeOf(c.get(T, { tag: 'order-7' }))).toBe('machine_not_found');
    await c.start(T, 'tag3', { tag: 'order-7' });
    expect((await c.get(T, { tag: 'order-7' })).id).toBe('tag3');
  });

  it('notifications arrive in order, also after a processor outage', async () => {
    await c.start(T, 'n1', {});
    for (let i = 1; i <= 3; i++) expect((await c.notify(T, { id: 'n1' }, { i })).id).toBeGreaterThan(0);
    await waitFor(async () => (await c.get(T, { id: 'n1' })).history.length === 3, 10_000, 'notifications');
    proc.mode = 'down';
    try {
      for (let i = 4; i <= 6; i++) await c.notify(T, { id: 'n1' }, { i });
      await waitFor(
        () =>
          proc.count((r) => r.body.signal?.type === 'notification' && (r.body.signal.args as { i: number }).i === 4) >=
          2,
        10_000,
        'retries',
      );
      expect((await c.get(T, { id: 'n1' })).history.length).toBe(3);
    } finally {
      proc.mode = 'up';
    }
    const g = await waitFor(
      async () => {
        const v = await c.get(T, { id: 'n1' });
        return v.history.length === 6 ? v : null;
      },
      10_000,
      'delivery after outage',
    );
    expect(g.history.map((e) => (e.data as { notified: { i: number } }).notified.i)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await codeOf(c.notify(T, { id: 'ghost' }, {}))).toBe('machine_not_found');
  });

  it('removal drops history, timer and notifications; the id starts afresh', async () => {
    await c.start(T, 'rm', { events: [{ a: 1 }, { a: 2 }], timer: { set: { timeout: 0.3 } }, tag: 'rm-tag' });
    await c.remove(T, { id: 'rm' });
    expect(await codeOf(c.get(T, { id: 'rm' }))).toBe('machine_not_found');
    expect(await codeOf(c.remove(T, { id: 'rm' }))).toBe('machine_not_found');
    expect(await codeOf(c.call(T, { id: 'rm' }, {}))).toBe('machine_not_found');
    await c.start(T, 'rm', { events: [{ b: 1 }] });
    const g = await c.get(T, { id: 'rm' });
    expect(g.history.map((e) => [e.id, e.data])).toEqual([[1, { b: 1 }]]);
    expect(g.tags).toEqual([]);
    await new Promise((r) => setTimeout(r, 500));
    expect((await c.get(T, { id: 'rm' })).history.length).toBe(1);
    // removal through the processor's action
    await c.call(T, { id: 'rm' }, { remove: true });
    expect(await codeOf(c.get(T, { id: 'rm' }))).toBe('machine_not_found');
  });

  it('deadlines: passed before processing, and spent during it', async () => {
    await c.start(T, 'dl', {});
    const before = proc.seen.length;
    expect(await codeOf(c.call(T, { id: 'dl' }, { events: [1] }, { deadline: new Date(Date.now() - 1000) }))).toBe(
      'deadline_exceeded',
    );
    expect(proc.seen.length).toBe(before);
    expect(await codeOf(c.call(T, { id: 'dl' }, { events: [1], sleep_ms: 1000 }, { timeoutMs: 200 }))).toBe(
      'deadline_exceeded',
    );
    await new Promise((r) => setTimeout(r, 1000));
    const g = await c.get(T, { id: 'dl' });
    expect(g.status).toBe('working');
    expect(g.history).toEqual([]);
  });

  it('a request queued behind a running step is answered at its own deadline, and writes nothing', async () => {
    await c.start(T, 'qd', {});
    const seenBefore = proc.seen.length;
    let firstDone = false;
    const first = c.call(T, { id: 'qd' }, { events: ['first'], sleep_ms: 3000 }).finally(() => (firstDone = true));
    await waitFor(async () => proc.seen.length > seenBefore, 10_000, 'first step at the processor');
    expect(await codeOf(c.call(T, { id: 'qd' }, { events: ['queued'] }, { timeoutMs: 300 }))).toBe('deadline_exceeded');
    // answered while the first step still held the machine
    expect(firstDone).toBe(false);
    await first;
    expect(proc.seen.length).toBe(seenBefore + 1);
    expect((await c.get(T, { id: 'qd' })).history.map((e) => e.data)).toEqual(['first']);
  });

  it('processor outage: 503 with the machine unchanged, then success', async () => {
    await c.start(T, 'out', { events: ['a'] });
    proc.mode = 'down';
    try {
      const e = await c.call(T, { id: 'out' }, { events: ['b'] }, { timeoutMs: 300 }).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(MillraceError);
      expect((e as MillraceError).code).toBe('unavailable');
      expect((e as MillraceError).retryAfterS).toBeGreaterThanOrEqual(1);
      expect(await codeOf(c.start(T, 'out2', {}, { timeoutMs: 300 }))).toBe('unavailable');
    } finally {
      proc.mode = 'up';
    }
    const g = await c.get(T, { id: 'out' });
    expect(g.status).toBe('working');
    expect(g.history.map((x) => x.data)).toEqual(['a']);
    expect(await codeOf(c.get(T, { id: 'out2' }))).toBe('machine_not_found');
    await c.call(T, { id: 'out' }, { events: ['b'] });
    await c.start(T, 'out2', {});
    expect((await c.get(T, { id: 'out' })).history.map((x) => x.data)).toEqual(['a', 'b']);
  });

  it('the sink serves machine events of its namespaces in log order with the chain hash', async () => {
    await c.start(T, 'sk', { events: [{ s: 1 }, { s: 2 }] });
    await c.start('other', 'sk', { events: [{ o: 1 }] });
    const page = await waitFor(async () => {
      const p = await c.sinkEvents('main', { limit: 10_000 });
      return p.events.some((e) => e.machineId === 'sk' && e.eventId === 2) ? p : null;
    });
    expect(page.events.every((e) => e.ns === 't')).toBe(true);
    const sk = page.events.filter((e) => e.machineId === 'sk');
    expect(sk.map((e) => [e.eventId, e.data])).toEqual([
      [1, { s: 1 }],
      [2, { s: 2 }],
    ]);
    const pos = page.events.map((e) => e.pos);
    expect([...pos].sort((a, b) => a - b)).toEqual(pos);
    expect(sk[0]!.hash).toMatch(/^[0-9a-f]{64}$/);
    // long poll wakes on a new event
    const waiting = c.sinkEvents('main', { after: page.nextAfter, waitMs: 10_000 });
    await c.call(T, { id: 'sk' }, { events: [{ s: 3 }] });
    const next = await waiting;
    expect(next.events.map((e) => e.data)).toEqual([{ s: 3 }]);
    expect(await codeOf(c.sinkEvents('nope'))).toBe('sink_not_found');
    const v = await verifyShard(node.runtime.storage.shard('s0'));
    expect(v.ok).toBe(true);
  });

  it('overload: a flood gets some 503s, and every accepted call is done exactly once', async () => {
    await c.start(T, 'flood', {});
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        c.call(T, { id: 'flood' }, { events: [{ i }] }).then(
          () => ({ i, ok: true as const }),
          (e: unknown) => ({ i, ok: false as const, code: (e as MillraceError).code }),
        ),
      ),
    );
    const ok = results.filter((r) => r.ok).map((r) => r.i);
    const refused = results.filter((r) => !r.ok);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((r) => !r.ok && r.code === 'unavailable')).toBe(true);
    const g = await c.get(T, { id: 'flood' });
    const done = g.history.map((e) => (e.data as { i: number }).i);
    expect([...done].sort((a, b) => a - b)).toEqual([...ok].sort((a, b) => a - b));
  });

  it('bad input answers 4xx with a code and writes nothing', async () => {
    const head = await node.runtime.log.headPos('s0');
    const post = (
      path: string,
      body: string,
      headers: Record<string, string> = { 'content-type': 'application/json' },
    ) => fetch(`${node.url}${path}`, { method: 'POST', headers, body });
    const cases: Array<[Promise<Response>, number, string]> = [
      [post('/v1/namespaces/nope/machines/x/start', '{}'), 404, 'namespace_not_found'],
      [post('/v1/namespaces/t/machines/x/start', '{bad json'), 400, 'bad_json'],
      [post('/v1/namespaces/t/machines/x/start', '{"args":1,"extra":2}'), 400, 'bad_request'],
      [post('/v1/namespaces/t/machines/x/start', '[]'), 400, 'bad_request'],
      [post('/v1/namespaces/t/machines/%01bad/start', '{}'), 400, 'bad_request'],
      [
        post('/v1/namespaces/t/machines/x/start', '{}', {
          'content-type': 'application/json',
          'x-request-timeout': 'soon',
        }),
        400,
        'bad_request',
      ],
      [
        post('/v1/namespaces/t/machines/x/start', '{}', {
          'content-type': 'application/json',
          'x-request-deadline': 'tomorrow',
        }),
        400,
        'bad_request',
      ],
      [post('/v1/namespaces/t/machines/x/simple-repair', '{"args":1}'), 400, 'bad_request'],
      [fetch(`${node.url}/v1/namespaces/t/machines/m1?limit=abc`), 400, 'bad_request'],
      [fetch(`${node.url}/v1/namespaces/t/machines/m1?direction=sideways`), 400, 'bad_request'],
      [fetch(`${node.url}/v1/namespaces/t/machines/m1?after=0`), 400, 'bad_request'],
      [fetch(`${node.url}/v1/namespaces/t/machines/m1?extra=1`), 400, 'bad_request'],
      [fetch(`${node.url}/v1/namespaces/nope/machines/m1`), 404, 'namespace_not_found'],
      [fetch(`${node.url}/v1/sinks/main/events?after=-1`), 400, 'bad_request'],
    ];
    for (const [p, status, code] of cases) {
      const res = await p;
      const body = (await res.json()) as { error: { code: string } };
      expect([res.status, body.error.code]).toEqual([status, code]);
    }
    // over-long ids are refused by the router (414) before anything runs
    expect((await post(`/v1/namespaces/t/machines/${'x'.repeat(101)}/start`, '{}')).status).toBe(414);
    expect(await codeOf(c.get(T, { id: 'x' }))).toBe('machine_not_found');
    expect(await node.runtime.log.headPos('s0')).toBe(head);
  });
});
