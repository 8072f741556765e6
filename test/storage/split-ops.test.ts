import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';
import { MachinesFace } from '../../src/machines/face.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { OpsFace } from '../../src/ops/face.js';
import { Runtime } from '../../src/runtime.js';
import type { Shard } from '../../src/storage/storage.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { withSpare } from '../support/split.js';

const AT = '8';
const moves = (key: readonly string[]): boolean => sha1(shardKeyText(key)) >= parseHashBound(AT);

/** Retries a write refused while its range moves (the node routes the retry by the new table). */
async function retryMoved<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!isMillraceError(err, 'shard_moved') || i > 2000) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

interface Fire {
  schedule: string;
  fire_at: number;
  status: string;
  attempts: number;
}

const fires = async (shards: readonly Shard[]): Promise<Array<Fire & { shard: string }>> => {
  const out: Array<Fire & { shard: string }> = [];
  for (const s of shards)
    for (const f of await s.reader.all<Fire>('SELECT schedule, fire_at, status, attempts FROM schedule_fires'))
      out.push({ ...f, fire_at: Number(f.fire_at), attempts: Number(f.attempts), shard: s.name });
  return out;
};

describe.each(DIALECTS)('a shard split moves schedules and bulk jobs (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  let ops: OpsFace;
  let mf: MachinesFace;
  /** Every action a fire ran: `name@fire time`. */
  const acts: string[] = [];
  const fn: ProcessorFn = (req) => {
    const r = req as { kind: string; args?: unknown; signal?: { type: string; args?: unknown } };
    // A bulk job's notify arrives as a notification signal with the job's args.
    const args = (r.kind === 'signal' ? r.signal?.args : r.args) as { tag?: string } | null | undefined;
    return { response: null, events: [{ kind: r.kind, tag: args?.tag ?? null }] };
  };

  beforeAll(async () => {
    env = await createTestEnv(dialect, {
      shards: 2,
      extra: {
        machines: { namespaces: { p: { processor: { in_process: 'fn' }, retry: { base_ms: 5, max_ms: 20 } } } },
        scheduler: { poll_ms: 20 },
      } as never,
    });
    rt = await Runtime.open(buildConfig(withSpare(env)));
    mf = new MachinesFace(rt, { processors: new Map([['fn', fn]]) });
    await mf.start();
    ops = new OpsFace(rt, [mf], {
      afterAction: (name, fireAt) => {
        acts.push(`${name}@${fireAt}`);
        return Promise.resolve();
      },
    });
    await ops.start();
  });
  afterAll(async () => {
    await ops?.stop();
    await mf?.stop();
    await rt?.close();
    await env?.cleanup();
  });

  it('schedules fire on the owning shard without a double or a miss; a running bulk job acts on each machine once', async () => {
    const m = mf.machines;
    const names = Array.from({ length: 8 }, (_, i) => `tick-${i}`);
    expect(names.some((n) => moves(['schedule', n])) && names.some((n) => !moves(['schedule', n]))).toBe(true);
    for (const name of names)
      await ops.schedules.put(name, {
        spec: { every_ms: 1000 },
        catchup_window_ms: 60_000,
        overlap: 'allow',
        action: { machine: { namespace: 'p', id: 'f-{{schedule}}-{{fire_time_ms}}', op: 'start' } },
      });
    // Machines for a bulk job that notifies each once, a few per second: it runs across the split.
    const targets = Array.from({ length: 24 }, (_, i) => `b${i}`);
    for (const id of targets) await m.start('p', id, null);
    let job = await ops.bulk.startMachines('p', {
      filter: { id_prefix: 'b' },
      action: { op: 'notify', args: { tag: 'job-0' } },
      rate_per_s: 3,
    });
    // The job must be one that moves: others are cancelled at once (their tag is not counted).
    for (let i = 1; !('id' in job && moves(['bulk', job.id])); i++) {
      if ('id' in job) await ops.bulk.cancel(job.id);
      job = await ops.bulk.startMachines('p', {
        filter: { id_prefix: 'b' },
        action: { op: 'notify', args: { tag: `job-${i}` } },
        rate_per_s: 3,
      });
    }
    if (!('id' in job)) throw new Error('not a job');
    const jobId = job.id;
    const tag = (job.spec as { action: { args: { tag: string } } }).action.args.tag;

    const s0 = rt.storage.shard('s0');
    const s1 = rt.storage.shard('s1');
    const firesOf = async (name: string) => (await fires([s0, s1])).filter((f) => f.schedule === name);
    for (const name of names) await waitFor(async () => (await firesOf(name)).length >= 2, 30_000, `${name} fires`);
    await waitFor(async () => (await ops.bulk.get(jobId)).matched >= 3, 30_000, 'bulk job running');
    const split = await rt.splitter.start('s0', AT, 's1');
    await rt.splitter.wait(split.id);
    expect((await rt.splitter.jobs())[0]).toMatchObject({ id: split.id, phase: 'done' });
    const atCutOver = new Map<string, number>();
    for (const name of names) atCutOver.set(name, (await firesOf(name)).length);
    // Fires go on after the cut-over, from the shard that owns each schedule now.
    for (const name of names)
      await waitFor(
        async () => (await firesOf(name)).length >= atCutOver.get(name)! + 2,
        30_000,
        `${name} fires after the cut-over`,
      );
    for (const name of names) await retryMoved(() => ops.schedules.pause(name));
    await waitFor(
      async () => (await fires([s0, s1])).every((f) => f.status === 'done'),
      120_000,
      'every fire finished',
    );
    await waitFor(async () => (await ops.bulk.get(jobId)).status === 'done', 120_000, 'bulk job done');

    const all = await fires([s0, s1]);
    for (const name of names) {
      const home = moves(['schedule', name]) ? 's1' : 's0';
      const mine = all.filter((f) => f.schedule === name).sort((a, b) => a.fire_at - b.fire_at);
      // Recorded once, on the shard that owns the schedule, with no fire time missing between the first and the last.
      expect(new Set(mine.map((f) => f.shard)), name).toEqual(new Set([home]));
      expect(new Set(mine.map((f) => f.fire_at)).size, name).toBe(mine.length);
      for (let i = 1; i < mine.length; i++) expect(mine[i]!.fire_at - mine[i - 1]!.fire_at, name).toBe(1000);
      for (const f of mine) {
        // Each fire's action ran (and its machine exists, started once); a repeat only under the fire's key, counted in attempts.
        const n = acts.filter((a) => a === `${name}@${f.fire_at}`).length;
        expect(n, `${name}@${f.fire_at}`).toBeGreaterThanOrEqual(1);
        expect(n, `${name}@${f.fire_at}`).toBeLessThanOrEqual(f.attempts);
        // Its machine was started (a repeat of start under the same id does nothing).
        await m.get('p', { id: `f-${name}-${f.fire_at}` });
      }
      expect((await ops.schedules.list()).items.filter((s) => s.name === name)).toHaveLength(1);
    }
    expect(names.some((n) => moves(['schedule', n]))).toBe(true);

    // The bulk job finished on the target: every machine met once, none acted on twice.
    const info = await ops.bulk.get(jobId);
    expect(info).toMatchObject({ status: 'done', matched: targets.length });
    expect(info.succeeded + info.failed).toBe(targets.length);
    expect(
      Number((await s1.reader.all<{ n: number }>('SELECT count(*) AS n FROM bulk_jobs WHERE id = ?', [jobId]))[0]!.n),
    ).toBe(1);
    expect(
      Number((await s0.reader.all<{ n: number }>('SELECT count(*) AS n FROM bulk_jobs WHERE id = ?', [jobId]))[0]!.n),
    ).toBe(0);
    const interrupted = new Set(info.errors.filter((e) => e.code === 'interrupted').map((e) => e.item));
    for (const id of targets) {
      const tagged = async () =>
        (await m.get('p', { id })).history.filter((e) => (e.data as { tag: string | null }).tag === tag).length;
      if (interrupted.has(id)) expect(await tagged(), id).toBeLessThanOrEqual(1);
      else await waitFor(async () => (await tagged()) === 1, 60_000, `${id} notified`);
    }
    // Nothing more arrives: each notified exactly once.
    for (const id of targets)
      expect(
        (await m.get('p', { id })).history.filter((e) => (e.data as { tag: string | null }).tag === tag).length,
        id,
      ).toBeLessThanOrEqual(1);
  }, 400_000);
});
