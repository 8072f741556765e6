import { afterEach, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { ManualClock } from '../../src/core/clock.js';
import { isMillraceError } from '../../src/core/errors.js';
import { MachinesFace } from '../../src/machines/face.js';
import { OpsFace } from '../../src/ops/face.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { countAll } from './support.js';

describe.each(DIALECTS)('bulk jobs on machines (%s)', (dialect) => {
  const envs: TestEnv[] = [];
  const rts: Runtime[] = [];
  afterEach(async () => {
    // Teardown: a runtime that fails to close has failed its test already.
    for (const rt of rts.splice(0)) await rt.close().catch(() => {});
    for (const e of envs.splice(0)) await e.cleanup();
  });

  const calls: string[] = [];
  const fn: ProcessorFn = (req) => {
    const id = (req.machine as { id: string }).id;
    calls.push(`${req.kind}:${id}`);
    if (req.kind === 'call' && typeof req.args === 'string') throw new Error(req.args);
    return { response: req.kind, events: [{ kind: req.kind }] };
  };

  /** Eight machines: f1-f3 failed with E1, f4-f5 failed with E2, w1-w3 working (w1 tagged). */
  async function node() {
    const env = await createTestEnv(dialect, {
      shards: 2,
      extra: { machines: { namespaces: { ns: { processor: { in_process: 'fn' } } } } } as never,
    });
    envs.push(env);
    const clock = new ManualClock(Date.parse('2026-03-01T00:00:00Z'));
    const rt = await Runtime.open(env.config, { background: false, clock });
    rts.push(rt);
    const mf = new MachinesFace(rt, { processors: new Map([['fn', fn]]) });
    const ops = new OpsFace(rt, [mf]);
    await ops.start();
    const m = mf.machines;
    for (const id of ['f1', 'f2', 'f3', 'f4', 'f5', 'w1', 'w2', 'w3']) await m.start('ns', id, null);
    // These calls fail on purpose: the test needs failed machines, and checks their errors through the bulk API below.
    for (const id of ['f1', 'f2', 'f3']) await m.call('ns', { id }, 'E1 disk full').catch(() => {});
    for (const id of ['f4', 'f5']) await m.call('ns', { id }, 'E2 timeout').catch(() => {});
    calls.length = 0;
    return { rt, clock, ops, m };
  }

  async function step(rt: Runtime, clock: ManualClock): Promise<void> {
    clock.advance(1000);
    for (let i = 0; i < 5; i++) if ((await rt.scheduler.tick()) === 0) break;
  }

  it('counts matches on a dry run, then repairs each match once at the given rate', async () => {
    const { rt, clock, ops, m } = await node();
    const spec = {
      filter: { status: 'failed', reason_contains: 'E1' },
      action: { op: 'simple_repair' },
      rate_per_s: 2,
    };
    expect(await ops.bulk.startMachines('ns', { ...spec, dry_run: true })).toEqual({ dry_run: true, matched: 3 });
    expect(await countAll(rt, 'SELECT count(*) AS n FROM bulk_jobs')).toBe(0);
    const job = await ops.bulk.startMachines('ns', spec);
    if ('dry_run' in job) throw new Error('not a job');
    expect(job).toMatchObject({ status: 'running', total: 3, matched: 0, progress: 0 });
    await rt.scheduler.tick();
    const mid = await ops.bulk.get(job.id);
    // At most rate_per_s machines in a step: two of three so far.
    expect(mid).toMatchObject({ status: 'running', matched: 2, succeeded: 2 });
    expect(mid.progress).toBeCloseTo(2 / 3);
    await step(rt, clock);
    await step(rt, clock);
    const done = await ops.bulk.get(job.id);
    expect(done).toMatchObject({ status: 'done', total: 3, matched: 3, succeeded: 3, failed: 0, progress: 1 });
    for (const id of ['f1', 'f2', 'f3']) expect((await m.get('ns', { id })).status).toBe('working');
    for (const id of ['f4', 'f5']) expect((await m.get('ns', { id })).status).toBe('failed');
    expect((await ops.bulk.list()).items.map((j) => j.id)).toEqual([job.id]);
    expect(await rt.metrics.getSingleMetricAsString('millrace_bulk_targets_total')).toContain(
      'millrace_bulk_targets_total{outcome="succeeded"} 3',
    );
  });

  it('filters by id prefix and reason code; notifies; records errors', async () => {
    const { rt, clock, ops } = await node();
    expect(
      await ops.bulk.startMachines('ns', {
        filter: { reason_code: 'processor_error' },
        action: { op: 'remove' },
        dry_run: true,
      }),
    ).toEqual({ dry_run: true, matched: 5 });
    expect(
      await ops.bulk.startMachines('ns', { filter: { id_prefix: 'w' }, action: { op: 'notify' }, dry_run: true }),
    ).toEqual({ dry_run: true, matched: 3 });
    expect(
      await ops.bulk.startMachines('ns', {
        filter: { updated_after: '2030-01-01T00:00:00Z' },
        action: { op: 'remove' },
        dry_run: true,
      }),
    ).toEqual({ dry_run: true, matched: 0 });
    // Repairing working machines fails for each: the errors are kept on the job.
    const job = await ops.bulk.startMachines('ns', {
      filter: { id_prefix: 'w' },
      action: { op: 'repair', args: { fix: true } },
      rate_per_s: 10,
    });
    if ('dry_run' in job) throw new Error('not a job');
    await step(rt, clock);
    const done = await ops.bulk.get(job.id);
    expect(done).toMatchObject({ status: 'done', matched: 3, succeeded: 0, failed: 3 });
    expect(done.errors.map((e) => [e.item, e.code])).toEqual([
      ['w1', 'machine_already_working'],
      ['w2', 'machine_already_working'],
      ['w3', 'machine_already_working'],
    ]);
  });

  it('refuses bad input with a typed error and writes nothing', async () => {
    const { rt, ops } = await node();
    const bad: unknown[] = [
      { action: { op: 'explode' } },
      { filter: { status: 'sleeping' }, action: { op: 'remove' } },
      { filter: { updated_before: 'yesterday' }, action: { op: 'remove' } },
      { action: { op: 'remove' }, rate_per_s: 0 },
      { action: { op: 'remove' }, extra: 1 },
      {},
    ];
    for (const b of bad)
      expect(
        isMillraceError(await ops.bulk.startMachines('ns', b).catch((e: unknown) => e), 'bad_request'),
        JSON.stringify(b),
      ).toBe(true);
    expect(
      isMillraceError(
        await ops.bulk.startMachines('nope', { action: { op: 'remove' } }).catch((e: unknown) => e),
        'namespace_not_found',
      ),
    ).toBe(true);
    expect(isMillraceError(await ops.bulk.get('missing').catch((e: unknown) => e), 'bulk_job_not_found')).toBe(true);
    expect(isMillraceError(await ops.bulk.cancel('missing').catch((e: unknown) => e), 'bulk_job_not_found')).toBe(true);
    expect(
      isMillraceError(
        await ops.bulk.startDeadLetters({ action: { op: 'redrive' } }).catch((e: unknown) => e),
        'bad_request',
      ),
    ).toBe(true);
    expect(await countAll(rt, 'SELECT count(*) AS n FROM bulk_jobs')).toBe(0);
  });

  it('cancels: nothing is acted on after the answer; a finished job cannot be cancelled', async () => {
    const { rt, clock, ops, m } = await node();
    const job = await ops.bulk.startMachines('ns', {
      filter: { status: 'failed' },
      action: { op: 'remove' },
      rate_per_s: 1,
    });
    if ('dry_run' in job) throw new Error('not a job');
    await rt.scheduler.tick();
    const cancelled = await ops.bulk.cancel(job.id);
    expect(cancelled).toMatchObject({ status: 'cancelled', matched: 1, succeeded: 1 });
    await step(rt, clock);
    await step(rt, clock);
    expect(await ops.bulk.get(job.id)).toMatchObject({ status: 'cancelled', matched: 1 });
    expect((await m.list('ns', { status: 'failed' })).items.length).toBe(4);
    expect(isMillraceError(await ops.bulk.cancel(job.id).catch((e: unknown) => e), 'bulk_job_finished')).toBe(true);
  });

  it('resumed after a crash, never acts twice on a machine whose outcome was lost', async () => {
    const { rt, clock, ops, m } = await node();
    const job = await ops.bulk.startMachines('ns', {
      filter: { status: 'failed' },
      action: { op: 'simple_repair' },
      rate_per_s: 10,
    });
    if ('dry_run' in job) throw new Error('not a job');
    // As a node that died after marking f2 started and before storing its outcome leaves it.
    const home = rt.storage.shardFor(['bulk', job.id]);
    await home.write((tx) =>
      tx.run(`INSERT INTO bulk_job_items (job, item, status) VALUES (?, 'f2', 'started')`, [job.id]),
    );
    await step(rt, clock);
    const done = await ops.bulk.get(job.id);
    expect(done).toMatchObject({ status: 'done', matched: 5, succeeded: 4, failed: 1 });
    expect(done.errors).toEqual([{ item: 'f2', code: 'interrupted', message: expect.any(String) }]);
    // Not repaired by the resumed job: its outcome was lost, so it is not acted on again.
    expect((await m.get('ns', { id: 'f2' })).status).toBe('failed');
    expect((await m.get('ns', { id: 'f1' })).status).toBe('working');
  });
});

describe.each(DIALECTS)('bulk jobs on pipe dead letters (%s)', (dialect) => {
  it('counts, then redrives the dead letters a filter matches, and deletes the others', async () => {
    const { HandlerServer } = await import('../pipe/support.js');
    const { PipeFace } = await import('../../src/pipe/face.js');
    const handler = new HandlerServer();
    const url = await handler.start();
    const env = await createTestEnv(dialect, {
      extra: {
        pipe: {
          store_jitter_s: 0,
          kinds: {
            jobs: {
              handler: `${url}/jobs`,
              max_repeats: 1,
              default_delay_s: 0.02,
              retry_base_s: 0.01,
              retry_max_s: 0.02,
            },
          },
        },
      } as never,
    });
    const rt = await Runtime.open(env.config);
    try {
      const pf = new PipeFace(rt);
      const ops = new OpsFace(rt, [pf]);
      for (const f of [pf, ops]) await f.start();
      const pipe = pf.pipe;
      let failing = true;
      handler.behaviours.set('/jobs', () => (failing ? 500 : 200));
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const id = await pipe.create('jobs');
        await pipe.append(id, Buffer.from(`r${i}`));
        await pipe.store(id, 0.02);
        ids.push(id);
      }
      const deadline = Date.now() + 20_000;
      while ((await pipe.listDead({ kind: 'jobs' })).length < 4) {
        if (Date.now() > deadline) throw new Error('sessions did not die');
        await new Promise((r) => setTimeout(r, 50));
      }
      failing = false;
      const [first, ...rest] = [...ids].sort();
      const pushesBefore = handler.of(first!).length;
      const dry = await ops.bulk.startDeadLetters({
        filter: { kind: 'jobs', id_prefix: first },
        action: { op: 'redrive' },
        dry_run: true,
      });
      expect(dry).toEqual({ dry_run: true, matched: 1 });
      const job = await ops.bulk.startDeadLetters({
        filter: { kind: 'jobs', id_prefix: first },
        action: { op: 'redrive' },
      });
      if ('dry_run' in job) throw new Error('not a job');
      const wait = async (id: string) => {
        const end = Date.now() + 20_000;
        for (;;) {
          const j = await ops.bulk.get(id);
          if (j.status === 'done') return j;
          if (Date.now() > end) throw new Error(`job not done: ${JSON.stringify(j)}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      expect(await wait(job.id)).toMatchObject({ matched: 1, succeeded: 1, failed: 0 });
      const pushed = Date.now() + 20_000;
      // Redriven: pushed again (and answered 200 this time).
      while (handler.of(first!).length <= pushesBefore) {
        if (Date.now() > pushed) throw new Error('redriven session not pushed');
        await new Promise((r) => setTimeout(r, 50));
      }
      const del = await ops.bulk.startDeadLetters({ filter: { kind: 'jobs' }, action: { op: 'delete' } });
      if ('dry_run' in del) throw new Error('not a job');
      expect(await wait(del.id)).toMatchObject({ total: 3, matched: 3, succeeded: 3 });
      expect((await pipe.listDead({ kind: 'jobs' })).map((d) => d.id)).toEqual([]);
      expect(rest.length).toBe(3);
    } finally {
      await rt.close();
      await handler.close();
      await env.cleanup();
    }
  });
});
