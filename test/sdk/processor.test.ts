import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConflictError,
  defineProcessor,
  InvalidRequestError,
  MachinesClient,
  NotFoundError,
  ProcessorUnavailable,
  RepairFailed,
  UnavailableError,
} from '../../src/sdk/index.js';
import { waitFor } from '../support/env.js';
import { startSdkNode, type SdkNode } from './support.js';

type Ev = { n: number } | { fired: number } | { notified: unknown } | { repaired: true };
interface Aux {
  count: number;
}
interface Args {
  timerS?: number;
  unset?: boolean;
  boom?: boolean;
  flaky?: number;
  down?: boolean;
  wait?: boolean;
  remove?: boolean;
  refuse?: boolean;
  tag?: string;
}

const seen = {
  traceparents: [] as Array<string | undefined>,
  flakyTries: new Map<string, number>(),
  aborted: [] as string[],
  deadlines: [] as number[],
  kinds: [] as string[],
};

type Res = { count: number; history: number[] };
const proc = defineProcessor<{
  event: Ev;
  aux: Aux;
  init: { args: Args; response: Res };
  call: { args: Args; response: Res };
  notification: { args: unknown };
  repair: { args: Args | null; response: Res };
}>({
  init(args, ctx) {
    seen.kinds.push('init');
    if (args.timerS !== undefined) ctx.setTimer({ timeoutS: args.timerS });
    if (args.tag) ctx.tag(args.tag);
    return { events: [{ n: 1 }], aux: { count: 1 }, response: { count: 1, history: [] } };
  },
  async call(args, ctx) {
    seen.kinds.push('call');
    seen.traceparents.push(ctx.traceparent);
    seen.deadlines.push(ctx.deadline.getTime());
    if (args.boom) throw new Error('boom from the processor');
    if (args.down) throw new ProcessorUnavailable('dependency down');
    if (args.flaky) {
      const n = (seen.flakyTries.get(ctx.machine.id) ?? 0) + 1;
      seen.flakyTries.set(ctx.machine.id, n);
      if (n <= args.flaky) throw new ProcessorUnavailable(`try ${n}`);
    }
    if (args.wait) {
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
      seen.aborted.push(ctx.machine.id);
      throw new Error('gave up');
    }
    if (args.unset) ctx.unsetTimer();
    if (args.remove) ctx.remove();
    const count = ctx.machine.aux!.count + 1;
    return {
      events: [{ n: count }],
      aux: { count },
      response: { count, history: ctx.machine.history.map((e) => e.id) },
    };
  },
  timeout(ctx) {
    seen.kinds.push('timeout');
    const fired = ctx.machine.history.filter((e) => 'fired' in e.data).length + 1;
    return { events: [{ fired }] };
  },
  notification(args) {
    seen.kinds.push('notification');
    return { events: [{ notified: args }] };
  },
  repair(args, ctx) {
    seen.kinds.push('repair');
    if (args?.refuse) throw new RepairFailed({ why: 'not yet' });
    expect(ctx.machine.status).toBe('failed');
    return { events: [{ repaired: true }], response: { count: ctx.machine.aux!.count, history: [] } };
  },
});

