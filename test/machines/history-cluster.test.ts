import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import { Machines, type MachineView } from '../../src/machines/machines.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';

// Two nodes over one PostgreSQL database, each caching the machine's history:
// the lease moves from one to the other and back, and the node that had the
// machine first must not hand its processor the history it cached then.
describe.runIf(DIALECTS.includes('postgres'))('machine history cache across nodes (postgres)', () => {
  let env: TestEnv;
  let rtA: Runtime;
  let rtB: Runtime;
  let a: Machines;
  let b: Machines;
  const seen: Array<{ node: string; id: string; history: Array<{ id: number; data: unknown }> }> = [];

  const processor =
    (node: string): ProcessorFn =>
    (req) => {
      const machine = req.machine as MachineView;
      seen.push({ node, id: machine.id, history: machine.history.map((e) => ({ id: e.id, data: e.data })) });
      const args = (req.kind === 'signal' ? (req.signal as { args?: unknown }).args : req.args) as {
        tag?: string;
        remove?: boolean;
      } | null;
      return {
        response: null,
        events: [{ node, tag: args?.tag ?? null }],
        ...(args?.remove ? { action: { remove: true } } : {}),
      };
    };

  beforeAll(async () => {
    env = await createTestEnv('postgres', {
      extra: {
        machines: {
          namespaces: { h: { processor: { in_process: 'p' }, retry: { base_ms: 5, max_ms: 20 } } },
          lease_keep_ms: 60_000,
        },
      } as never,
    });
    rtA = await Runtime.open(env.config);
    rtB = await Runtime.open(buildConfig({ ...env.input, node_id: `${env.input.node_id}-b` } as ConfigInput));
    a = new Machines(rtA, { processors: new Map([['p', processor('a')]]) });
    b = new Machines(rtB, { processors: new Map([['p', processor('b')]]) });
    await a.open();
    await b.open();
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await rtA?.close();
    await rtB?.close();
    await env?.cleanup();
  });

  const last = (node: string) => seen.filter((s) => s.node === node).at(-1)!;
  const tags = (s: { history: Array<{ data: unknown }> }) =>
    s.history.map((e) => (e.data as { tag: string | null }).tag);

  it('a node that gets the machine back reads what the other node committed meanwhile', async () => {
    const deadline = () => Date.now() + 20_000;
    await a.start('h', 'x', { tag: 'a1' }, { deadline: deadline() });
    await a.call('h', { id: 'x' }, { tag: 'a2' }, { deadline: deadline() });
    await a.call('h', { id: 'x' }, { tag: 'a3' }, { deadline: deadline() });
    expect(tags(last('a'))).toEqual(['a1', 'a2']);
    // A keeps the lease (lease_keep_ms is long): B asks for it and gets it.
    await b.call('h', { id: 'x' }, { tag: 'b1' }, { deadline: deadline() });
    expect(tags(last('b'))).toEqual(['a1', 'a2', 'a3']);
    await b.call('h', { id: 'x' }, { tag: 'b2' }, { deadline: deadline() });
    // Back on A, whose cache ends at a3.
    await a.call('h', { id: 'x' }, { tag: 'a4' }, { deadline: deadline() });
    expect(tags(last('a'))).toEqual(['a1', 'a2', 'a3', 'b1', 'b2']);
    expect(last('a').history.map((e) => e.id)).toEqual([1, 2, 3, 4, 5]);
  });

  it('a node that gets the machine back after another node removed and started it again sees only the new history', async () => {
    const deadline = () => Date.now() + 20_000;
    await a.start('h', 'y', { tag: 'a1' }, { deadline: deadline() });
    await a.call('h', { id: 'y' }, { tag: 'a2' }, { deadline: deadline() });
    await a.call('h', { id: 'y' }, { tag: 'a3' }, { deadline: deadline() });
    await b.remove('h', { id: 'y' }, { deadline: deadline() });
    await b.start('h', 'y', { tag: 'n1' }, { deadline: deadline() });
    await b.call('h', { id: 'y' }, { tag: 'n2' }, { deadline: deadline() });
    await a.call('h', { id: 'y' }, { tag: 'n3' }, { deadline: deadline() });
    expect(tags(last('a'))).toEqual(['n1', 'n2']);
    const v = await a.get('h', { id: 'y' });
    expect(tags(v)).toEqual(['n1', 'n2', 'n3']);
  });

  it('a removal on the other node, with no new start, leaves nothing to serve', async () => {
    const deadline = () => Date.now() + 20_000;
    await a.start('h', 'z', { tag: 'a1' }, { deadline: deadline() });
    await a.call('h', { id: 'z' }, { tag: 'a2' }, { deadline: deadline() });
    await b.remove('h', { id: 'z' }, { deadline: deadline() });
    const err = await a.call('h', { id: 'z' }, { tag: 'a3' }, { deadline: deadline() }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('machine_not_found');
  });
});
