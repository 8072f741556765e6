import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';
import { Runtime } from '../../src/runtime.js';
import { readState } from '../../src/storage/routing-state.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { collect, spawnTs, writeConfigFile } from '../support/proc.js';
import { withSpare } from '../support/split.js';

const moves = (id: string): boolean => sha1(shardKeyText(id)) >= parseHashBound('8');

/** Each run of the splitting node is killed at the next of these steps; the last run finishes. (The pipe writes no log events: no `copied` step.) */
const KILLS = ['copy', 'fence', 'rows', 'switch', 'release', 'cleanup'];

describe.each(DIALECTS)(
  'a shard split under pipe load survives kill -9 of the splitting node at every phase (%s)',
  (dialect) => {
    let env: TestEnv;
    let child: ChildProcess | undefined;

    beforeAll(async () => {
      env = await createTestEnv(dialect, {
        shards: 2,
        extra: {
          pipe: {
            session_ttl_s: 1,
            store_jitter_s: 0,
            kinds: {
              k: {
                handler: 'http://127.0.0.1:9/k',
                default_delay_s: 0.05,
                retry_base_s: 0.05,
                retry_max_s: 0.2,
                max_repeats: 1000,
              },
            },
          },
          scheduler: { poll_ms: 20, lease_ms: 1000 },
          cluster: { role_lease_ms: 1000 },
        } as never,
      });
    });
    afterAll(async () => {
      child?.kill('SIGKILL');
      await env?.cleanup();
    });

    it('resumes after each kill; every acknowledged record kept once, no delivery pushed twice, every session finished', async () => {
      const cfg = writeConfigFile(env.dataDir, withSpare(env));
      const acked = new Map<string, string[]>();
      const pushes = new Map<string, Array<{ repeats: number; records: string[] }>>();
      const runs = [...KILLS, undefined];
      for (let i = 0; i < runs.length; i++) {
        const args = [cfg, String(i), ...(i === 0 ? ['start'] : []), ...(runs[i] ? ['--kill-at', runs[i]!] : [])];
        child = spawnTs('test/support/split-pipe-child.ts', args);
        const r = await collect(child);
        for (const l of r.stdout.split('\n')) {
          if (!l.startsWith('{')) continue;
          const o = JSON.parse(l) as { ack?: [string, string]; push?: [string, number, string[]] };
          if (o.ack) acked.set(o.ack[0], [...(acked.get(o.ack[0]) ?? []), o.ack[1]]);
          if (o.push)
            pushes.set(o.push[0], [...(pushes.get(o.push[0]) ?? []), { repeats: o.push[1], records: o.push[2] }]);
        }
        if (runs[i] !== undefined)
          expect(r.signal, `run ${i} (kill at ${runs[i]}): ${r.stderr.slice(-2000)}`).toBe('SIGKILL');
        else expect(r.code, r.stderr.slice(-2000)).toBe(0);
      }

      const rt = await Runtime.open(buildConfig({ ...withSpare(env), node_id: 'checker' }), { background: false });
      try {
        const s0 = rt.storage.shard('s0');
        const s1 = rt.storage.shard('s1');
        expect(
          (await readState(s0.reader))!.ranges.map((r) => [r.from.toString(16), r.to.toString(16), r.fenced]),
        ).toEqual([['0', '8' + '0'.repeat(39), false]]);
        expect((await readState(s1.reader))!.ranges.map((r) => [r.from.toString(16), r.fenced])).toEqual([
          ['8' + '0'.repeat(39), false],
        ]);
        expect((await rt.splitter.jobs()).map((j) => j.phase)).toEqual(['done']);
        expect([...acked.keys()].some(moves) && [...acked.keys()].some((id) => !moves(id))).toBe(true);
        for (const [id, recs] of acked) {
          const got = pushes.get(id) ?? [];
          // Every session came back and was finished (none is left, below): pushed at least once.
          expect(got.length, id).toBeGreaterThan(0);
          // A delivery is pushed once: a second push of a session is a new delivery (its lease ran out in a kill).
          expect(new Set(got.map((p) => p.repeats)).size, id).toBe(got.length);
          for (const p of got) {
            // Nothing doubled; nothing acknowledged lost, in order.
            expect(new Set(p.records).size, id).toBe(p.records.length);
            expect(
              p.records.filter((x) => recs.includes(x)),
              id,
            ).toEqual(recs);
          }
        }
        for (const s of [s0, s1]) {
          expect(Number((await s.reader.all<{ n: number }>('SELECT count(*) AS n FROM pipe_sessions'))[0]!.n)).toBe(0);
          expect(
            Number(
              (await s.reader.all<{ n: number }>("SELECT count(*) AS n FROM timers WHERE owner LIKE 'pipe/%'"))[0]!.n,
            ),
          ).toBe(0);
        }
      } finally {
        await rt.close();
      }
    }, 240_000);
  },
);
