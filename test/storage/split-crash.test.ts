import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';
import { verifyShard } from '../../src/log/verify.js';
import { Machines } from '../../src/machines/machines.js';
import { Runtime } from '../../src/runtime.js';
import { readState } from '../../src/storage/routing-state.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { collect, spawnTs, writeConfigFile } from '../support/proc.js';
import { withSpare } from '../support/split.js';

const moves = (id: string): boolean => sha1(shardKeyText(['p', id])) >= parseHashBound('8');

/** Each run of the splitting node is killed at the next of these steps; the last run finishes. */
const KILLS = ['copied', 'final-copy', 'switch', 'release', 'cleanup'];

describe.each(DIALECTS)('a shard split survives kill -9 of the splitting node at every phase (%s)', (dialect) => {
  let env: TestEnv;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    env = await createTestEnv(dialect, {
      shards: 2,
      extra: {
        machines: { namespaces: { p: { processor: { in_process: 'fn' }, retry: { base_ms: 5, max_ms: 20 } } } },
        cluster: { role_lease_ms: 1000 },
      } as never,
    });
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await env?.cleanup();
  });

  it('resumes after each kill; every acknowledged step is kept once, in order, on the shard that owns it', async () => {
    const cfg = writeConfigFile(env.dataDir, withSpare(env));
    const acked = new Map<string, string[]>();
    const runs = [...KILLS, undefined];
    for (let i = 0; i < runs.length; i++) {
      const args = [cfg, String(i), ...(i === 0 ? ['start'] : []), ...(runs[i] ? ['--kill-at', runs[i]!] : [])];
      child = spawnTs('test/support/split-child.ts', args);
      const r = await collect(child);
      for (const l of r.stdout.split('\n')) {
        if (!l.startsWith('{')) continue;
        const o = JSON.parse(l) as { ack?: [string, string] };
        if (o.ack) acked.set(o.ack[0], [...(acked.get(o.ack[0]) ?? []), o.ack[1]]);
      }
      if (runs[i] !== undefined)
        expect(r.signal, `run ${i} (kill at ${runs[i]}): ${r.stderr.slice(-2000)}`).toBe('SIGKILL');
      else expect(r.code, r.stderr.slice(-2000)).toBe(0);
    }

    const rt = await Runtime.open(buildConfig({ ...withSpare(env), node_id: 'checker' }), { background: false });
    try {
      const m = new Machines(rt, { processors: new Map([['fn', () => ({ response: null })]]) });
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
      for (const [id, tokens] of acked) {
        const g = await m.get('p', { id });
        const history = g.history.map((e) => (e.data as { arg: string | null }).arg ?? 'init');
        expect(g.history.map((e) => e.id)).toEqual(history.map((_, i) => i + 1));
        // Nothing doubled: no step twice. Nothing lost: every answered step is there, in answer order.
        expect(new Set(history).size, id).toBe(history.length);
        expect(
          history.filter((t) => tokens.includes(t)),
          id,
        ).toEqual(tokens);
        const [home, other] = moves(id) ? [s1, s0] : [s0, s1];
        expect((await home.reader.all('SELECT id FROM machines WHERE ns = ? AND id = ?', ['p', id])).length, id).toBe(
          1,
        );
        expect((await other.reader.all('SELECT id FROM machines WHERE ns = ? AND id = ?', ['p', id])).length, id).toBe(
          0,
        );
        if (moves(id)) {
          // The source's copy of the stream (kept in its log) is a prefix of the target's.
          const stream = `m/p/${id}/1`;
          const before = await s0.reader.all<{ seq: number; data: string }>(
            'SELECT seq, data FROM events WHERE stream = ? ORDER BY seq',
            [stream],
          );
          const now = await s1.reader.all<{ seq: number; data: string }>(
            'SELECT seq, data FROM events WHERE stream = ? ORDER BY seq',
            [stream],
          );
          expect(now.slice(0, before.length).map((r) => [Number(r.seq), r.data])).toEqual(
            before.map((r) => [Number(r.seq), r.data]),
          );
        }
      }
      for (const s of [s0, s1]) {
        const v = await verifyShard(s);
        expect(v.ok, s.name).toBe(true);
      }
    } finally {
      await rt.close();
    }
  });
});
