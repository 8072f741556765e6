import { afterEach, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { ManualClock } from '../../src/core/clock.js';
import { isMillraceError } from '../../src/core/errors.js';
import { RetryTimer, type Timer, type TimerContext } from '../../src/scheduler/scheduler.js';
import { createTestEnv, DIALECTS, waitFor, type Dialect, type TestEnv } from '../support/env.js';

const LEASE_MS = 1000;
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 4000;

/** A promise with its resolver, to hold a handler mid-way. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

async function newEnv(dialect: Dialect, scheduler: Record<string, unknown> = {}): Promise<TestEnv> {
  return createTestEnv(dialect, {
    extra: {
      scheduler: {
        poll_ms: 50,
        lease_ms: LEASE_MS,
        retry_base_ms: RETRY_BASE_MS,
        retry_max_ms: RETRY_MAX_MS,
        ...scheduler,
      },
    } as Partial<ConfigInput>,
  });
}

/** Records a timer's effect only if this handler completed its version: the exactly-once pattern. */
async function effectOnce(rt: Runtime, timer: Timer, ctx: TimerContext): Promise<boolean> {
  return rt.storage.shard(timer.shard).write(async (tx) => {
    if (!(await ctx.completeIn(tx))) return false;
    await tx.run('INSERT INTO effects (owner, version) VALUES (?, ?)', [timer.owner, timer.version]);
    return true;
  });
}

async function effects(rt: Runtime): Promise<Array<{ owner: string; version: number }>> {
  return rt.storage.shard('s0').reader.all('SELECT owner, version FROM effects ORDER BY owner, version');
}

describe.each(DIALECTS)('scheduler (%s)', (dialect) => {
  const envs: TestEnv[] = [];
  const runtimes: Runtime[] = [];
  const gates: Array<() => void> = [];

  async function openRt(env: TestEnv, opts: Parameters<typeof Runtime.open>[1] = {}): Promise<Runtime> {
    const rt = await Runtime.open(env.config, opts);
    runtimes.push(rt);
    await rt.storage
      .shard('s0')
      .write((tx) => tx.run('CREATE TABLE IF NOT EXISTS effects (owner TEXT NOT NULL, version INTEGER NOT NULL)'));
    return rt;
  }

  /** A runtime without background loops on a manual clock: `tick()` is the only thing that fires timers. */
  async function manual(): Promise<{ rt: Runtime; clock: ManualClock }> {
    const env = await newEnv(dialect);
    envs.push(env);
    const clock = new ManualClock();
    return { rt: await openRt(env, { background: false, clock }), clock };
  }

  afterEach(async () => {
    for (const g of gates.splice(0)) g();
    for (const rt of runtimes.splice(0)) await rt.close();
    for (const env of envs.splice(0)) await env.cleanup();
  });

  it('schedules, replaces (bumping the version), reads and cancels timers', async () => {
    const { rt, clock } = await manual();
    const s = rt.scheduler;
    const now = clock.now();
    const t1 = await s.schedule('order/1', 'remind', now + 1000, { n: 1 });
    expect(t1.version).toBe(1);
    expect(await s.get('order/1')).toEqual({
      shard: 's0',
      id: t1.id,
      version: 1,
      owner: 'order/1',
      kind: 'remind',
      dueAt: now + 1000,
      payload: { n: 1 },
      attempts: 0,
    });
    const t2 = await s.schedule('order/1', 'expire', now + 2000, { n: 2 });
    expect(t2).toEqual({ id: t1.id, version: 2 });
    expect(await s.get('order/1')).toMatchObject({ version: 2, kind: 'expire', dueAt: now + 2000, payload: { n: 2 } });
    await s.schedule('order/2', 'remind', now + 500);
    expect((await s.get('order/2'))?.payload).toBeNull();
    expect(await s.get('order/none')).toBeNull();

    expect(await s.cancel('order/2')).toBe(true);
    expect(await s.cancel('order/2')).toBe(false);
    expect(await s.get('order/2')).toBeNull();

    const bad: Array<() => Promise<unknown>> = [
      () => s.schedule('', 'k', now),
      () => s.schedule('x'.repeat(513), 'k', now),
      () => s.schedule('o', 'k', Number.NaN),
      () => s.cancel(''),
    ];
    for (const f of bad) {
      const err = await Promise.resolve()
        .then(f)
        .catch((e: unknown) => e);
      expect(isMillraceError(err, 'bad_request'), String(err)).toBe(true);
    }

    // Only the current version fires, when due.
    const fired: Array<[string, number]> = [];
    s.register('expire', async (t) => void fired.push([t.owner, t.version]));
    s.register('remind', async (t) => void fired.push([t.owner, t.version]));
    expect(await s.tick()).toBe(0);
    clock.advance(1999);
    expect(await s.tick()).toBe(0);
    clock.advance(1);
    expect(await s.tick()).toBe(1);
    expect(fired).toEqual([['order/1', 2]]);
    expect(await s.get('order/1')).toBeNull();
    expect(await s.tick()).toBe(0);
  });

  it('a replaced version cannot complete: its completeIn returns false and the new version still fires', async () => {
    const { rt, clock } = await manual();
    const s = rt.scheduler;
    const hold = gate();
    gates.push(hold.open);
    const results: Array<[number, boolean]> = [];
    s.register('k', async (t, ctx) => {
      if (t.version === 1) await hold.promise;
      results.push([t.version, await effectOnce(rt, t, ctx)]);
    });
    await s.schedule('o', 'k', clock.now());
    const first = s.tick();
    await waitFor(async () => (await s.get('o'))?.attempts === 1, 10_000, 'version 1 to be claimed');
    expect(await s.schedule('o', 'k', clock.now() + 500, { v: 2 })).toMatchObject({ version: 2 });
    hold.open();
    expect(await first).toBe(1);
    expect(results).toEqual([[1, false]]);
    // The old firing neither deleted nor rescheduled the new version.
    expect(await s.get('o')).toMatchObject({ version: 2, dueAt: clock.now() + 500, attempts: 0 });
    clock.advance(500);
    expect(await s.tick()).toBe(1);
    expect(results).toEqual([
      [1, false],
      [2, true],
    ]);
    expect(await effects(rt)).toEqual([{ owner: 'o', version: 2 }]);
    expect(await s.get('o')).toBeNull();
  });

  it('rescheduleIn turns the firing version into the next timer, once; a replaced version cannot', async () => {
    const { rt, clock } = await manual();
    const s = rt.scheduler;
    const hold = gate();
    gates.push(hold.open);
    const seen: Array<[string, number, boolean]> = [];
    s.register('first', async (t, ctx) => {
      if (t.payload === 'held') await hold.promise;
      const ok = await rt.storage
        .shard(t.shard)
        .write((tx) => ctx.rescheduleIn(tx, 'second', clock.now() + 100, { from: t.version }));
      seen.push(['first', t.version, ok]);
    });
    s.register('second', async (t, ctx) => {
      seen.push(['second', t.version, await effectOnce(rt, t, ctx)]);
    });
    await s.schedule('r', 'first', clock.now());
    expect(await s.tick()).toBe(1);
    expect(await s.get('r')).toMatchObject({
      kind: 'second',
      version: 2,
      dueAt: clock.now() + 100,
      payload: { from: 1 },
      attempts: 0,
    });
    expect(await s.tick()).toBe(0);
    clock.advance(100);
    expect(await s.tick()).toBe(1);
    expect(seen).toEqual([
      ['first', 1, true],
      ['second', 2, true],
    ]);
    expect(await s.get('r')).toBeNull();

    // A version replaced while its handler runs cannot reschedule: the new one stands.
    await s.schedule('q', 'first', clock.now(), 'held');
    const firing = s.tick();
    await waitFor(async () => (await s.get('q'))?.attempts === 1, 10_000, 'the held version to be claimed');
    await s.schedule('q', 'first', clock.now() + 1000, 'new');
    hold.open();
    expect(await firing).toBe(1);
    expect(seen.at(-1)).toEqual(['first', 1, false]);
    expect(await s.get('q')).toMatchObject({ kind: 'first', version: 2, payload: 'new' });
  });

  it('periodic runs a job once per period, keeps one timer, and a second call replaces the job', async () => {
    const { rt, clock } = await manual();
    const s = rt.scheduler;
    const runs: string[] = [];
    await s.periodic('tidy', 1000, async () => void runs.push('first'), { firstInMs: 0 });
    expect(await s.tick()).toBe(1);
    expect(runs).toEqual(['first']);
    const next = await s.get('tidy');
    expect(next?.dueAt).toBe(clock.now() + 1000);
    expect(await s.tick()).toBe(0);
    // Started again over the same runtime: the new job runs, the timer is kept.
    await s.periodic('tidy', 1000, async () => void runs.push('second'));
    expect((await s.get('tidy'))?.version).toBe(next?.version);
    clock.advance(1000);
    expect(await s.tick()).toBe(1);
    expect(runs).toEqual(['first', 'second']);
    await expect(s.periodic('bad', 0, async () => {})).rejects.toThrow(/positive/);
    expect(await s.get('bad')).toBeNull();
  });

  it('retries a failing handler with exponential backoff, capped, counting attempts', async () => {
    const { rt, clock } = await manual();
    const s = rt.scheduler;
    const calls: number[] = [];
    s.register('flaky', async (t) => {
      calls.push(t.attempts);
      if (calls.length <= 4) throw new Error(`failure ${calls.length}`);
    });
    const failedBefore = s.stats.failed;
    await s.schedule('f', 'flaky', clock.now());
    const expectedDelays = [RETRY_BASE_MS, 2 * RETRY_BASE_MS, RETRY_MAX_MS, RETRY_MAX_MS];
    for (const [i, delay] of expectedDelays.entries()) {
      expect(await s.tick()).toBe(1);
      expect(await s.get('f')).toMatchObject({ attempts: i + 1, dueAt: clock.now() + delay, version: 1 });
      // Not before its time.
      clock.advance(delay - 1);
      expect(await s.tick()).toBe(0);
      clock.advance(1);
    }
    expect(await s.tick()).toBe(1);
    expect(calls).toEqual([1, 2, 3, 4, 5]);
    expect(s.stats.failed - failedBefore).toBe(4);
    expect(await s.get('f')).toBeNull();
  });

  it('RetryTimer fires again after its delay without counting as a failure', async () => {
    const { rt, clock } = await manual();
    const s = rt.scheduler;
    let calls = 0;
    s.register('later', async (t, ctx) => {
      calls++;
      if (calls <= 2) throw new RetryTimer(250);
      await effectOnce(rt, t, ctx);
    });
    const failedBefore = s.stats.failed;
    await s.schedule('r', 'later', clock.now());
    expect(await s.tick()).toBe(1);
    expect(await s.get('r')).toMatchObject({ dueAt: clock.now() + 250, attempts: 1 });
    expect(await s.tick()).toBe(0);
    clock.advance(250);
    expect(await s.tick()).toBe(1);
    clock.advance(249);
    expect(await s.tick()).toBe(0);
    clock.advance(1);
    expect(await s.tick()).toBe(1);
    expect(calls).toBe(3);
    expect(s.stats.failed).toBe(failedBefore);
    expect(await s.get('r')).toBeNull();
    expect(await effects(rt)).toEqual([{ owner: 'r', version: 1 }]);
  });

  it('completeIn lets exactly one of two overlapping firings act (lease expired mid-handler)', async () => {
    const { rt, clock } = await manual();
    const s = rt.scheduler;
    const hold = gate();
    gates.push(hold.open);
    const seen: Timer[] = [];
    const outcomes: boolean[] = [];
    s.register('slow', async (t, ctx) => {
      seen.push(t);
      await hold.promise;
      outcomes.push(await effectOnce(rt, t, ctx));
    });
    await s.schedule('x', 'slow', clock.now(), { p: 1 });
    const first = s.tick();
    await waitFor(() => seen.length === 1, 10_000, 'the first firing');
    // Still leased: nobody else may claim it.
    clock.advance(LEASE_MS - 1);
    expect(await s.tick()).toBe(0);
    // The lease runs out while the first handler is still busy: the timer fires again.
    clock.advance(1);
    const second = s.tick();
    await waitFor(() => seen.length === 2, 10_000, 'the second firing');
    expect(seen.map((t) => [t.id, t.version, t.attempts])).toEqual([
      [seen[0]!.id, 1, 1],
      [seen[0]!.id, 1, 2],
    ]);
    hold.open();
    expect(await first).toBe(1);
    expect(await second).toBe(1);
    expect(outcomes.sort()).toEqual([false, true]);
    expect(await effects(rt)).toEqual([{ owner: 'x', version: 1 }]);
    expect(await s.get('x')).toBeNull();
  });

  it('a timer that fell due while no node ran fires once a node starts', async () => {
    const env = await newEnv(dialect);
    envs.push(env);
    const down = await openRt(env, { background: false });
    await down.scheduler.schedule('past', 'wake', Date.now() - 60_000, { when: 'past' });
    await down.scheduler.schedule('soon', 'wake', Date.now() + 200, { when: 'soon' });
    await down.close();

    const rt = await openRt(env);
    const fired: Array<[string, unknown]> = [];
    rt.scheduler.register('wake', async (t, ctx) => {
      if (await effectOnce(rt, t, ctx)) fired.push([t.owner, t.payload]);
    });
    await waitFor(() => fired.length === 2, 15_000, 'both timers to fire');
    expect(fired.sort()).toEqual([
      ['past', { when: 'past' }],
      ['soon', { when: 'soon' }],
    ]);
    expect(await rt.scheduler.get('past')).toBeNull();
    expect(await rt.scheduler.get('soon')).toBeNull();
  });

  it('a timer claimed by a node that went down mid-handler fires when the node comes back', async () => {
    const env = await newEnv(dialect, { lease_ms: 60_000 });
    envs.push(env);
    const crashed = await openRt(env, { background: false });
    const hold = gate();
    gates.push(hold.open);
    let started = 0;
    crashed.scheduler.register('job', async () => {
      started++;
      await hold.promise;
    });
    await crashed.scheduler.schedule('j', 'job', Date.now() - 1);
    const stuck = crashed.scheduler.tick();
    await waitFor(() => started === 1, 10_000, 'the handler to start');
    await crashed.close();

    // Same node id, long lease: only recovery on start makes it fire now.
    const rt = await openRt(env);
    const fired: Timer[] = [];
    rt.scheduler.register('job', async (t, ctx) => {
      if (await effectOnce(rt, t, ctx)) fired.push(t);
    });
    await waitFor(() => fired.length === 1, 15_000, 'the recovered timer to fire');
    expect(fired[0]).toMatchObject({ owner: 'j', version: 1 });
    expect(fired[0]!.attempts).toBeGreaterThanOrEqual(2);
    // The old handler finishing late cannot complete or act again.
    hold.open();
    await stuck;
    expect(await effects(rt)).toEqual([{ owner: 'j', version: 1 }]);
    expect(await rt.scheduler.get('j')).toBeNull();
  });

  it.runIf(dialect === 'postgres')(
    'two nodes share a few hundred due timers; each version fires exactly once overall',
    async () => {
      const env = await newEnv(dialect, { lease_ms: 30_000, batch: 16 });
      envs.push(env);
      const a = await openRt(env);
      const other = await Runtime.open(
        buildConfig({ ...env.input, node_id: `${env.config.node_id}-b` } as ConfigInput),
      );
      runtimes.push(other);
      expect(other.config.node_id).not.toBe(a.config.node_id);

      const calls = new Map<string, string[]>();
      const acted: string[] = [];
      for (const node of [a, other]) {
        node.scheduler.register('tick', async (t, ctx) => {
          const key = `${t.id}:${t.version}`;
          calls.set(key, [...(calls.get(key) ?? []), node.config.node_id]);
          await new Promise((r) => setTimeout(r, 1 + (t.id % 4)));
          if (await effectOnce(node, t, ctx)) acted.push(key);
        });
      }
      const n = 300;
      const now = Date.now();
      const scheduled = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          (i % 2 ? a : other).scheduler.schedule(`owner/${i}`, 'tick', now - (i % 10)),
        ),
      );
      const keys = scheduled.map((t) => `${t.id}:${t.version}`).sort();
      await waitFor(
        async () =>
          acted.length === n && (await a.storage.shard('s0').reader.all('SELECT 1 FROM timers LIMIT 1')).length === 0,
        30_000,
        'every timer to fire',
      );
      // Stop both nodes so that no late firing can slip in after the check.
      for (const rt of runtimes.splice(0)) await rt.close();
      expect([...calls.keys()].sort()).toEqual(keys);
      const twice = [...calls].filter(([, nodes]) => nodes.length !== 1);
      expect(twice).toEqual([]);
      expect([...acted].sort()).toEqual(keys);
      const check = await Runtime.open(env.config, { background: false });
      runtimes.push(check);
      expect((await effects(check)).length).toBe(n);
      expect(new Set((await effects(check)).map((e) => e.owner)).size).toBe(n);
    },
  );
});
