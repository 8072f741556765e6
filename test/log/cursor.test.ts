import { afterEach, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { isMillraceError } from '../../src/core/errors.js';
import type { Consumer } from '../../src/log/cursor.js';
import type { LogEvent } from '../../src/log/log.js';
import type { Tx } from '../../src/storage/port.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';

const SHARD = 's0';

/** Appends `count` events from `writers` concurrent writers, in batches of 1-7, over a few streams; waits until all are numbered. */
async function appendEvents(rt: Runtime, prefix: string, count: number, writers = 4): Promise<void> {
  let left = count;
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      let i = 0;
      while (left > 0) {
        const n = Math.min(left, 1 + ((w * 3 + i) % 7));
        left -= n;
        const r = await rt.log.append(
          `${prefix}/${(w + i) % 5}`,
          Array.from({ length: n }, (_, k) => ({ type: 'e', data: { w, i, k } })),
        );
        await rt.log.positions(r);
        i++;
      }
    }),
  );
}

/** Records delivered events in the handler's transaction. */
async function record(tx: Tx, consumer: string, batch: LogEvent[]): Promise<void> {
  for (const e of batch) {
    await tx.run('INSERT INTO seen (consumer, pos, stream, seq) VALUES (?, ?, ?, ?)', [
      consumer,
      e.pos,
      e.stream,
      e.seq,
    ]);
  }
}

/** Positions a consumer recorded, with how often each. */
async function recorded(rt: Runtime, consumer: string): Promise<Array<{ pos: number; n: number }>> {
  return rt.storage
    .shard(SHARD)
    .reader.all<{ pos: number; n: number }>(
      'SELECT pos, count(*) AS n FROM seen WHERE consumer = ? GROUP BY pos ORDER BY pos',
      [consumer],
    );
}

/** Events in the batches a consumer's commits have reported so far. */
const delivered = (batches: LogEvent[][]): number => batches.reduce((n, b) => n + b.length, 0);

/** Checks that positions were delivered in increasing order, without gaps, starting after `from`. */
function expectContiguous(batches: LogEvent[][], from: number): number {
  let pos = from;
  for (const b of batches) {
    expect(b.length).toBeGreaterThan(0);
    for (const e of b) {
      expect(e.pos).toBe(pos + 1);
      pos = e.pos!;
    }
  }
  return pos;
}

/**
 * At-least-once delivery up to a crash: every position from 1 to the highest
 * delivered was delivered, each batch in order without gaps; a batch may start
 * again at an earlier position (a save that failed as the runtime went away is
 * retried from the stored position). Returns the highest position delivered.
 */
function expectPrefixWithRepeats(batches: LogEvent[][]): number {
  const seen = new Set<number>();
  for (const b of batches) {
    expect(b.length).toBeGreaterThan(0);
    for (let i = 1; i < b.length; i++) expect(b[i]!.pos).toBe(b[i - 1]!.pos! + 1);
    for (const e of b) seen.add(e.pos!);
  }
  const max = Math.max(...seen);
  expect(seen.size).toBe(max);
  return max;
}

const until = async (rt: Runtime, name: string, pos: number, what: string): Promise<void> => {
  await waitFor(async () => (await rt.cursors.position(SHARD, name)) === pos, 20_000, what);
};