describe('defineProcessor drives a machine over HTTP', () => {
  let n: SdkNode;
  let m: MachinesClient;
  beforeAll(async () => {
    n = await startSdkNode({ namespaces: ['p'] });
    n.router.routes.set('/machines/p', proc.handler);
    m = new MachinesClient(n.url);
  });
  afterAll(async () => n?.close());

  it('init, call with a response, typed history and aux, tags', async () => {
    expect((await m.start('p', 'a', { tag: 'tag-a' })).response).toEqual({ count: 1, history: [] });
    expect((await m.call('p', { id: 'a' }, {})).response).toEqual({ count: 2, history: [1] });
    expect((await m.call('p', { tag: 'tag-a' }, {})).response).toEqual({ count: 3, history: [1, 2] });
    const v = await m.get('p', { id: 'a' });
    expect(v.aux).toEqual({ count: 3 });
    expect(v.tags).toEqual(['tag-a']);
    expect(v.history.map((e) => e.data)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
  });

  it('passes the incoming traceparent (same trace) and the deadline to the step', async () => {
    await m.start('p', 'tp', {});
    const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const before = Date.now();
    await m.call('p', { id: 'tp' }, {}, { traceparent: `00-${trace}-00f067aa0ba902b7-01`, timeoutMs: 5000 });
    expect(seen.traceparents.at(-1)).toMatch(new RegExp(`^00-${trace}-[0-9a-f]{16}-01$`));
    expect(seen.deadlines.at(-1)).toBeGreaterThan(before);
  });

  it('a timer set by init fires the timeout step; unsetTimer clears a timer', async () => {
    await m.start('p', 't', { timerS: 0.05 });
    await waitFor(
      async () => (await m.get('p', { id: 't' })).history.some((e) => (e.data as { fired?: number }).fired === 1),
      10_000,
      'the timer',
    );
    expect((await m.get('p', { id: 't' })).timer).toBeNull();
    await m.start('p', 'u', { timerS: 3600 });
    expect((await m.get('p', { id: 'u' })).timer).not.toBeNull();
    await m.call('p', { id: 'u' }, { unset: true });
    expect((await m.get('p', { id: 'u' })).timer).toBeNull();
  });

  it('a notification reaches the notification step', async () => {
    await m.start('p', 'nt', {});
    await m.notify('p', { id: 'nt' }, { hello: 1 });
    await waitFor(
      async () => (await m.get('p', { id: 'nt' })).history.some((e) => 'notified' in (e.data as object)),
      10_000,
      'the notification',
    );
    expect((await m.get('p', { id: 'nt' })).history.at(-1)!.data).toEqual({ notified: { hello: 1 } });
  });

  it('ProcessorUnavailable is retried with backoff and leaves the machine unchanged until it succeeds', async () => {
    await m.start('p', 'f', {});
    expect((await m.call('p', { id: 'f' }, { flaky: 2 }, { timeoutMs: 10_000 })).response).toEqual({
      count: 2,
      history: [1],
    });
    expect(seen.flakyTries.get('f')).toBe(3);
    // Down past the deadline: 503 to the caller, nothing written, the machine still working.
    const err = await m.call('p', { id: 'f' }, { down: true }, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as UnavailableError).code).toBe('unavailable');
    const v = await m.get('p', { id: 'f' });
    expect(v.status).toBe('working');
    expect(v.history).toHaveLength(2);
  });

  it('the step signal aborts at the deadline', async () => {
    await m.start('p', 'w', {});
    const err = await m.call('p', { id: 'w' }, { wait: true }, { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    await waitFor(() => seen.aborted.includes('w'), 10_000, 'the abort');
    expect((await m.get('p', { id: 'w' })).status).toBe('working');
  });

  it('another error fails the machine; repair may refuse (repair_failed) and then succeed', async () => {
    await m.start('p', 'r', {});
    const err = await m.call('p', { id: 'r' }, { boom: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).code).toBe('machine_failed');
    const failed = await m.get('p', { id: 'r' });
    expect(failed.status).toBe('failed');
    expect(JSON.stringify(failed.reason)).toContain('boom from the processor');
    const refused = await m.repair('p', { id: 'r' }, { refuse: true }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(InvalidRequestError);
    expect((refused as InvalidRequestError).code).toBe('repair_failed');
    expect((refused as InvalidRequestError).httpStatus).toBe(422);
    expect((refused as InvalidRequestError).details).toEqual({ reason: { why: 'not yet' } });
    expect((await m.get('p', { id: 'r' })).status).toBe('failed');
    expect((await m.repair('p', { id: 'r' }, {})).response).toEqual({ count: 1, history: [] });
    const v = await m.get('p', { id: 'r' });
    expect(v.status).toBe('working');
    expect(v.history.at(-1)!.data).toEqual({ repaired: true });
  });

  it('remove() removes the machine', async () => {
    await m.start('p', 'x', {});
    await m.call('p', { id: 'x' }, { remove: true });
    const err = await m.get('p', { id: 'x' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect((err as NotFoundError).code).toBe('machine_not_found');
  });
});

describe('defineProcessor in process', () => {
  let n: SdkNode;
  let m: MachinesClient;
  beforeAll(async () => {
    n = await startSdkNode({ inProcess: new Map([['sdk-local', proc.inProcess]]) });
    m = new MachinesClient(n.url);
  });
  afterAll(async () => {
    await n?.close();
  });

  it('runs the same steps: calls, ProcessorUnavailable retried, other errors fail the machine, repair', async () => {
    expect((await m.start('sdk-local', 'a', {})).response).toEqual({ count: 1, history: [] });
    expect((await m.call('sdk-local', { id: 'a' }, { flaky: 1 })).response).toEqual({ count: 2, history: [1] });
    expect(seen.flakyTries.get('a')).toBe(2);
    expect((await refused(m.call('sdk-local', { id: 'a' }, { boom: true }))).code).toBe('machine_failed');
    expect((await refused(m.repair('sdk-local', { id: 'a' }, { refuse: true }))).code).toBe('repair_failed');
    await m.repair('sdk-local', { id: 'a' }, {});
    expect((await m.get('sdk-local', { id: 'a' })).status).toBe('working');
  });
});

async function refused(p: Promise<unknown>): Promise<{ code: string }> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof ConflictError || e instanceof InvalidRequestError))
    throw new Error(`expected a refusal, got ${String(e)}`);
  return e;
}

describe('defineProcessor as a fetch handler', () => {
  const machine = {
    ns: 'p',
    id: 'z',
    status: 'working',
    aux_state: { count: 4 },
    timer: null,
    tags: [],
    history: [{ id: 1, created_at: '2026-01-01T00:00:00Z', data: { n: 1 } }],
    history_range: { direction: 'forward' },
  };
  const post = (body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    proc.fetch(
      new Request('http://processor/', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      }),
    );

  it('answers a call with the protocol result', async () => {
    const res = await post({ kind: 'call', args: { timerS: 1, unset: true }, machine });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      response: { count: 5, history: [1] },
      events: [{ n: 5 }],
      aux_state: { count: 5 },
      action: { timer: 'unset' },
    });
  });

  it('maps ProcessorUnavailable to 503, other errors to 500, refusals of repair to repair_failed', async () => {
    expect((await post({ kind: 'call', args: { down: true }, machine })).status).toBe(503);
    const boom = await post({ kind: 'call', args: { boom: true }, machine });
    expect(boom.status).toBe(500);
    expect(((await boom.json()) as { error: { message: string } }).error.message).toBe('boom from the processor');
    const r = await post({ kind: 'repair', args: { refuse: true }, machine: { ...machine, status: 'failed' } });
    expect(await r.json()).toEqual({ repair_failed: { reason: { why: 'not yet' } } });
  });

  it('refuses a malformed request with 400 and a non-POST with 405', async () => {
    expect((await post('not json')).status).toBe(400);
    expect((await post({ kind: 'dance', machine })).status).toBe(400);
    expect((await post({ kind: 'call', args: {} })).status).toBe(400);
    expect((await proc.fetch(new Request('http://processor/'))).status).toBe(405);
  });
});
