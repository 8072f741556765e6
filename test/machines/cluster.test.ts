import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { machinesFace } from '../../src/machines/face.js';
import { MachinesClient } from '../../src/machines/client.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { machinesConfig, TestProcessor } from './support.js';

// Two nodes sharing one PostgreSQL database: the machine lease keeps them from running one machine's processor at once.
describe.runIf(DIALECTS.includes('postgres'))('machines on two nodes over one PostgreSQL', () => {
  let env: TestEnv;
  let a: Node;
  let b: Node;
  let proc: TestProcessor;

  beforeAll(async () => {
    proc = await new TestProcessor().listen();
    env = await createTestEnv('postgres', { extra: { machines: machinesConfig(proc.url) } as never });
    a = await startNode(env.config, { faces: [machinesFace] });
    b = await startNode(buildConfig({ ...env.input, node_id: `${env.input.node_id}-b` } as ConfigInput), {
      faces: [machinesFace],
    });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await proc?.close();
    await env?.cleanup();
  });

  it('never processes one machine concurrently, and applies every accepted call once', async () => {
    const ca = new MachinesClient(a.url);
    const cb = new MachinesClient(b.url);
    const ids = ['c1', 'c2', 'c3'];
    for (const id of ids) await ca.start('t', id, {});
    const calls = ids.flatMap((id) =>
      Array.from({ length: 16 }, (_, i) =>
        (i % 2 ? ca : cb).call('t', { id }, { events: [{ i }], sleep_ms: 15 }, { timeoutMs: 30_000 }).then(
          () => ({ id, i, ok: true }),
          () => ({ id, i, ok: false }),
        ),
      ),
    );
    const results = await Promise.all(calls);
    expect(proc.maxConcurrentPerMachine).toBe(1);
    for (const id of ids) {
      const ok = results.filter((r) => r.id === id && r.ok).map((r) => r.i);
      expect(ok.length).toBeGreaterThan(0);
      const h = await cb.get('t', { id });
      expect(h.history.map((e) => (e.data as { i: number }).i).sort((x, y) => x - y)).toEqual(ok.sort((x, y) => x - y));
    }
  });
});
