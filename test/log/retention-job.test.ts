import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import { BusFace } from '../../src/bus/face.js';
import { verifyShard } from '../../src/log/verify.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';

const envs: TestEnv[] = [];
const rts: Runtime[] = [];
afterEach(async () => {
  // Teardown: a runtime that fails to close has failed its test already.
  for (const rt of rts.splice(0)) await rt.close().catch(() => {});
  for (const e of envs.splice(0)) await e.cleanup();
});

async function node(env: TestEnv, id: string): Promise<{ rt: Runtime; face: BusFace }> {
  const rt = await Runtime.open(
    buildConfig({
      ...env.input,
      node_id: id,
      cluster: { role_lease_ms: 1000 },
      retention: { interval_ms: 50, batch: 4 },
      bus: { topics: ['orders'], retention: { orders: { max_events: 3 } } },
    } as never),
  );
  rts.push(rt);
  const face = new BusFace(rt);
  return { rt, face };
}

const orders = async (rt: Runtime): Promise<number> =>
  Number(
    (
      await rt.storage.shards[0]!.reader.all<{ n: number }>(
        "SELECT COUNT(*) AS n FROM events WHERE stream LIKE 't/orders/%' AND pos IS NOT NULL",
      )
    )[0]!.n,
  );

describe.each(DIALECTS)('the pruning job (%s)', (dialect) => {
  it('runs in the background, on one node per shard at a time; another node takes the role over when the holder goes', async () => {
    const env = await createTestEnv(dialect);
    envs.push(env);
    const a = await node(env, 'node-a');
    for (let i = 0; i < 5; i++)
      await a.face.bus.publish(
        Array.from({ length: 6 }, (_, k) => ({ topic: 'orders', key: `k${k}`, type: 'e', data: { i } })),
      );
    await waitFor(async () => (await orders(a.rt)) === 3, 20_000, 'the job to prune to max_events');
    expect([...a.rt.pruner.holding]).toEqual(['s0']);
    expect((await verifyShard(a.rt.storage.shards[0]!)).ok).toBe(true);
    if (dialect === 'sqlite') return; // one process owns a SQLite shard
    const b = await node(env, 'node-b');
    // b stands by while a holds the role.
    await new Promise((r) => setTimeout(r, 300));
    expect([...b.rt.pruner.holding]).toEqual([]);
    await a.rt.close();
    rts.splice(rts.indexOf(a.rt), 1);
    await waitFor(() => b.rt.pruner.holding.has('s0'), 20_000, 'b to take the pruner role');
    await b.face.bus.publish(
      Array.from({ length: 10 }, (_, k) => ({ topic: 'orders', key: `k${k}`, type: 'e', data: { again: true } })),
    );
    await waitFor(async () => (await orders(b.rt)) === 3, 20_000, 'b to prune');
    expect((await verifyShard(b.rt.storage.shards[0]!)).ok).toBe(true);
  }, 60_000);
});
