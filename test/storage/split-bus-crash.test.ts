import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bus } from '../../src/bus/bus.js';
import { busFace } from '../../src/bus/face.js';
import { buildConfig } from '../../src/core/config.js';
import { verifyShard } from '../../src/log/verify.js';
import { startNode } from '../../src/serve.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { collect, spawnTs, writeConfigFile } from '../support/proc.js';
import { withSpare } from '../support/split.js';
import { checkOnceInOrder, movesAt, PacedSubscriber, TOPIC } from './split-bus-support.js';

/** Each run of the splitting node is killed at the next of these steps; the last run finishes. */
const KILLS = ['copied', 'final-copy', 'rows', 'switch', 'release', 'cleanup'];

describe.each(DIALECTS)('a bus split survives kill -9 of the splitting node at every phase (%s)', (dialect) => {
  let env: TestEnv;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 2, extra: { cluster: { role_lease_ms: 1000 } } as never });
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await env?.cleanup();
  });

  it('resumes after each kill; every answered publish is stored once, and delivered once, in order', async () => {
    const input = { ...withSpare(env), bus: { topics: [TOPIC], lease_ms: 1000 } };
    const cfg = writeConfigFile(env.dataDir, input);
    const acked = new Map<string, string[]>();
    const got = new Set<string>();
    const runs = [...KILLS, undefined];
    for (let i = 0; i < runs.length; i++) {
      const args = [cfg, String(i), ...(i === 0 ? ['start'] : []), ...(runs[i] ? ['--kill-at', runs[i]!] : [])];
      child = spawnTs('test/support/split-bus-child.ts', args);
      const r = await collect(child);
      for (const l of r.stdout.split('\n')) {
        if (!l.startsWith('{')) continue;
        const o = JSON.parse(l) as { ack?: [string, string]; got?: string };
        if (o.ack) acked.set(o.ack[0], [...(acked.get(o.ack[0]) ?? []), o.ack[1]]);
        if (o.got) got.add(o.got);
      }
      if (runs[i] !== undefined)
        expect(
          r.signal,
          `run ${i} (kill at ${runs[i]}): ${r.code} ${r.stderr.slice(-2000)} ${r.stdout.slice(-300)}`,
        ).toBe('SIGKILL');
      else expect(r.code, r.stderr.slice(-2000)).toBe(0);
    }

    const node = await startNode(buildConfig({ ...input, node_id: 'checker' } as never), { faces: [busFace] });
    const bus = (node.faces.find((f) => f.name === 'bus') as unknown as { bus: Bus }).bus;
    const fresh = new PacedSubscriber(bus, 'check', { topics: [TOPIC], start: 'earliest', ack_wait_ms: 600_000 }, []);
    const live = new PacedSubscriber(bus, 'live', { topics: ['orders'], ack_wait_ms: 600_000, max_in_flight: 8 }, []);
    try {
      expect((await node.runtime.splitter.jobs()).map((j) => j.phase)).toEqual(['done']);
      const s0 = node.runtime.storage.shard('s0');
      const s1 = node.runtime.storage.shard('s1');
      expect([...acked.keys()].some((k) => movesAt('8', k)) && [...acked.keys()].some((k) => !movesAt('8', k))).toBe(
        true,
      );
      // Stored once, on the shard that owns the key; every answered publish there, in answer order.
      const stored = new Map<string, string[]>();
      for (const [key, ids] of acked) {
        const home = movesAt('8', key) ? s1 : s0;
        const rows = await home.reader.all<{ meta: string }>('SELECT meta FROM events WHERE stream = ? ORDER BY seq', [
          `t/${TOPIC}/${key}`,
        ]);
        const there = rows.map((r) => (JSON.parse(r.meta) as { id: string }).id);
        expect(new Set(there).size, key).toBe(there.length);
        expect(
          there.filter((id) => ids.includes(id)),
          key,
        ).toEqual(ids);
        stored.set(key, there);
      }
      const total = [...stored.values()].flat().length;
      // A subscription from the earliest position: every stored event once, per key in order.
      await fresh.open();
      await waitFor(() => fresh.acked.length >= total, 60_000, 'the fresh subscription caught up');
      checkOnceInOrder(fresh.acked, stored);
      // The subscription the killed nodes acked: what it had left comes once, in order, and nothing is missing.
      await live.open();
      const all = [...stored.values()].flat();
      await waitFor(
        () => all.every((id) => got.has(id) || live.acked.some((a) => a.id === id)),
        60_000,
        'the live subscription caught up',
      );
      for (const [key, ids] of stored) {
        const order = live.acked.filter((a) => a.key === key).map((a) => ids.indexOf(a.id));
        expect(
          order.every((x, j) => x >= 0 && (j === 0 || x > order[j - 1]!)),
          key,
        ).toBe(true);
      }
      await waitFor(
        async () =>
          (await s1.reader.all<{ n: number }>('SELECT count(*) AS n FROM events WHERE pos IS NULL'))[0]!.n == 0,
        10_000,
        'numbered',
      );
      for (const s of [s0, s1]) expect((await verifyShard(s)).ok, s.name).toBe(true);
    } finally {
      await fresh.close();
      await live.close();
      await node.close();
    }
  }, 300_000);
});
