import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { Machines, type MachineView } from '../../src/machines/machines.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { createTestEnv, type TestEnv } from '../support/env.js';

// What a step hands an in-process processor from memory must be what the log
// would give: the events as stored (JSON), never the processor's own objects.
describe('machine history handed out from memory', () => {
  let env: TestEnv;
  let rt: Runtime;
  let m: Machines;
  const seen: MachineView[] = [];
  let kept: Record<string, unknown> | null = null;
  const fn: ProcessorFn = (req) => {
    const machine = req.machine as MachineView;
    seen.push(machine);
    if (req.kind === 'call' && req.args === 'mutate') {
      // A careless processor: changes what it was given, and what it returned before.
      try {
        (machine.history[0]!.data as Record<string, unknown>).changed = true;
      } catch {
        // frozen
      }
      if (kept) kept.later = 'changed after the commit';
      return { events: [] };
    }
    kept = { at: new Date(0), gone: undefined, list: [1, undefined], n: 1 };
    return { events: [kept] };
  };

  beforeAll(async () => {
    env = await createTestEnv('sqlite', {
      extra: { machines: { namespaces: { v: { processor: { in_process: 'fn' } } } } } as never,
    });
    rt = await Runtime.open(env.config);
    m = new Machines(rt, { processors: new Map([['fn', fn]]) });
  });
  afterAll(async () => {
    await rt?.close();
    await env?.cleanup();
  });

  it('is the stored JSON of each event, unchanged by what the processor does to its objects', async () => {
    await m.start('v', 'a', null);
    await m.call('v', { id: 'a' }, 'mutate');
    await m.call('v', { id: 'a' }, 'look');
    const stored = { at: '1970-01-01T00:00:00.000Z', list: [1, null], n: 1 };
    expect(seen.at(-1)!.history.map((e) => e.data)).toEqual([stored]);
    expect(JSON.stringify(seen.at(-1)!.history[0]!.data)).toBe(JSON.stringify(stored));
    const fresh = await rt.log.read('m/v/a/1', {}, ['v', 'a']);
    expect(fresh.slice(0, 1).map((e) => JSON.parse(e.data) as unknown)).toEqual(
      seen.at(-1)!.history.map((e) => e.data),
    );
  });

  it('counts the events it hands out from memory and those it reads from the log', async () => {
    await m.start('v', 'b', null);
    await m.call('v', { id: 'b' }, 'look');
    const before = { ...m.historyStats };
    await m.call('v', { id: 'b' }, 'look');
    // Two events in the history, both from memory.
    expect(m.historyStats.fromMemory - before.fromMemory).toBe(2);
    expect(m.historyStats.fromLog).toBe(before.fromLog);
    expect(m.cacheStats.machines).toBe(2);
    expect(m.cacheStats.bytes).toBeGreaterThan(0);
  });
});
