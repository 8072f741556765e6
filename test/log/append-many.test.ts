import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMillraceError, toMillraceError } from '../../src/core/errors.js';
import { verifyShard } from '../../src/log/verify.js';
import { Runtime } from '../../src/runtime.js';
import type { Shard } from '../../src/storage/storage.js';
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
          {
            stream: 'many/b',
            events: [
              { type: 'x', data: 1 },
              { type: 'y', data: 2 },
            ],
          },
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
        const rows = await shard.reader.all<{ stream: string; seq: number }>(
          `SELECT stream, seq FROM events WHERE id IN (${r.rowIds!.map(() => '?').join(', ')}) ORDER BY seq`,
          r.rowIds!,
        );
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
      .write((tx) =>
        rt.log.appendManyIn(tx, shard, [
          { stream: 'many/ok', events: [{ type: 't', data: 1 }] },
          { stream: 'many/bad', events: [] },
        ]),
      )
      .catch((e: unknown) => e);
    expect(isMillraceError(err, 'bad_request')).toBe(true);
    expect(await rt.log.streamSeq('many/ok')).toBe(0);
    expect(await rt.log.read('many/ok')).toEqual([]);
  });
});

describe.each(DIALECTS)('Log.appendManyAlone (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  let shard: Shard;
  beforeAll(async () => {
    env = await createTestEnv(dialect);
    rt = await Runtime.open(env.config);
    shard = rt.storage.shards[0]!;
    await shard.write((tx) => tx.run('CREATE TABLE alone_side (k TEXT NOT NULL)'));
    // Once this node's sequencer leads the shard, appends notify in process and the writes go as one statement (PostgreSQL).
    await waitFor(() => rt.sequencers.every((q) => q.leader), 10_000, 'the sequencer to lead');
  });
  afterAll(async () => {
    await rt?.close();
    await env?.cleanup();
  });

  it('appends to several streams and runs the statement first, in a transaction of its own; numbered and chained', async () => {
    await rt.log.append('alone/b', [{ type: 'old', data: 0 }]);
    const results = await rt.log.appendManyAlone(
      shard,
      [
        {
          stream: 'alone/b',
          events: [
            { type: 'x', data: 1 },
            { type: 'y', data: 2 },
          ],
        },
        { stream: 'alone/a', events: [{ type: 'z', data: 3 }] },
        { stream: 'alone/b', events: [{ type: 'w', data: 4, meta: { k: 'v' } }] },
      ],
      { sql: 'INSERT INTO alone_side (k) VALUES (?)', params: ['side'] },
      ['alone/a', 'alone/b'],
    );
    expect(results.map((r) => [r.stream, r.seqs])).toEqual([
      ['alone/b', [2, 3]],
      ['alone/a', [1]],
      ['alone/b', [4]],
    ]);
    expect((await rt.log.read('alone/b')).map((e) => [e.seq, e.type, JSON.parse(e.data), e.meta])).toEqual([
      [1, 'old', 0, null],
      [2, 'x', 1, null],
      [3, 'y', 2, null],
      [4, 'w', 4, '{"k":"v"}'],
    ]);
    expect(await shard.reader.all('SELECT k FROM alone_side')).toEqual([{ k: 'side' }]);
    const positions = await Promise.all(results.map((r) => rt.log.positions(r)));
    expect(positions[0]![1]!).toBeLessThan(positions[2]![0]!);
    await waitFor(async () => (await rt.log.headPos(shard.name)) >= Math.max(...positions.flat()));
    expect((await verifyShard(shard)).ok).toBe(true);
  });

  it('refuses bad input with a typed error and writes nothing, not even the statement', async () => {
    const err = await rt.log
      .appendManyAlone(
        shard,
        [
          { stream: 'alone/ok', events: [{ type: 't', data: 1 }] },
          { stream: 'alone/bad', events: [] },
        ],
        { sql: 'INSERT INTO alone_side (k) VALUES (?)', params: ['bad'] },
        ['alone/ok'],
      )
      .catch((e: unknown) => e);
    expect(isMillraceError(err, 'bad_request')).toBe(true);
    expect(await rt.log.streamSeq('alone/ok')).toBe(0);
    expect(await shard.reader.all("SELECT k FROM alone_side WHERE k = 'bad'")).toEqual([]);
  });

  it('a statement the storage refuses stores nothing of the write, and the next write goes through', async () => {
    const err = await rt.log
      .appendManyAlone(
        shard,
        [{ stream: 'alone/refused', events: [{ type: 't', data: 1 }] }],
        { sql: 'INSERT INTO alone_side (k) VALUES (?)', params: [null] },
        ['alone/refused'],
      )
      .catch((e: unknown) => e);
    expect(toMillraceError(err).code).toBe('conflict');
    expect(await rt.log.streamSeq('alone/refused')).toBe(0);
    expect(await rt.log.read('alone/refused')).toEqual([]);
    const [r] = await rt.log.appendManyAlone(
      shard,
      [{ stream: 'alone/refused', events: [{ type: 't', data: 2 }] }],
      undefined,
      ['alone/refused'],
    );
    expect(r!.seqs).toEqual([1]);
  });

  it.runIf(dialect === 'postgres')(
    'takes its locks before it touches a stream row: it waits for a holder of its key, which can still append to that stream',
    async () => {
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      let entered!: () => void;
      const inside = new Promise<void>((r) => (entered = r));
      // A transaction holding the key's lock (taken at its BEGIN), that appends to the stream only later.
      const holder = shard.write(
        async (tx) => {
          entered();
          await gate;
          return rt.log.appendIn(tx, shard, 'alone/locked', [{ type: 'holder', data: 1 }]);
        },
        { lockKeys: ['alone/locked'] },
      );
      await inside;
      const alone = rt.log.appendManyAlone(
        shard,
        [{ stream: 'alone/locked', events: [{ type: 'alone', data: 2 }] }],
        undefined,
        ['alone/locked'],
      );
      try {
        await waitFor(
          async () => {
            const rows = await shard.reader.all<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            );
            return Number(rows[0]!.n) > 0;
          },
          10_000,
          'the one-statement write waiting for its lock',
        );
      } finally {
        // Had it touched the stream's row before its lock, the holder's append would now wait for it (a deadlock).
        open();
      }
      const [h, a] = await Promise.all([holder, alone]);
      expect(h.seqs).toEqual([1]);
      expect(a[0]!.seqs).toEqual([2]);
      expect((await rt.log.read('alone/locked')).map((e) => e.type)).toEqual(['holder', 'alone']);
    },
  );
});
