import { afterEach, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { isMillraceError, type MillraceError } from '../../src/core/errors.js';
import { MachinesFace } from '../../src/machines/face.js';
import { BusFace } from '../../src/bus/face.js';
import { OpsFace } from '../../src/ops/face.js';
import { PipeFace } from '../../src/pipe/face.js';
import { HandlerServer } from '../pipe/support.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { countAll } from './support.js';

async function waitUntil(cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.each(DIALECTS)('pause and resume (%s)', (dialect) => {
  const envs: TestEnv[] = [];
  const rts: Runtime[] = [];
  afterEach(async () => {
    // Teardown: a runtime that fails to close has failed its test already.
    for (const rt of rts.splice(0)) await rt.close().catch(() => {});
    for (const e of envs.splice(0)) await e.cleanup();
  });

  const fn: ProcessorFn = (req) => ({
    response: req.kind,
    events: [{ kind: req.kind, args: 'args' in req ? (req.args ?? null) : req.kind === 'signal' ? req.signal : null }],
  });

  async function env(): Promise<TestEnv> {
    const e = await createTestEnv(dialect, {
      extra: {
        machines: {
          namespaces: {
            refusing: { processor: { in_process: 'fn' } },
            queueing: { processor: { in_process: 'fn' }, pause: { calls: 'queue', queue_limit: 1 } },
          },
        },
        bus: { topics: ['orders'] },
      } as never,
    });
    envs.push(e);
    return e;
  }

  async function node(e: TestEnv) {
    const rt = await Runtime.open(e.config);
    rts.push(rt);
    const mf = new MachinesFace(rt, { processors: new Map([['fn', fn]]) });
    const bf = new BusFace(rt);
    const ops = new OpsFace(rt, [mf, bf]);
    for (const f of [mf, bf, ops]) await f.start();
    return { rt, m: mf.machines, bus: bf.bus, ops };
  }

  it('a paused namespace refuses calls with a retryable code; notifications wait for the resume; the state survives a restart', async () => {
    const e = await env();
    const { rt, m, ops } = await node(e);
    await m.start('refusing', 'a', null);
    const info = await ops.pauses.pause('namespace', 'refusing', { reason: 'maintenance' });
    expect(info).toMatchObject({ kind: 'namespace', name: 'refusing', reason: 'maintenance' });
    const refused = await m.call('refusing', { id: 'a' }, 1).catch((err: unknown) => err);
    expect(isMillraceError(refused, 'paused')).toBe(true);
    expect((refused as MillraceError).retryable).toBe(true);
    expect((refused as MillraceError).httpStatus).toBe(503);
    await m.notify('refusing', { id: 'a' }, { n: 1 });
    const view = await m.get('refusing', { id: 'a' });
    expect(view.paused).toBe(true);
    expect(view.history.length).toBe(1);

    // Restart: still paused, and the notification still waits.
    await rt.close();
    rts.splice(rts.indexOf(rt), 1);
    const again = await node(e);
    expect(again.ops.pauses.list().map((p) => [p.kind, p.name])).toEqual([['namespace', 'refusing']]);
    expect(isMillraceError(await again.m.call('refusing', { id: 'a' }, 1).catch((err: unknown) => err), 'paused')).toBe(
      true,
    );
    // Another namespace is not affected.
    await again.m.start('queueing', 'other', null);
    expect((await again.m.call('queueing', { id: 'other' }, 1)).response).toBe('call');
    await new Promise((r) => setTimeout(r, 300));
    expect((await again.m.get('refusing', { id: 'a' })).history.length).toBe(1);

    expect(await again.ops.pauses.resume('namespace', 'refusing')).toEqual({
      kind: 'namespace',
      name: 'refusing',
      resumed: true,
    });
    await waitUntil(async () => (await again.m.get('refusing', { id: 'a' })).history.length === 2);
    expect((await again.m.call('refusing', { id: 'a' }, 2)).response).toBe('call');
    expect((await again.m.get('refusing', { id: 'a' })).paused).toBe(false);
  });

  it('queues calls to a paused machine up to the namespace limit, and runs them on resume', async () => {
    const { m, ops } = await node(await env());
    await m.start('queueing', 'q', null);
    await m.start('queueing', 'free', null);
    await ops.pauses.pause('machine', 'queueing', {}, 'q');
    const waiting = m.call('queueing', { id: 'q' }, 'first');
    // One waits already: the next is refused.
    await waitUntil(async () => {
      const e = await m
        .call('queueing', { id: 'q' }, 'second', { deadline: Date.now() + 50 })
        .catch((err: unknown) => err);
      return isMillraceError(e, 'paused_queue_full');
    });
    // A machine of the same namespace that is not paused runs.
    expect((await m.call('queueing', { id: 'free' }, 1)).response).toBe('call');
    expect((await m.get('queueing', { id: 'q' })).history.length).toBe(1);
    await ops.pauses.resume('machine', 'queueing', 'q');
    expect((await waiting).response).toBe('call');
    expect((await m.get('queueing', { id: 'q' })).history.map((h) => (h.data as { args: unknown }).args)).toEqual([
      { type: 'init', args: null },
      'first',
    ]);
  });

  it('a paused subscription stops delivering and keeps its position', async () => {
    const { bus, ops } = await node(await env());
    await bus.putSubscription('sub', { topics: ['orders'], start: 'earliest' });
    const got: Array<{ deliveryId: string; data: unknown }> = [];
    const session = await bus.open('sub', undefined, {
      deliver: (d) => got.push(d as never),
      closed: () => {},
      gap: () => {},
    });
    await bus.publish([{ topic: 'orders', key: 'k', type: 'created', data: { n: 1 } }]);
    await waitUntil(() => got.length === 1);
    session.ack([got[0]!.deliveryId]);
    await ops.pauses.pause('subscription', 'sub', {});
    expect((await bus.getSubscription('sub')).paused).toBe(true);
    await bus.publish([{ topic: 'orders', key: 'k', type: 'created', data: { n: 2 } }]);
    await new Promise((r) => setTimeout(r, 500));
    expect(got.length).toBe(1);
    await ops.pauses.resume('subscription', 'sub');
    await waitUntil(() => got.length === 2);
    const d = got[1]!.data;
    expect((typeof d === 'string' ? (JSON.parse(d) as { n: number }) : (d as { n: number })).n).toBe(2);
    expect((await bus.getSubscription('sub')).paused).toBe(false);
    await session.close(null);
  });

  it('refuses unknown targets and bad bodies with typed errors, writing nothing', async () => {
    const { rt, m, ops } = await node(await env());
    await m.start('refusing', 'a', null);
    const cases: Array<[() => Promise<unknown>, string]> = [
      [() => ops.pauses.pause('namespace', 'nope', {}), 'namespace_not_found'],
      [() => ops.pauses.pause('machine', 'refusing', {}, 'nope'), 'machine_not_found'],
      [() => ops.pauses.pause('subscription', 'nope', {}), 'subscription_not_found'],
      [() => ops.pauses.pause('pipe_kind', 'nope', {}), 'bad_request'],
      [() => ops.pauses.pause('exporter', 'nope', {}), 'exporter_not_found'],
      [() => ops.pauses.pause('namespace', 'refusing', { reason: 7 }), 'bad_request'],
      [() => ops.pauses.pause('namespace', 'refusing', { why: 'x' }), 'bad_request'],
      [() => ops.pauses.resume('namespace', 'nope'), 'namespace_not_found'],
    ];
    // Each call made only when awaited, so no refusal goes unhandled meanwhile.
    for (const [p, code] of cases) {
      const e = await p().catch((err: unknown) => err);
      expect(isMillraceError(e, code as never), `${code}: ${String(e)}`).toBe(true);
    }
    expect(await countAll(rt, 'SELECT count(*) AS n FROM catalog_definitions')).toBe(0);
    expect(await ops.pauses.resume('namespace', 'refusing')).toEqual({
      kind: 'namespace',
      name: 'refusing',
      resumed: false,
    });
  });
  it('a paused pipe kind stops pushing to its handler; writes go on; resume pushes', async () => {
    const handler = new HandlerServer();
    const url = await handler.start();
    try {
      const e = await createTestEnv(dialect, {
        extra: {
          pipe: {
            store_jitter_s: 0,
            kinds: { jobs: { handler: `${url}/jobs`, default_delay_s: 0.05, retry_base_s: 0.02, retry_max_s: 0.1 } },
          },
        } as never,
      });
      envs.push(e);
      const rt = await Runtime.open(e.config);
      rts.push(rt);
      const pf = new PipeFace(rt);
      const ops = new OpsFace(rt, [pf]);
      for (const f of [pf, ops]) await f.start();
      const pipe = pf.pipe;
      await ops.pauses.pause('pipe_kind', 'jobs', { reason: 'handler down for deploy' });
      const id = await pipe.create('jobs');
      await pipe.append(id, Buffer.from('one'));
      await pipe.store(id, 0.05);
      await new Promise((r) => setTimeout(r, 600));
      expect(handler.of(id)).toEqual([]);
      expect((await pipe.get(id)).state).toBe('stored');
      expect(await ops.pauses.resume('pipe_kind', 'jobs')).toEqual({ kind: 'pipe_kind', name: 'jobs', resumed: true });
      await waitUntil(() => handler.of(id).length === 1);
      expect(handler.of(id)[0]!.records).toEqual(['one']);
    } finally {
      await handler.close();
    }
  });
});
