import { afterEach, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { loadConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import { BusFace } from '../../src/bus/face.js';
import { verifyShard } from '../../src/log/verify.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/env.js';
import { spawnReady, writeConfigFile } from '../support/proc.js';

const envs: TestEnv[] = [];
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    c.kill('SIGCONT');
    c.kill('SIGKILL');
  }
  for (const e of envs.splice(0)) await e.cleanup();
});

describe('a hung pruning node (postgres)', () => {
  it('loses the pruner role to another node, which prunes; woken up, it removes nothing', async () => {
    const env = await createTestEnv('postgres');
    envs.push(env);
    const input = {
      ...env.input,
      cluster: { role_lease_ms: 1000 },
      retention: { interval_ms: 50, batch: 4 },
      bus: { topics: ['orders'], retention: { orders: { max_events: 3 } } },
    };
    const configPath = writeConfigFile(env.dataDir, input);
    const { child } = await spawnReady('test/support/prune-node.ts', [configPath, 'hung-node'], /"holding":true/);
    children.push(child);
    const rt = await Runtime.open(loadConfig(configPath, (c) => (c.node_id = 'live-node')));
    try {
      const face = new BusFace(rt);
      const shard = rt.storage.shards[0]!;
      await new Promise((r) => setTimeout(r, 300));
      expect(rt.pruner.holding.size).toBe(0);
      child.kill('SIGSTOP');
      await face.bus.publish(
        Array.from({ length: 12 }, (_, k) => ({ topic: 'orders', key: `k${k % 4}`, type: 'e', data: { k } })),
      );
      await waitFor(() => rt.pruner.holding.has(shard.name), 20_000, 'the live node to take the pruner role');
      const count = async () =>
        Number(
          (
            await shard.reader.all<{ n: number }>(
              "SELECT COUNT(*) AS n FROM events WHERE stream LIKE 't/orders/%' AND pos IS NOT NULL",
            )
          )[0]!.n,
        );
      await waitFor(async () => (await count()) === 3, 20_000, 'the live node to prune');
      child.kill('SIGCONT');
      await new Promise((r) => setTimeout(r, 1000));
      expect(await count()).toBe(3);
      expect(rt.pruner.holding.has(shard.name)).toBe(true);
      const v = await verifyShard(shard);
      expect(v).toMatchObject({ ok: true, removed: 9 });
    } finally {
      await rt.close();
    }
  }, 90_000);
});
