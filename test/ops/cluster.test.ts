import { afterAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { BusFace } from '../../src/bus/face.js';
import { OpsFace } from '../../src/ops/face.js';
import { createTestEnv, type TestEnv } from '../support/env.js';

/** Two nodes on one PostgreSQL storage run the same schedules: each fire time runs once. */
describe('schedules on two nodes (postgres)', () => {
  let env: TestEnv;
  const rts: Runtime[] = [];
  afterAll(async () => {
    // Teardown: a runtime that fails to close has failed its test already.
    for (const rt of rts) await rt.close().catch(() => {});
    await env?.cleanup();
  });

  it('records and publishes each fire once', async () => {
    env = await createTestEnv('postgres', {
      shards: 2,
      extra: {
        bus: { topics: ['beats'] },
        scheduler: { poll_ms: 20, lease_ms: 2000 },
        schedules: Object.fromEntries(
          ['a', 'b', 'c'].map((n) => [
            n,
            {
              spec: { every_ms: 1000 },
              catchup_window_ms: 60_000,
              overlap: 'allow',
              action: {
                publish: { topic: 'beats', type: 'beat', key: n, data: { s: '{{schedule}}', ms: '{{fire_time_ms}}' } },
              },
            },
          ]),
        ),
      } as never,
    });
    const nodes: OpsFace[] = [];
    for (const suffix of ['x', 'y']) {
      const rt = await Runtime.open(
        buildConfig({ ...env.input, node_id: `${env.input.node_id}-${suffix}` } as ConfigInput),
      );
      rts.push(rt);
      const bus = new BusFace(rt);
      const ops = new OpsFace(rt, [bus]);
      await bus.start();
      nodes.push(ops);
    }
    // Both apply the config file's schedules at once.
    await Promise.all(nodes.map((n) => n.start()));
    // Let both nodes fire for a few seconds, then stop the schedules and let running fires finish.
    await new Promise((r) => setTimeout(r, 4000));
    for (const n of ['a', 'b', 'c']) await nodes[0]!.schedules.pause(n);
    const deadline = Date.now() + 30_000;
    const rt = rts[0]!;
    let fires: Array<{ schedule: string; fire_at: number; status: string }> = [];
    for (;;) {
      fires = [];
      for (const s of rt.storage.shards)
        fires.push(
          ...(await s.reader.all<{ schedule: string; fire_at: number; status: string }>(
            'SELECT schedule, fire_at, status FROM schedule_fires',
          )),
        );
      if (fires.length > 0 && fires.every((f) => f.status === 'done')) break;
      if (Date.now() > deadline) throw new Error(`fires not done: ${JSON.stringify(fires)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const events: string[] = [];
    for (const s of rt.storage.shards) {
      const rows = await s.reader.all<{ data: string }>(`SELECT data FROM events WHERE type = 'beat'`);
      for (const r of rows) {
        const d = JSON.parse(r.data) as { s: string; ms: number };
        events.push(`${d.s}@${d.ms}`);
      }
    }
    const keys = fires.map((f) => `${f.schedule}@${Number(f.fire_at)}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.length).toBeGreaterThanOrEqual(6);
    expect(events.sort()).toEqual(keys.sort());
  });
});
