import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';
import { Machines } from '../../src/machines/machines.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { Runtime } from '../../src/runtime.js';
import { readState } from '../../src/storage/routing-state.js';
import { verifyShard } from '../../src/log/verify.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { withSpare } from '../support/split.js';

const AT = '8';
const moves = (id: string): boolean => sha1(shardKeyText(['p', id])) >= parseHashBound(AT);

/** Retries a write refused while its range moves (the node routes the retry by the new table). */
async function retryMoved<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!isMillraceError(err, 'shard_moved') || i > 200) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

describe.each(DIALECTS)('splitting a shard online (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  let m: Machines;
  /** PostgreSQL: a second node, not the one splitting, that takes half the load and must follow the new routing without a restart. */
  let rt2: Runtime | undefined;
  let m2: Machines | undefined;
  const fn: ProcessorFn = (req) => {
    const args = (req as { args?: unknown }).args as { timer?: number; tag?: string } | null | undefined;
    const action: Record<string, unknown> = {};
    if (args?.timer !== undefined) action.timer = { set: { timeout: args.timer } };
    if (args?.tag !== undefined) action.tag = args.tag;
    return {
      response: req.kind,
      events: [{ kind: req.kind === 'signal' ? (req as { signal: { type: string } }).signal.type : req.kind }],
      action,
    };
  };

  beforeAll(async () => {
    env = await createTestEnv(dialect, {
      shards: 2,
      extra: {
        machines: { namespaces: { p: { processor: { in_process: 'fn' }, retry: { base_ms: 5, max_ms: 20 } } } },
      } as never,
    });
    rt = await Runtime.open(buildConfig(withSpare(env)));
    m = new Machines(rt, { processors: new Map([['fn', fn]]) });
    m.registerTimers();
    if (dialect === 'postgres') {
      rt2 = await Runtime.open(buildConfig({ ...withSpare(env), node_id: `${env.config.node_id}-b` }));
      m2 = new Machines(rt2, { processors: new Map([['fn', fn]]) });
      m2.registerTimers();
    }
  });
  afterAll(async () => {
    await rt2?.close();
    await rt?.close();
    await env?.cleanup();
  });

  it('refuses a bad split with split_invalid and writes nothing', async () => {
    for (const [src, at, to] of [
      ['s0', '8', 'nope'],
      ['s0', 'zz', 's1'],
      ['s0', '0', 's1'],
      ['s0', '8', 's0'],
      ['nope', '8', 's1'],
    ] as const) {
      const e = await rt.splitter.start(src, at, to).catch((err: unknown) => err);
      expect(isMillraceError(e, 'split_invalid'), `${src} ${at} ${to}`).toBe(true);
    }
    expect(await rt.splitter.jobs()).toEqual([]);
    expect((await readState(rt.storage.shard('s1').reader))!.ranges).toEqual([]);
  });

  it('moves machines with history, timers and tags under write load; nothing lost, machines keep working', async () => {
    const ids = Array.from({ length: 30 }, (_, i) => `m${i}`);
    const acked = new Map<string, number>();
    for (const id of ids) {
      await m.start('p', id, null);
      acked.set(id, 1);
    }
    // A tag and a timer that fires after the cut-over.
    const timed = ids.find(moves)!;
    await m.call('p', { id: timed }, { timer: 4, tag: `t-${timed}` });
    acked.set(timed, 2);

    let stop = false;
    const load = (async () => {
      for (let round = 0; !stop; round++) {
        await Promise.all(
          ids.map(async (id) => {
            if (id === timed) return;
            const via = m2 !== undefined && Number(id.slice(1)) % 2 === 1 ? m2 : m;
            await retryMoved(() => via.call('p', { id }, round));
            acked.set(id, acked.get(id)! + 1);
          }),
        );
      }
    })();
    const others = (): number[] => ids.filter((id) => id !== timed).map((id) => acked.get(id)!);
    await waitFor(() => others().every((n) => n >= 3), 20_000, 'load running');
    // Routed by the table before the split: one key that moves, one that stays.
    const staleMoved = rt.storage.shardFor(['p', ids.find(moves)!]);
    const staleKept = rt.storage.shardFor(['p', ids.find((id) => !moves(id))!]);
    expect([staleMoved.name, staleKept.name]).toEqual(['s0', 's0']);
    let job;
    try {
      job = await rt.splitter.start('s0', AT, 's1');
    } catch (err) {
      stop = true;
      await load;
      throw err;
    }
    expect(job.phase).toBe('copy');
    await rt.splitter.wait(job.id);
    const done = await rt.splitter.jobs();
    expect(done[0]).toMatchObject({ id: job.id, phase: 'done', source: 's0', target: 's1' });
    // Writes after the cut-over.
    const atCutOver = others();
    try {
      await waitFor(() => others().every((n, i) => n >= atCutOver[i]! + 2), 20_000, 'load after the cut-over');
    } finally {
      stop = true;
      await load;
    }

    const s0 = rt.storage.shard('s0');
    const s1 = rt.storage.shard('s1');
    // A write routed by the old table is refused inside the old shard's transaction, retryable, with nothing written;
    // one whose key stayed goes through (the fence is per range).
    const refused = await staleMoved
      .write((tx) => tx.run("INSERT INTO streams (stream, seq) VALUES ('stale/moved', 1)"))
      .catch((err: unknown) => err);
    expect(isMillraceError(refused, 'shard_moved')).toBe(true);
    expect((refused as { retryable: boolean }).retryable).toBe(true);
    expect(await s0.reader.all("SELECT stream FROM streams WHERE stream = 'stale/moved'")).toEqual([]);
    await staleKept.write((tx) => tx.run("INSERT INTO streams (stream, seq) VALUES ('stale/kept', 1)"));
    expect(await s0.reader.all("SELECT stream FROM streams WHERE stream = 'stale/kept'")).toHaveLength(1);
    if (rt2 !== undefined) {
      // The other node routes by the new table, unrestarted.
      await waitFor(
        () => rt2!.storage.states.get('s1')?.ranges.length === 1 && rt2!.storage.states.get('s0')?.ranges.length === 1,
        10_000,
        'node b sees the split',
      );
      for (const id of ids) expect(rt2.storage.shardFor(['p', id]).name, id).toBe(moves(id) ? 's1' : 's0');
    }
    expect((await readState(s0.reader))!.ranges.map((r) => [r.from.toString(16), r.to.toString(16), r.fenced])).toEqual(
      [['0', '8' + '0'.repeat(39), false]],
    );
    expect((await readState(s1.reader))!.ranges.map((r) => [r.from.toString(16), r.fenced])).toEqual([
      ['8' + '0'.repeat(39), false],
    ]);
    for (const id of ids) {
      const g = await m.get('p', { id });
      // Every acknowledged step is in the history, once, in order.
      // (The timed machine's timeout may have fired already: one more event.)
      const n = id === timed ? g.history.length : acked.get(id)!;
      expect(
        g.history.map((e) => e.id),
        id,
      ).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      const home = moves(id) ? s1 : s0;
      const other = moves(id) ? s0 : s1;
      expect((await home.reader.all('SELECT id FROM machines WHERE ns = ? AND id = ?', ['p', id])).length, id).toBe(1);
      expect((await other.reader.all('SELECT id FROM machines WHERE ns = ? AND id = ?', ['p', id])).length, id).toBe(0);
    }
    expect(ids.some(moves) && ids.some((id) => !moves(id))).toBe(true);
    // The tag resolves on the new shard, and the timer fires there.
    expect((await m.get('p', { tag: `t-${timed}` })).id).toBe(timed);
    await waitFor(
      async () => (await m.get('p', { id: timed })).history.length === 3,
      15_000,
      'timer fired after the split',
    );
    expect((await m.get('p', { id: timed })).history[2]!.data).toEqual({ kind: 'timeout' });
    // The new shard's chain verifies and starts with the anchor naming the source.
    const anchor = await s1.reader.all<{ pos: number; type: string; data: string }>(
      "SELECT pos, type, data FROM events WHERE stream LIKE '$split/%'",
    );
    expect(anchor).toHaveLength(1);
    expect(anchor[0]!.type).toBe('split_anchor');
    expect(JSON.parse(anchor[0]!.data)).toMatchObject({ source: 's0', from: '8' + '0'.repeat(39) });
    await waitFor(
      async () => (await s1.reader.all<{ n: number }>('SELECT count(*) AS n FROM events WHERE pos IS NULL'))[0]!.n == 0,
      10_000,
      'numbered',
    );
    const v = await verifyShard(s1);
    expect(v.ok).toBe(true);
  });
});