describe.each(DIALECTS)('cursors (%s)', (dialect) => {
  let env: TestEnv | undefined;
  const open: Runtime[] = [];
  const consumers: Consumer[] = [];

  async function start(): Promise<Runtime> {
    env ??= await createTestEnv(dialect);
    const rt = await Runtime.open(env.config);
    open.push(rt);
    await rt.storage
      .shard(SHARD)
      .write((tx) =>
        tx.run(
          'CREATE TABLE IF NOT EXISTS seen (consumer TEXT NOT NULL, pos BIGINT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL)',
        ),
      );
    return rt;
  }

  afterEach(async () => {
    for (const c of consumers.splice(0)) await c.stop();
    for (const rt of open.splice(0)) await rt.close();
    await env?.cleanup();
    env = undefined;
  });

  it('a transactional consumer catches up, goes live under concurrent writers, and sees every event exactly once', async () => {
    const rt = await start();
    await appendEvents(rt, 'pre', 150);
    const batches: LogEvent[][] = [];
    const c = rt.cursors.consume({
      shard: SHARD,
      name: 'c1',
      mode: 'transactional',
      chunk: 17,
      retryMs: 20,
      handler: async (batch, tx) => {
        expect(tx).not.toBeNull();
        await record(tx!, 'c1', batch);
        tx!.onCommit(() => batches.push(batch));
      },
    });
    consumers.push(c);
    await appendEvents(rt, 'live', 250, 6);
    const total = await rt.log.headPos(SHARD);
    expect(total).toBe(400);
    await until(rt, 'c1', total, 'the consumer to reach the head');
    // The saved position is visible to other readers as soon as the batch
    // commits; the handler's onCommit callback runs just after. Wait for both.
    await waitFor(() => delivered(batches) >= total && c.pos === total, 20_000, 'the last commit callback');
    expect(await recorded(rt, 'c1')).toEqual(Array.from({ length: total }, (_, i) => ({ pos: i + 1, n: 1 })));
    // What was recorded is the log itself: same stream and seq at each position.
    const log = await rt.log.readShard(SHARD, 0, 10_000);
    const rows = await rt.storage
      .shard(SHARD)
      .reader.all<{ pos: number; stream: string; seq: number }>(
        "SELECT pos, stream, seq FROM seen WHERE consumer = 'c1' ORDER BY pos",
      );
    expect(rows).toEqual(log.map((e) => ({ pos: e.pos, stream: e.stream, seq: e.seq })));
    // Committed batches came in order, each at most a chunk long.
    expect(expectContiguous(batches, 0)).toBe(total);
    for (const b of batches) expect(b.length).toBeLessThanOrEqual(17);
    expect(c.pos).toBe(total);
  });

  it('a transactional consumer resumes after a crash and a restart with every event exactly once', async () => {
    let rt = await start();
    await appendEvents(rt, 'a', 300);
    let processed = 0;
    let failing = false;
    const c1 = rt.cursors.consume({
      shard: SHARD,
      name: 'r',
      mode: 'transactional',
      chunk: 10,
      retryMs: 20,
      handler: async (batch, tx) => {
        await record(tx!, 'r', batch);
        // Past 100 events the handler fails after writing: its batch must roll back, again and again.
        if (processed >= 100) {
          failing = true;
          throw new Error('handler crashed mid-batch');
        }
        tx!.onCommit(() => (processed += batch.length));
      },
    });
    consumers.push(c1);
    await waitFor(() => failing, 20_000, 'the handler to start failing');
    // The node goes down while the consumer is stuck mid-stream (close without stopping it first).
    const stored = (await rt.cursors.position(SHARD, 'r'))!;
    expect(stored).toBe(processed);
    expect(stored).toBeGreaterThanOrEqual(100);
    expect(stored).toBeLessThan(300);
    await rt.close();
    await c1.stop();
    consumers.splice(consumers.indexOf(c1), 1);

    // Restart on the same storage; more events arrive; the consumer resumes where it committed.
    rt = await Runtime.open(env!.config);
    open.push(rt);
    expect(await rt.cursors.position(SHARD, 'r')).toBe(stored);
    const writing = appendEvents(rt, 'b', 120, 3);
    const batches: LogEvent[][] = [];
    const c2 = rt.cursors.consume({
      shard: SHARD,
      name: 'r',
      mode: 'transactional',
      chunk: 13,
      retryMs: 20,
      handler: async (batch, tx) => {
        await record(tx!, 'r', batch);
        tx!.onCommit(() => batches.push(batch));
      },
    });
    consumers.push(c2);
    await writing;
    await until(rt, 'r', 420, 'the resumed consumer to reach the head');
    await waitFor(() => c2.pos === 420 && delivered(batches) >= 420 - stored, 20_000, 'the last commit callback');
    expect(expectContiguous(batches, stored)).toBe(420);
    expect(await recorded(rt, 'r')).toEqual(Array.from({ length: 420 }, (_, i) => ({ pos: i + 1, n: 1 })));
  });

  it('a transactional consumer stopped mid-stream and started again on a reopened runtime repeats nothing', async () => {
    let rt = await start();
    await appendEvents(rt, 'a', 200);
    let delivered = 0;
    const c1 = rt.cursors.consume({
      shard: SHARD,
      name: 'g',
      mode: 'transactional',
      chunk: 7,
      handler: async (batch, tx) => {
        await record(tx!, 'g', batch);
        tx!.onCommit(() => (delivered += batch.length));
      },
    });
    consumers.push(c1);
    // Writers keep appending while the consumer is stopped and the runtime closed.
    const writing = appendEvents(rt, 'b', 100, 2);
    await waitFor(() => delivered >= 50, 20_000, 'some progress');
    await c1.stop();
    consumers.splice(0);
    await writing;
    const stopped = (await rt.cursors.position(SHARD, 'g'))!;
    expect(stopped).toBe(delivered);
    await rt.close();
    open.splice(0);

    rt = await Runtime.open(env!.config);
    open.push(rt);
    const c2 = rt.cursors.consume({
      shard: SHARD,
      name: 'g',
      mode: 'transactional',
      chunk: 7,
      handler: (batch, tx) => record(tx!, 'g', batch),
    });
    consumers.push(c2);
    await until(rt, 'g', 300, 'the consumer to finish');
    expect(await recorded(rt, 'g')).toEqual(Array.from({ length: 300 }, (_, i) => ({ pos: i + 1, n: 1 })));
  });

  it('two transactional consumers sharing a name never process an event twice', async () => {
    const rt = await start();
    await appendEvents(rt, 'a', 100);
    const handler = (batch: LogEvent[], tx: Tx | null) => record(tx!, 'twin', batch);
    for (let i = 0; i < 2; i++)
      consumers.push(
        rt.cursors.consume({ shard: SHARD, name: 'twin', mode: 'transactional', chunk: 5, retryMs: 10, handler }),
      );
    await appendEvents(rt, 'b', 150, 4);
    await until(rt, 'twin', 250, 'the twins to finish');
    expect(await recorded(rt, 'twin')).toEqual(Array.from({ length: 250 }, (_, i) => ({ pos: i + 1, n: 1 })));
  });

  it('an at-least-once consumer misses nothing across a restart; repeats are limited to the unsaved batch', async () => {
    let rt = await start();
    await appendEvents(rt, 'a', 200);
    const runs: LogEvent[][][] = [[], []];
    const c1 = rt.cursors.consume({
      shard: SHARD,
      name: 'alo',
      mode: 'at-least-once',
      chunk: 9,
      retryMs: 20,
      handler: async (batch, tx) => {
        expect(tx).toBeNull();
        runs[0]!.push(batch);
      },
    });
    consumers.push(c1);
    await waitFor(() => runs[0]!.flat().length >= 60, 20_000, 'some progress');
    // Crash: the runtime goes away under the running consumer.
    await rt.close();
    open.splice(0);
    await c1.stop();
    consumers.splice(0);
    const deliveredBefore = expectPrefixWithRepeats(runs[0]!);

    rt = await Runtime.open(env!.config);
    open.push(rt);
    const saved = (await rt.cursors.position(SHARD, 'alo'))!;
    expect(saved).toBeLessThanOrEqual(deliveredBefore);
    // At most the batch in flight when the node went down is unsaved.
    expect(deliveredBefore - saved).toBeLessThanOrEqual(9);
    await appendEvents(rt, 'b', 50, 2);
    consumers.push(
      rt.cursors.consume({
        shard: SHARD,
        name: 'alo',
        mode: 'at-least-once',
        chunk: 9,
        handler: async (batch) => {
          runs[1]!.push(batch);
        },
      }),
    );
    await until(rt, 'alo', 250, 'the consumer to finish');
    expect(expectContiguous(runs[1]!, saved)).toBe(250);
    const seen = new Set(runs.flat(2).map((e) => e.pos!));
    expect(seen.size).toBe(250);
    expect(Math.min(...seen)).toBe(1);
    expect(Math.max(...seen)).toBe(250);
  });

  it("start: 'latest' skips what exists; a numeric start begins right after it", async () => {
    const rt = await start();
    await appendEvents(rt, 'old', 40);
    const latest: LogEvent[] = [];
    consumers.push(
      rt.cursors.consume({
        shard: SHARD,
        name: 'late',
        start: 'latest',
        mode: 'at-least-once',
        handler: async (b) => void latest.push(...b),
      }),
    );
    const numeric: LogEvent[] = [];
    consumers.push(
      rt.cursors.consume({
        shard: SHARD,
        name: 'from25',
        start: 25,
        mode: 'at-least-once',
        handler: async (b) => void numeric.push(...b),
      }),
    );
    const created = await waitFor(async () => {
      const p = await rt.cursors.position(SHARD, 'late');
      return p === null ? null : { p };
    });
    expect(created.p).toBe(40);
    await appendEvents(rt, 'new', 20, 2);
    await until(rt, 'late', 60, "the 'latest' consumer to catch up");
    await until(rt, 'from25', 60, 'the numeric consumer to catch up');
    expect(latest.map((e) => e.pos)).toEqual(Array.from({ length: 20 }, (_, i) => 41 + i));
    expect(numeric.map((e) => e.pos)).toEqual(Array.from({ length: 35 }, (_, i) => 26 + i));
    // An existing cursor ignores `start`.
    expect(await rt.cursors.ensure(SHARD, 'late', 'earliest')).toBe(60);
  });

  it('ensure, position, save, list and remove', async () => {
    const rt = await start();
    await appendEvents(rt, 'x', 30, 2);
    expect(await rt.cursors.position(SHARD, 'm')).toBeNull();
    expect(await rt.cursors.ensure(SHARD, 'm')).toBe(0);
    expect(await rt.cursors.ensure(SHARD, 'm', 12)).toBe(0);
    expect(await rt.cursors.ensure(SHARD, 'n', 'latest')).toBe(30);
    expect(await rt.cursors.ensure(SHARD, 'o.p/q:r-s_t', 7)).toBe(7);
    await rt.cursors.save(SHARD, 'm', 10);
    expect(await rt.cursors.position(SHARD, 'm')).toBe(10);
    // save never moves a cursor back.
    await rt.cursors.save(SHARD, 'm', 4);
    expect(await rt.cursors.position(SHARD, 'm')).toBe(10);
    // save does not create a cursor.
    await rt.cursors.save(SHARD, 'ghost', 3);
    expect(await rt.cursors.position(SHARD, 'ghost')).toBeNull();
    expect((await rt.cursors.list(SHARD)).map((c) => [c.name, c.pos])).toEqual([
      ['m', 10],
      ['n', 30],
      ['o.p/q:r-s_t', 7],
    ]);
    expect(await rt.cursors.remove(SHARD, 'm')).toBe(true);
    expect(await rt.cursors.remove(SHARD, 'm')).toBe(false);
    expect(await rt.cursors.position(SHARD, 'm')).toBeNull();
    // A removed cursor starts over from its start position.
    expect(await rt.cursors.ensure(SHARD, 'm', 5)).toBe(5);
    // One-shot tail from a position.
    const chunks: number[][] = [];
    for await (const b of rt.cursors.tail(SHARD, 22, { chunk: 3, untilCaughtUp: true }))
      chunks.push(b.map((e) => e.pos!));
    expect(chunks).toEqual([
      [23, 24, 25],
      [26, 27, 28],
      [29, 30],
    ]);
  });

  it('refuses bad cursor names and start positions with bad_request, and unknown shards with shard_not_found', async () => {
    const rt = await start();
    const bad: Array<() => Promise<unknown>> = [
      () => rt.cursors.ensure(SHARD, ''),
      () => rt.cursors.ensure(SHARD, 'has space'),
      () => rt.cursors.ensure(SHARD, 'x'.repeat(201)),
      () => rt.cursors.ensure(SHARD, 'semi;colon'),
      () => rt.cursors.ensure(SHARD, 'ok', -1),
      () => rt.cursors.ensure(SHARD, 'ok', 1.5),
    ];
    for (const f of bad) {
      const err = await Promise.resolve()
        .then(f)
        .catch((e: unknown) => e);
      expect(isMillraceError(err, 'bad_request'), String(err)).toBe(true);
    }
    expect(await rt.cursors.list(SHARD)).toEqual([]);
    const err = await rt.cursors.ensure('nope', 'ok').catch((e: unknown) => e);
    expect(isMillraceError(err, 'shard_not_found')).toBe(true);
    expect(await rt.cursors.ensure(SHARD, 'x'.repeat(200))).toBe(0);
  });
});
