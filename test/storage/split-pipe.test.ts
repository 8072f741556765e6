import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';
import { Pipe, type Pusher } from '../../src/pipe/pipe.js';
import { SessionWrites } from '../../src/pipe/session-writes.js';
import { PIPE_SPLIT_MOVER } from '../../src/pipe/split-mover.js';
import { Runtime } from '../../src/runtime.js';
import { readState } from '../../src/storage/routing-state.js';
import type { Shard } from '../../src/storage/storage.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { withSpare } from '../support/split.js';

const AT = '8';
const moves = (id: string): boolean => sha1(shardKeyText(id)) >= parseHashBound(AT);
const inMoved = (key: readonly string[] | string): boolean => sha1(shardKeyText(key)) >= parseHashBound(AT);

/** Retries a write refused while its range moves (the node routes the retry by the new table). */
async function retryMoved<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!isMillraceError(err, 'shard_moved') || i > 2000) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

const count = async (s: Shard, sql: string, params: unknown[] = []): Promise<number> =>
  Number((await s.reader.all<{ n: number }>(sql, params))[0]!.n);

function pipeInput() {
  const fast = { default_delay_s: 0.05, retry_base_s: 0.02, retry_max_s: 0.1, max_repeats: 50 };
  return {
    // Long enough that no open session of the test runs out of its lease: every append must be accepted.
    session_ttl_s: 60,
    store_jitter_s: 0,
    kinds: { k: { handler: 'http://127.0.0.1:9/k', ...fast } },
  };
}

