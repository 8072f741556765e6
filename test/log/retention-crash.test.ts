import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig, loadConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import { BusFace } from '../../src/bus/face.js';
import { verifyShard } from '../../src/log/verify.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { runCli, spawnReady, writeConfigFile } from '../support/proc.js';

const envs: TestEnv[] = [];
afterEach(async () => {
  for (const e of envs.splice(0)) await e.cleanup();
});

const TOTAL = 300;
const BATCH = 7;

async function setup(dialect: 'sqlite' | 'postgres'): Promise<{ env: TestEnv; configPath: string }> {
  const env = await createTestEnv(dialect);
  envs.push(env);
  const input = {
    ...env.input,
    retention: { enabled: false, batch: BATCH },
    bus: { topics: ['orders', 'audit'], retention: { orders: { max_events: 5 } } },
  };
  const configPath = writeConfigFile(env.dataDir, input);
  const rt = await Runtime.open(buildConfig(input as never));
  try {
    const face = new BusFace(rt);
    for (let i = 0; i < TOTAL; i += 50) {
      await face.bus.publish(
        Array.from({ length: 50 }, (_, k) => ({
          topic: 'orders',
          key: `k${(i + k) % 9}`,
          type: 'e',
          data: { i: i + k },
        })),
      );
      await face.bus.publish([{ topic: 'audit', key: 'x', type: 'e', data: { i } }]);
    }
  } finally {
    await rt.close();
  }
  return { env, configPath };
}

async function inspect(configPath: string): Promise<{ orders: number; ok: boolean; checked: number; removed: number }> {
  const rt = await Runtime.open(loadConfig(configPath));
  try {
    const shard = rt.storage.shards[0]!;
    const v = await verifyShard(shard);
    const [r] = await shard.reader.all<{ n: number }>(
      "SELECT COUNT(*) AS n FROM events WHERE stream LIKE 't/orders/%'",
    );
    return { orders: Number(r!.n), ok: v.ok, checked: v.checked, removed: v.removed };
  } finally {
    await rt.close();
  }
}

describe.each(DIALECTS)('kill -9 during pruning (%s)', (dialect) => {
  it('a batch killed inside its transaction is wholly undone; the chain verifies; pruning resumes and finishes', async () => {
    const { configPath } = await setup(dialect);
    const { child } = await spawnReady('test/support/prune-child.ts', [configPath, '--hang-inside', '3'], /"inside":3/);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const after = await inspect(configPath);
    // Two batches committed, the third (rows deleted, not committed) rolled back.
    expect(after).toMatchObject({
      ok: true,
      orders: TOTAL - 2 * BATCH,
      removed: 2 * BATCH,
      checked: TOTAL + 6 - 2 * BATCH,
    });

    // Killed at an arbitrary moment between and inside batches.
    const { child: c2 } = await spawnReady('test/support/prune-child.ts', [configPath], /"removing":1\d/);
    c2.kill('SIGKILL');
    await new Promise((r) => c2.once('exit', r));
    const mid = await inspect(configPath);
    expect(mid.ok).toBe(true);
    expect(mid.orders).toBeLessThan(TOTAL - 2 * BATCH);
    expect(mid.orders).toBeGreaterThan(5);
    expect((TOTAL - mid.orders) % BATCH).toBe(0);

    // A new pruner finishes the job.
    const rt = await Runtime.open(loadConfig(configPath));
    try {
      new BusFace(rt);
      const shard = rt.storage.shards[0]!;
      while ((await rt.pruner.pass(shard)).removed > 0);
      const v = await verifyShard(shard);
      expect(v).toMatchObject({ ok: true, removed: TOTAL - 5 });
      const [r] = await shard.reader.all<{ n: number }>(
        "SELECT COUNT(*) AS n FROM events WHERE stream LIKE 't/orders/%'",
      );
      expect(Number(r!.n)).toBe(5);
    } finally {
      await rt.close();
    }
    // The command line says what it proved and what was removed.
    const v = await runCli(['--config', configPath, 'verify']);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(
      new RegExp(
        `s0: ok, ${TOTAL + 6 - (TOTAL - 5)} events, head ${TOTAL + 6}; proved from the pruning checkpoint at position \\d+ \\(hash [0-9a-f]{64}\\) across \\d+ pruned range\\(s\\), ${TOTAL - 5} events removed by retention`,
      ),
    );
    const st = await runCli(['--config', configPath, 'retention', 'status']);
    expect(st.code).toBe(0);
    expect(st.stdout).toMatch(/s0: checkpoint \d+ \(hash [0-9a-f]{64}\)/);
    expect(st.stdout).toContain(`topic:orders: horizon`);
    expect(st.stdout).toContain(`${TOTAL - 5} events removed`);
  }, 60_000);
});
