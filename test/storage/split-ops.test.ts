import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { MachinesFace } from '../../src/machines/face.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { OpsFace } from '../../src/ops/face.js';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { withSpare } from '../support/split.js';

const AT = '8';
describe.each(DIALECTS)('a shard split does not move schedules and bulk jobs yet (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  let ops: OpsFace;
  let mf: MachinesFace;
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
    ops = new OpsFace(rt, [mf]);
    await ops.start();
  });
  afterAll(async () => {
    await ops?.stop();
    await mf?.stop();
    await rt?.close();
    await env?.cleanup();
  });

  it('refuses a source holding schedules or bulk jobs (split_invalid), writing nothing; they do not move yet', async () => {
    const s0 = rt.storage.shard('s0');
    await ops.schedules.put('tick', {
      spec: { every_ms: 60_000 },
      action: { machine: { namespace: 'p', id: 'f-{{schedule}}-{{fire_time_ms}}', op: 'start' } },
    });
    const refused = await rt.splitter.start('s0', AT, 's1').then(
      () => null,
      (e: unknown) => e,
    );
    expect(isMillraceError(refused, 'split_invalid')).toBe(true);
    expect((refused as Error).message).toContain('schedules');
    expect(await rt.splitter.jobs()).toEqual([]);
    expect(await s0.reader.all('SELECT id FROM shard_splits')).toEqual([]);
  });
});
