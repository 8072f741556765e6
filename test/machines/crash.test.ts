import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MachinesClient } from '../../src/machines/client.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { spawnReady } from '../support/proc.js';
import { machinesConfig, TestProcessor } from './support.js';

async function startChild(configPath: string): Promise<{ child: ChildProcess; url: string }> {
  const { child, found } = await spawnReady('test/machines/timer-node.ts', [configPath], /URL (\S+)/);
  return { child, url: found };
}

const N = 1000;

describe.each(DIALECTS)('machines: kill -9 during a storm of timers (%s)', (dialect) => {
  let env: TestEnv;
  let proc: TestProcessor;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    proc = await new TestProcessor().listen();
    // A short scheduler lease, so timers the killed node had claimed are claimed again soon after the restart.
    env = await createTestEnv(dialect, {
      extra: { machines: machinesConfig(proc.url), scheduler: { poll_ms: 50, lease_ms: 3000 } } as never,
    });
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await proc?.close();
    await env?.cleanup();
  });

  it('fires each timer exactly once across the crash', async () => {
    const cfgPath = join(env.dataDir, 'node.json');
    writeFileSync(cfgPath, JSON.stringify(env.input));
    let n = await startChild(cfgPath);
    child = n.child;
    let c = new MachinesClient(n.url);
    const ids = Array.from({ length: N }, (_, i) => `storm-${i}`);
    for (let i = 0; i < N; i += 50) {
      await Promise.all(
        ids
          .slice(i, i + 50)
          .map((id, j) => c.start('t', id, { timer: { set: { timeout: 0.3 + ((i + j) % 20) * 0.05 } } })),
      );
    }
    const timeouts = () => proc.count((r) => r.body.signal?.type === 'timeout');
    await waitFor(() => timeouts() >= 100, 30_000, 'the storm to begin');
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));

    n = await startChild(cfgPath);
    child = n.child;
    c = new MachinesClient(n.url);
    const counts = await waitFor(
      async () => {
        const hs = await Promise.all(ids.map((id) => c.get('t', { id }).then((g) => g.history)));
        return hs.every((h) => h.length >= 1) ? hs : null;
      },
      100_000,
      'every timer to fire',
    );
    // every machine has exactly one committed firing
    for (const h of counts) expect(h.map((e) => e.data)).toEqual([{ fired: 1 }]);
    child.kill('SIGKILL');
    child = undefined;
  }, 180_000);
});