describe('a split refuses a shard holding what it cannot move yet', () => {
  let env: TestEnv;
  let rt: Runtime;
  beforeAll(async () => {
    env = await createTestEnv('sqlite', { shards: 2 });
    rt = await Runtime.open(buildConfig(withSpare(env)));
  });
  afterAll(async () => {
    await rt?.close();
    await env?.cleanup();
  });

  it('names the stream no face moves (split_invalid) and writes nothing', async () => {
    await rt.log.append('other/x', [{ type: 't', data: 1 }]);
    const e = await rt.splitter.start('s0', '8', 's1').catch((err: unknown) => err);
    expect(isMillraceError(e, 'split_invalid')).toBe(true);
    expect((e as { details: { stream: string } }).details.stream).toBe('other/x');
    expect(await rt.splitter.jobs()).toEqual([]);
    expect((await readState(rt.storage.shard('s1').reader))!.ranges).toEqual([]);
  });
});

describe('a split under way whose source takes writes it cannot move (sqlite)', () => {
  let env: TestEnv;
  let rt: Runtime;
  beforeAll(async () => {
    env = await createTestEnv('sqlite', { shards: 2 });
    rt = await Runtime.open(buildConfig(withSpare(env)));
  });
  afterAll(async () => {
    await rt?.close();
    await env?.cleanup();
  });

  it('a split whose source takes writes of a face that cannot move yet, once under way, is aborted under the fence: nothing moves, the range stays', async () => {
    await rt.log.append('m/p/one/1', [{ type: 'machine.event', data: 1 }], { shardKey: ['p', 'one'] });
    const before = (await readState(rt.storage.shard('s0').reader))!.ranges;
    let wrote = false;
    rt.splitter.onStep = (step) => {
      // Another face writes to the source while the split copies (its rows cannot move yet). The stream
      // hashes below the split point, so the fence never refuses it; SQLite's one committer stores it before the fence.
      if (step === 'fence' && !wrote) {
        wrote = true;
        void rt.log.append('other/late-1', [{ type: 't', data: 1 }]);
      }
    };
    try {
      const job = await rt.splitter.start('s0', '8', 's1');
      await rt.splitter.wait(job.id);
      const [j] = (await rt.splitter.jobs()).filter((x) => x.id === job.id);
      expect(wrote).toBe(true);
      expect(j!.phase).toBe('aborted');
      expect(j!.aborted).toContain('other/late-1');
      // Routing is as before: s0 owns its whole range, unfenced; the spare owns nothing.
      expect((await readState(rt.storage.shard('s0').reader))!.ranges).toEqual(before);
      expect((await readState(rt.storage.shard('s1').reader))?.ranges ?? []).toEqual([]);
      // Both writes are where routing finds them.
      const late = await rt.storage
        .shard('s0')
        .reader.all<{ n: number }>("SELECT count(*) AS n FROM events WHERE stream IN ('other/late-1', 'm/p/one/1')");
      expect(Number(late[0]!.n)).toBe(2);
    } finally {
      rt.splitter.onStep = undefined;
    }
  });
});

describe('spare shards in the configuration', () => {
  const shards = (list: Array<Record<string, unknown>>) => ({ storage: { dialect: 'sqlite', shards: list } });
  it('takes a spare with no range, outside the coverage check', () => {
    const c = buildConfig(shards([{ name: 's0' }, { name: 's1', spare: true }]) as never, { baseDir: '/tmp' });
    expect(c.storage.shards.map((s) => [s.name, s.from, s.to, s.spare ?? false])).toEqual([
      ['s0', 0n, 1n << 160n, false],
      ['s1', 0n, 0n, true],
    ]);
  });
  it('refuses a spare with a range, or a spare first shard (config_invalid)', () => {
    for (const bad of [
      [{ name: 's0' }, { name: 's1', spare: true, to: '8' }],
      [{ name: 's0' }, { name: 's1', spare: true, from: '8' }],
      [{ name: 's1', spare: true }, { name: 's0' }],
    ]) {
      const e = (() => {
        try {
          buildConfig(shards(bad) as never, { baseDir: '/tmp' });
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      expect(isMillraceError(e, 'config_invalid'), JSON.stringify(bad)).toBe(true);
    }
  });
});