describe.each(DIALECTS)('a shard split moves pipe sessions (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  let pipe: Pipe;
  /** PostgreSQL: a second node that takes half the load and fires timers too. */
  let rt2: Runtime | undefined;
  let pipe2: Pipe | undefined;
  /** Every push: the session and the records it carried. */
  const pushes: Array<{ id: string; records: string[] }> = [];
  const pusher: Pusher = (_handler, _kind, d) => {
    pushes.push({ id: d.id, records: d.records.map((r) => r.toString('utf8')) });
    // The handler finishes the session in its answer.
    return Promise.resolve({ action: 'delete' });
  };

  beforeAll(async () => {
    env = await createTestEnv(dialect, {
      shards: 2,
      extra: { pipe: pipeInput(), scheduler: { poll_ms: 20 } } as never,
    });
    rt = await Runtime.open(buildConfig(withSpare(env)));
    pipe = new Pipe(rt, rt.config.pipe, pusher);
    await pipe.start();
    if (dialect === 'postgres') {
      rt2 = await Runtime.open(buildConfig({ ...withSpare(env), node_id: `${env.config.node_id}-b` }));
      pipe2 = new Pipe(rt2, rt2.config.pipe, pusher);
      await pipe2.start();
    }
  });
  afterAll(async () => {
    await pipe2?.stop();
    await rt2?.close();
    await pipe?.stop();
    await rt?.close();
    await env?.cleanup();
  });

  it('moves sessions with records and timers under load: every acknowledged record kept once, each stored session pushed once', async () => {
    /** Per session: the records acknowledged, in order (what its push must carry). */
    const acked = new Map<string, string[]>();
    /** Sessions the client deleted: never pushed. */
    const deleted = new Set<string>();
    const via = (i: number): Pipe => (pipe2 !== undefined && i % 2 === 1 ? pipe2 : pipe);
    const append = async (p: Pipe, id: string, rec: string, seq: number): Promise<void> => {
      await retryMoved(() => p.append(id, Buffer.from(rec), seq));
      acked.get(id)!.push(rec);
    };

    // Stored before the split, due before, around and after the cut-over.
    for (let i = 0; i < 12; i++) {
      const id = await pipe.create('k');
      acked.set(id, []);
      await append(pipe, id, `${id}:early`, 0);
      await pipe.store(id, [0, 1, 2, 4][i % 4]!);
    }
    // Open sessions written to throughout.
    const open: string[] = [];
    for (let i = 0; i < 24; i++) {
      const id = await via(i).create('k');
      acked.set(id, []);
      open.push(id);
    }
    expect(open.some(moves) && open.some((id) => !moves(id))).toBe(true);

    let stop = false;
    let written = 0;
    const load = Promise.all(
      open.map(async (id, i) => {
        const p = via(i);
        for (let n = 0; !stop; n++) {
          if (i % 6 === 5 && n === 4) {
            // Replace: the session holds this one record from now on.
            await retryMoved(() => p.replace(id, Buffer.from(`${id}:r${n}`), n));
            acked.set(id, [`${id}:r${n}`]);
          } else await append(p, id, `${id}:${n}`, n);
          written++;
        }
      }),
    );
    // Sessions opened, written and stored with timeouts while the split runs.
    let churned = 0;
    const churn = (async () => {
      for (let i = 0; !stop; i++) {
        const p = via(i);
        const id = await retryMoved(() => p.create('k'));
        acked.set(id, []);
        for (let n = 0; n < 3; n++) await append(p, id, `${id}:c${n}`, n);
        await retryMoved(() => p.store(id, [0, 0.5, 1.5, 3][i % 4]!));
        churned++;
      }
    })();

    try {
      await waitFor(() => written >= 100 && churned >= 4, 30_000, 'load running');
      const job = await rt.splitter.start('s0', AT, 's1');
      await rt.splitter.wait(job.id);
      expect((await rt.splitter.jobs())[0]).toMatchObject({ id: job.id, phase: 'done' });
      // The open sessions keep taking writes after the cut-over, on the shard that owns them now.
      const atCutOver = written;
      await waitFor(() => written >= atCutOver + 100, 30_000, 'writes after the cut-over');
    } finally {
      stop = true;
      await Promise.all([load, churn]);
    }
    // After the cut-over: a few open sessions are deleted, the rest stored to come back.
    for (let i = 0; i < open.length; i++) {
      const id = open[i]!;
      if (i % 8 === 7) {
        await retryMoved(() => via(i).delete(id));
        deleted.add(id);
      } else await retryMoved(() => via(i).store(id, 0.2));
    }
    expect([...acked.keys()].filter((id) => !deleted.has(id)).some(moves)).toBe(true);

    const s0 = rt.storage.shard('s0');
    const s1 = rt.storage.shard('s1');
    // Every session pushed (and finished by its handler): none left anywhere, nor any timer of one.
    await waitFor(
      async () =>
        (await count(s0, 'SELECT count(*) AS n FROM pipe_sessions')) +
          (await count(s1, 'SELECT count(*) AS n FROM pipe_sessions')) ===
        0,
      60_000,
      'every session pushed and finished',
    );
    for (const s of [s0, s1])
      expect(await count(s, "SELECT count(*) AS n FROM timers WHERE owner LIKE 'pipe/%'"), s.name).toBe(0);
    for (const s of [s0, s1]) expect(await count(s, 'SELECT count(*) AS n FROM pipe_records'), s.name).toBe(0);
    for (const [id, recs] of acked) {
      const got = pushes.filter((p) => p.id === id);
      if (deleted.has(id)) {
        expect(got, id).toEqual([]);
        continue;
      }
      // Pushed once, with every acknowledged record once, in order.
      expect(got.length, id).toBe(1);
      expect(got[0]!.records, id).toEqual(recs);
    }
    expect((await readState(s1.reader))!.ranges.map((r) => [r.from.toString(16), r.fenced])).toEqual([
      ['8' + '0'.repeat(39), false],
    ]);
  }, 180_000);

  it('a lane job routed by the old table writes only the sessions its shard still owns (the others: moved, nothing written)', async () => {
    const ids: string[] = [];
    while (!(ids.some(moves) && ids.some((id) => !moves(id)))) ids.push(await retryMoved(() => pipe.create('k')));
    const gone = ids.find(moves)!;
    const kept = ids.find((id) => !moves(id))!;
    const s0 = rt.storage.shard('s0');
    const writes = new SessionWrites(rt, rt.config.pipe, () => undefined);
    const now = Date.now();
    const out = await s0.write((tx) =>
      writes.applyIn(tx, s0, [
        { type: 'append', id: gone, now, record: Buffer.from('stale'), seq: undefined },
        { type: 'append', id: kept, now, record: Buffer.from('fine'), seq: undefined },
      ]),
    );
    expect(out).toEqual(['moved', 'written']);
    expect(await count(s0, 'SELECT count(*) AS n FROM pipe_records WHERE session_id = ?', [gone])).toBe(0);
    expect((await pipe.get(kept)).records.map(String)).toEqual(['fine']);
    // The moved session takes the write through its own shard.
    await pipe.append(gone, Buffer.from('routed'));
    expect((await pipe.get(gone)).records.map(String)).toEqual(['routed']);
    for (const id of ids) await pipe.delete(id);
  });

  it('the mover replaces what a cut-off copy left on the target and drops only moved rows', async () => {
    const src = rt.storage.shard('s1');
    const dst = rt.storage.shard('s0');
    const ids: string[] = [];
    while (ids.filter((id) => moves(id)).length < 3) ids.push(await pipe.create('k'));
    const mine = ids.filter(moves);
    for (const id of mine) {
      await pipe.append(id, Buffer.from(`${id}:a`));
      await pipe.append(id, Buffer.from(`${id}:b`));
    }
    await pipe.store(mine[0]!, 3600);
    // Copy twice (a resumed attempt): the target holds each row once.
    for (let i = 0; i < 2; i++)
      await dst.base.write((tx) => PIPE_SPLIT_MOVER.copyRows(src.reader, tx, inMoved, dialect));
    for (const id of mine) {
      expect(await count(dst, 'SELECT count(*) AS n FROM pipe_sessions WHERE id = ?', [id])).toBe(1);
      const recs = await dst.reader.all<{ data: Buffer }>(
        'SELECT data FROM pipe_records WHERE session_id = ? ORDER BY id',
        [id],
      );
      expect(recs.map((r) => String(r.data))).toEqual([`${id}:a`, `${id}:b`]);
    }
    const t = await dst.reader.all<{ kind: string; payload: string }>(
      'SELECT kind, payload FROM timers WHERE owner = ?',
      [`pipe/${mine[0]!}`],
    );
    expect(t.map((r) => [r.kind, JSON.parse(r.payload)])).toEqual([['pipe.redeliver', 'k']]);
    // Dropping on the copy's shard (s0 does not own these keys) leaves the source's sessions alone.
    const n = await dst.base.write((tx) => PIPE_SPLIT_MOVER.dropRows(tx, inMoved));
    expect(n).toBeGreaterThanOrEqual(mine.length * 3 + 1);
    for (const id of mine) {
      expect(await count(dst, 'SELECT count(*) AS n FROM pipe_records WHERE session_id = ?', [id])).toBe(0);
      expect((await pipe.get(id)).records.map(String)).toEqual([`${id}:a`, `${id}:b`]);
    }
    for (const id of ids) await pipe.delete(id);
  });
});
