import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Runtime } from '../../src/runtime.js';
import { Machines } from '../../src/machines/machines.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';

/**
 * Keyed notifications (what makes a schedule's notify fire exactly once):
 * whatever the mix of keyed and unkeyed notifies, sent one by one or at
 * once, a key is stored once per machine and every notify with it answers
 * the id of that one notification.
 */
describe.each(DIALECTS)('keyed notifications, property (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  let m: Machines;
  let round = 0;
  const fn: ProcessorFn = (req) => ({ response: req.kind, events: [] });

  beforeAll(async () => {
    env = await createTestEnv(dialect, {
      shards: 2,
      extra: { machines: { namespaces: { ns: { processor: { in_process: 'fn' } } } } } as never,
    });
    // No background loops: notifications stay stored (nothing delivers them), so they can be counted.
    rt = await Runtime.open(env.config, { background: false });
    m = new Machines(rt, { processors: new Map([['fn', fn]]) });
  });
  afterAll(async () => {
    await rt?.close();
    await env?.cleanup();
  });

  it('stores each key once per machine, and answers its id to every repeat', async () => {
    const op = fc.record({
      machine: fc.constantFrom('a', 'b'),
      key: fc.option(fc.constantFrom('k1', 'k2', 'k3'), { nil: undefined }),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(op, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 5 }),
        async (waves) => {
          const r = round++;
          const ids = { a: `a${r}`, b: `b${r}` };
          for (const id of Object.values(ids)) await m.start('ns', id, null);
          const answers: Array<{ machine: string; key: string | undefined; nid: number }> = [];
          // Each wave runs at once (racing on the same keys); waves run one after another.
          for (const wave of waves) {
            const got = await Promise.all(
              wave.map((o) =>
                m.notify('ns', { id: ids[o.machine as 'a' | 'b'] }, null, o.key === undefined ? {} : { key: o.key }),
              ),
            );
            wave.forEach((o, i) => answers.push({ ...o, nid: got[i]!.id }));
          }
          for (const machine of ['a', 'b'] as const) {
            const mine = answers.filter((x) => x.machine === machine);
            const keys = new Set(mine.filter((x) => x.key !== undefined).map((x) => x.key));
            const unkeyed = mine.filter((x) => x.key === undefined).length;
            const shard = m.shardOf('ns', ids[machine]);
            const stored = await shard.reader.all<{ nid: number }>(
              'SELECT nid FROM machine_notifications WHERE ns = ? AND id = ?',
              ['ns', ids[machine]],
            );
            expect(stored.length).toBe(keys.size + unkeyed);
            for (const k of keys) expect(new Set(mine.filter((x) => x.key === k).map((x) => x.nid)).size).toBe(1);
            expect(new Set(mine.map((x) => x.nid)).size).toBe(keys.size + unkeyed);
            const storedIds = new Set(stored.map((s) => Number(s.nid)));
            for (const x of mine) expect(storedIds.has(x.nid)).toBe(true);
          }
        },
      ),
      { numRuns: 25 },
    );
  });
});
