/**
 * Reads after a cut-over: a node that has not yet seen a range move (its
 * routing is stale) must not answer rows the old shard kept, nor "nothing"
 * once the old shard dropped them. A read through a per-key view learns the
 * shard's routing epoch in the same statement; when it differs from the one
 * the node routed by, the node re-reads routing and either reads again (the
 * shard still owns the key) or answers `shard_moved` (retryable: the next
 * read goes to the new owner).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { HASH_SPACE_END, parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';
import { Machines } from '../../src/machines/machines.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { Runtime } from '../../src/runtime.js';
import { encodeRanges, normalize, type OwnedRange } from '../../src/storage/routing-state.js';
import { Storage, type Shard } from '../../src/storage/storage.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { withSpare } from '../support/split.js';

/** Reads through a view; a `shard_moved` refusal is returned as such (the caller checks what came). */
async function readOrMoved<R>(view: Shard, sql: string, params: unknown[]): Promise<R[] | 'moved'> {
  try {
    return await view.reader.all<R>(sql, params);
  } catch (err) {
    if (isMillraceError(err, 'shard_moved')) return 'moved';
    throw err;
  }
}

describe.each(DIALECTS)('reads after a cut-over (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  /** The node that has not seen the cut-over: its routing is read once, then only by its own reads. */
  let stale: Storage;

  beforeAll(async () => {
    env = await createTestEnv(dialect, {
      shards: 2,
      extra: { machines: { namespaces: { p: { processor: { in_process: 'fn' } } } } } as never,
    });
    rt = await Runtime.open(buildConfig(withSpare(env)));
    stale = Storage.open(rt.config);
    await stale.refreshRouting();
  });
  afterAll(async () => {
    await stale?.close();
    await rt?.close();
    await env?.cleanup();
  });

  it('a stale node reading a machine the split moved answers shard_moved, then the row from the new shard', async () => {
    const fn: ProcessorFn = (req) => ({ response: req.kind, events: [{ kind: req.kind }] });
    const m = new Machines(rt, { processors: new Map([['fn', fn]]) });
    const ids = Array.from({ length: 24 }, (_, i) => `m${i}`);
    for (const id of ids) await m.start('p', id, null);
    const moves = (id: string) => sha1(shardKeyText(['p', id])) >= parseHashBound('8');
    expect(ids.some(moves) && ids.some((id) => !moves(id))).toBe(true);
    const sql = 'SELECT id FROM machines WHERE ns = ? AND id = ?';
    // Before: the stale node reads every machine from s0 with no refusal.
    for (const id of ids) {
      const view = stale.shardFor(['p', id]);
      expect(view.name).toBe('s0');
      expect(await readOrMoved(view, sql, ['p', id])).toEqual([{ id }]);
    }
    const job = await rt.splitter.start('s0', '8', 's1');
    await rt.splitter.wait(job.id);
    expect((await rt.splitter.job('s0', job.id))?.phase).toBe('done');
    // The source dropped the moved machines' rows: an unchecked read would answer "no such machine".
    expect(await rt.storage.shard('s0').reader.all(sql, ['p', ids.find(moves)!])).toEqual([]);
    const before = stale.shardFor(['p', ids.find(moves)!]);
    expect(before.name).toBe('s0');
    // Views taken before the cut-over (routed by the old table): never "nothing", never the old copy.
    const views = new Map(ids.map((id) => [id, stale.shardFor(['p', id])]));
    for (const id of ids) {
      const got = await readOrMoved(views.get(id)!, sql, ['p', id]);
      if (moves(id)) expect(got, id).toBe('moved');
      else expect(got, id).toEqual([{ id }]);
    }
    // The refusal made the node re-read routing: the next read goes to the new shard.
    for (const id of ids) {
      const view = stale.shardFor(['p', id]);
      expect(view.name, id).toBe(moves(id) ? 's1' : 's0');
      expect(await readOrMoved(view, sql, ['p', id])).toEqual([{ id }]);
    }
  });

  it('property: through a node with stale routing, a read answers what the owner holds now (or shard_moved, then that) and a write lands on the owner (or is refused, then does)', async () => {
    // Hash space in 16 buckets (the first hex digit); ranges move bucket by bucket between s0 and s1, as a
    // split moves them: the target gets the rows and the range, then the source gives the range up (and
    // drops the rows, or keeps them as during a split's grace period). Writes go through the current
    // routing or through `stale` (its route check refuses what moved); reads through `stale`, which
    // re-reads routing only when a read or write finds it out of date.
    const base = (name: string) => rt.storage.shard(name);
    const bucketOf = (key: string) => Number(sha1(shardKeyText(key)) >> 156n);
    const bound = (b: number) => (b >= 16 ? HASH_SPACE_END : BigInt(b) << 156n);
    const rangesOf = (buckets: Set<number>): OwnedRange[] =>
      normalize([...buckets].map((b) => ({ from: bound(b), to: bound(b + 1), fenced: false })));
    const setRanges = async (name: string, buckets: Set<number>) =>
      base(name).write((tx) =>
        tx.run('UPDATE shard_state SET ranges = ?, epoch = epoch + 1 WHERE id = 1', [encodeRanges(rangesOf(buckets))]),
      );
    for (const s of ['s0', 's1'])
      await base(s).write((tx) =>
        tx.run('CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, b INTEGER NOT NULL, v INTEGER NOT NULL)'),
      );
    const keys = Array.from({ length: 12 }, (_, i) => `key-${i}`);
    const put = (view: Shard, key: string, v: number) =>
      view.write((tx) =>
        tx.run('INSERT INTO kv (k, b, v) VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v', [
          key,
          bucketOf(key),
          v,
        ]),
      );
    const op = fc.oneof(
      fc.record({ kind: fc.constant('put' as const), key: fc.constantFrom(...keys), v: fc.integer({ min: 1 }) }),
      fc.record({ kind: fc.constant('read' as const), key: fc.constantFrom(...keys) }),
      fc.record({ kind: fc.constant('stalePut' as const), key: fc.constantFrom(...keys), v: fc.integer({ min: 1 }) }),
      fc.record({ kind: fc.constant('move' as const), bucket: fc.integer({ min: 0, max: 15 }), drop: fc.boolean() }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
        // Each run starts over: s0 owns everything, s1 nothing, no rows; both nodes know it.
        const owned = new Map([
          ['s0', new Set(Array.from({ length: 16 }, (_, b) => b))],
          ['s1', new Set<number>()],
        ]);
        for (const s of ['s0', 's1']) {
          await base(s).write((tx) => tx.run('DELETE FROM kv'));
          await setRanges(s, owned.get(s)!);
        }
        await rt.storage.refreshRouting();
        await stale.refreshRouting();
        const model = new Map<string, number>();
        for (const o of ops) {
          if (o.kind === 'put') {
            await put(rt.storage.shardFor(o.key), o.key, o.v);
            model.set(o.key, o.v);
          } else if (o.kind === 'stalePut') {
            // A write through the stale node: it lands on the owner, or is refused (nothing written) and its
            // retry, once the node re-read routing, lands on the owner.
            const first = await put(stale.shardFor(o.key), o.key, o.v).then(
              () => 'ok',
              (err: unknown) => {
                if (isMillraceError(err, 'shard_moved')) return 'moved';
                throw err;
              },
            );
            if (first === 'moved') {
              await stale.refreshRouting();
              await put(stale.shardFor(o.key), o.key, o.v);
            }
            model.set(o.key, o.v);
          } else if (o.kind === 'move') {
            const from = owned.get('s0')!.has(o.bucket) ? 's0' : 's1';
            const to = from === 's0' ? 's1' : 's0';
            const rows = await base(from).reader.all<{ k: string; b: number; v: number }>(
              'SELECT k, b, v FROM kv WHERE b = ?',
              [o.bucket],
            );
            owned.get(to)!.add(o.bucket);
            owned.get(from)!.delete(o.bucket);
            await base(to).write(async (tx) => {
              await tx.run('DELETE FROM kv WHERE b = ?', [o.bucket]);
              for (const r of rows) await tx.run('INSERT INTO kv (k, b, v) VALUES (?, ?, ?)', [r.k, r.b, r.v]);
              await tx.run('UPDATE shard_state SET ranges = ?, epoch = epoch + 1 WHERE id = 1', [
                encodeRanges(rangesOf(owned.get(to)!)),
              ]);
            });
            await base(from).write(async (tx) => {
              if (o.drop) await tx.run('DELETE FROM kv WHERE b = ?', [o.bucket]);
              await tx.run('UPDATE shard_state SET ranges = ?, epoch = epoch + 1 WHERE id = 1', [
                encodeRanges(rangesOf(owned.get(from)!)),
              ]);
            });
            await rt.storage.refreshRouting();
          } else {
            const want = model.has(o.key) ? [{ v: model.get(o.key)! }] : [];
            const sql = 'SELECT v FROM kv WHERE k = ?';
            const got = await readOrMoved<{ v: number | string }>(stale.shardFor(o.key), sql, [o.key]);
            const norm = (rows: Array<{ v: number | string }>) => rows.map((r) => ({ v: Number(r.v) }));
            if (got !== 'moved') {
              expect(norm(got), o.key).toEqual(want);
            } else {
              // Refused once: the node re-read routing, so the next read is answered, by the owner.
              const view = stale.shardFor(o.key);
              expect(owned.get(view.name)!.has(bucketOf(o.key))).toBe(true);
              const again = await readOrMoved<{ v: number | string }>(view, sql, [o.key]);
              expect(again).not.toBe('moved');
              expect(norm(again as Array<{ v: number | string }>), o.key).toEqual(want);
            }
          }
        }
        // Every acknowledged write is on the key's owner, the last one of each key.
        for (const key of keys) {
          const owner = owned.get('s0')!.has(bucketOf(key)) ? 's0' : 's1';
          const rows = await base(owner).reader.all<{ v: number | string }>('SELECT v FROM kv WHERE k = ?', [key]);
          expect(
            rows.map((r) => Number(r.v)),
            key,
          ).toEqual(model.has(key) ? [model.get(key)] : []);
        }
      }),
      { numRuns: 40 },
    );
  }, 240_000);
});
