import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { isMillraceError } from '../../src/core/errors.js';
import { verifyShard } from '../../src/log/verify.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';

describe.each(DIALECTS)('log conformance (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  beforeAll(async () => {
    env = await createTestEnv(dialect);
    rt = await Runtime.open(env.config);
  });
  afterAll(async () => {
    await rt?.close();
    await env?.cleanup();
  });

  it('appends and reads a stream forward and backward', async () => {
    const r = await rt.log.append('orders/1', [
      { type: 'created', data: { n: 1 } },
      { type: 'paid', data: { n: 2 } },
      { type: 'shipped', data: { n: 3 } },
    ]);
    expect(r.seqs).toEqual([1, 2, 3]);
    const fwd = await rt.log.read('orders/1');
    expect(fwd.map((e) => [e.seq, e.type, JSON.parse(e.data)])).toEqual([
      [1, 'created', { n: 1 }],
      [2, 'paid', { n: 2 }],
      [3, 'shipped', { n: 3 }],
    ]);
    expect((await rt.log.read('orders/1', { after: 1, limit: 1 })).map((e) => e.seq)).toEqual([2]);
    expect((await rt.log.read('orders/1', { direction: 'backward', limit: 2 })).map((e) => e.seq)).toEqual([3, 2]);
    expect((await rt.log.read('orders/1', { direction: 'backward', after: 2 })).map((e) => e.seq)).toEqual([1]);
    expect(await rt.log.read('orders/none')).toEqual([]);
    expect(await rt.log.streamSeq('orders/1')).toBe(3);
  });

  it('refuses a stale expectedSeq with a typed conflict and writes nothing', async () => {
    await rt.log.append('acct/7', [{ type: 'a', data: 1 }], { expectedSeq: 0 });
    await rt.log.append('acct/7', [{ type: 'b', data: 2 }], { expectedSeq: 1 });
    const err = await rt.log.append('acct/7', [{ type: 'c', data: 3 }], { expectedSeq: 1 }).catch((e: unknown) => e);
    expect(isMillraceError(err, 'stream_conflict')).toBe(true);
    const err0 = await rt.log.append('acct/new', [{ type: 'c', data: 3 }], { expectedSeq: 4 }).catch((e: unknown) => e);
    expect(isMillraceError(err0, 'stream_conflict')).toBe(true);
    expect((await rt.log.read('acct/7')).map((e) => e.type)).toEqual(['a', 'b']);
    expect(await rt.log.read('acct/new')).toEqual([]);
    expect(await rt.log.streamSeq('acct/7')).toBe(2);
  });

  it('a guarded append writes the guard and the events together, or nothing when the guard changes no row', async () => {
    const shard = rt.storage.shard('s0');
    await shard.write((tx) => tx.run('CREATE TABLE IF NOT EXISTS guard_rows (k TEXT PRIMARY KEY, v BIGINT NOT NULL)'));
    await shard.write((tx) => tx.run("INSERT INTO guard_rows (k, v) VALUES ('g', 0)"));
    const guard = (from: number) => ({
      sql: "UPDATE guard_rows SET v = ? WHERE k = 'g' AND v = ?",
      params: [from + 1, from],
    });
    const r1 = await shard.write((tx) =>
      rt.log.appendGuarded(
        tx,
        shard,
        'guarded/1',
        [
          { type: 'a', data: 1 },
          { type: 'b', data: 2 },
        ],
        guard(0),
      ),
    );
    expect(r1?.seqs).toEqual([1, 2]);
    await rt.log.positions(r1!);
    // The guard finds v = 1, not 0: no event, no bump of the stream, the row unchanged.
    const r2 = await shard.write((tx) =>
      rt.log.appendGuarded(tx, shard, 'guarded/1', [{ type: 'c', data: 3 }], guard(0)),
    );
    expect(r2).toBeNull();
    const r3 = await shard.write((tx) =>
      rt.log.appendGuarded(tx, shard, 'guarded/1', [{ type: 'd', data: 4 }], guard(1), { expectedSeq: 2 }),
    );
    expect(r3?.seqs).toEqual([3]);
    // A stale expectedSeq refuses the append; the transaction (guard included) rolls back.
    const err = await shard
      .write((tx) =>
        rt.log.appendGuarded(tx, shard, 'guarded/1', [{ type: 'e', data: 5 }], guard(2), { expectedSeq: 1 }),
      )
      .catch((e: unknown) => e);
    expect(isMillraceError(err, 'stream_conflict')).toBe(true);
    expect((await rt.log.read('guarded/1')).map((e) => e.type)).toEqual(['a', 'b', 'd']);
    expect(await rt.log.streamSeq('guarded/1')).toBe(3);
    expect(await shard.reader.all("SELECT v FROM guard_rows WHERE k = 'g'")).toEqual([{ v: 2 }]);
  });

  it('refuses bad input with bad_request and writes nothing', async () => {
    const [before] = await rt.log.positions(await rt.log.append('marker', [{ type: 'm', data: null }]));
    const bad: Array<() => Promise<unknown>> = [
      () => rt.log.append('', [{ type: 'x', data: 1 }]),
      () => rt.log.append('s', []),
      () => rt.log.append('s', [{ type: '', data: 1 }]),
      () => rt.log.append('s', [{ type: 'x', data: 1 }], { expectedSeq: -1 }),
      () => rt.log.append('s', [{ type: 'x', data: 1, meta: [] as unknown as Record<string, unknown> }]),
      () => rt.log.read('s', { limit: 0 }),
      () => rt.log.readShard('s0', -1, 10),
    ];
    for (const f of bad) {
      const err = await Promise.resolve()
        .then(f)
        .catch((e: unknown) => e);
      expect(isMillraceError(err, 'bad_request')).toBe(true);
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(await rt.log.headPos('s0')).toBe(before);
    expect(await rt.log.streamSeq('s')).toBe(0);
  });

  it('numbers the shard gaplessly, in order, with a verifiable hash chain', async () => {
    const writes = Array.from({ length: 50 }, (_, i) => rt.log.append(`many/${i % 7}`, [{ type: 't', data: { i } }]));
    const results = await Promise.all(writes);
    const positions = await Promise.all(results.map((r) => rt.log.positions(r)));
    const head = await waitFor(async () => {
      const h = await rt.log.headPos('s0');
      return h >= Math.max(...positions.flat()) ? h : null;
    });
    const all = await rt.log.readShard('s0', 0, 10_000);
    expect(all.map((e) => e.pos)).toEqual(Array.from({ length: head }, (_, i) => i + 1));
    // per-stream order follows seq
    for (let s = 0; s < 7; s++) {
      const seqs = all.filter((e) => e.stream === `many/${s}`).map((e) => e.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    }
    const v = await verifyShard(rt.storage.shard('s0'));
    expect(v).toMatchObject({ ok: true, checked: head });
  });
});
