import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMillraceError } from '../../src/core/errors.js';
import { verifyShard } from '../../src/log/verify.js';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';

describe.each(DIALECTS)('Log.appendManyIn (%s)', (dialect) => {
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

  it('appends to several streams in one go, a stream named twice in item order, with a statement of the caller first', async () => {
    await rt.log.append('many/b', [{ type: 'old', data: 0 }]);
    const shard = rt.storage.shards[0]!;
    await shard.write((tx) => tx.run('CREATE TABLE many_side (k TEXT NOT NULL)'));
    const results = await shard.write((tx) =>
      rt.log.appendManyIn(
        tx,
        shard,
        [
          { stream: 'many/b', events: [{ type: 'x', data: 1 }, { type: 'y', data: 2 }] },
          { stream: 'many/a', events: [{ type: 'z', data: 3 }] },
          { stream: 'many/b', events: [{ type: 'w', data: 4, meta: { k: 'v' } }] },
        ],
        { sql: 'INSERT INTO many_side (k) VALUES (?)', params: ['side'] },
      ),
    );
    expect(results.map((r) => [r.stream, r.seqs])).toEqual([
      ['many/b', [2, 3]],
      ['many/a', [1]],
      ['many/b', [4]],
    ]);
    const b = await rt.log.read('many/b');
    expect(b.map((e) => [e.seq, e.type, JSON.parse(e.data), e.meta])).toEqual([
      [1, 'old', 0, null],
      [2, 'x', 1, null],
      [3, 'y', 2, null],
      [4, 'w', 4, '{"k":"v"}'],
    ]);
    expect((await rt.log.read('many/a')).map((e) => [e.seq, e.type])).toEqual([[1, 'z']]);
    expect(await shard.reader.all('SELECT k FROM many_side')).toEqual([{ k: 'side' }]);
    // Where rows are numbered later, each result's row ids are its own rows.
    if (results[0]!.rowIds !== null) {
      for (const r of results) {
        const rows = await shard.reader.all<{ stream: string; seq: number }>(`SELECT stream, seq FROM events WHERE id IN (${r.rowIds!.map(() => '?').join(', ')}) ORDER BY seq`, r.rowIds!);
        expect(rows.map((x) => [x.stream, Number(x.seq)])).toEqual(r.seqs.map((s) => [r.stream, s]));
      }
    }
    // Numbered in order, and the chain verifies.
    const positions = await Promise.all(results.map((r) => rt.log.positions(r)));
    expect(positions.flat().every((p) => p > 0)).toBe(true);
    expect(positions[0]![0]!).toBeLessThan(positions[0]![1]!);
    expect(positions[0]![1]!).toBeLessThan(positions[2]![0]!);
    await waitFor(async () => (await rt.log.headPos(shard.name)) >= Math.max(...positions.flat()));
    expect((await verifyShard(shard)).ok).toBe(true);
  });

  it('refuses bad input with a typed error and writes nothing', async () => {
    const shard = rt.storage.shards[0]!;
    const err = await shard
      .write((tx) => rt.log.appendManyIn(tx, shard, [{ stream: 'many/ok', events: [{ type: 't', data: 1 }] }, { stream: 'many/bad', events: [] }]))
      .catch((e: unknown) => e);
    expect(isMillraceError(err, 'bad_request')).toBe(true);
    expect(await rt.log.streamSeq('many/ok')).toBe(0);
    expect(await rt.log.read('many/ok')).toEqual([]);
  });
});
