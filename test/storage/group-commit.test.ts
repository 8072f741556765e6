import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import type { Shard } from '../../src/storage/storage.js';
import type { Tx } from '../../src/storage/port.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';

/** What one caller's function saw and which of its hooks ran. */
interface Trace {
  calls: number;
  commits: number;
  rollbacks: number;
}
const newTrace = (): Trace => ({ calls: 0, commits: 0, rollbacks: 0 });

describe.each(DIALECTS)('group commit (%s)', (dialect) => {
  let env: TestEnv;
  let rt: Runtime;
  let shard: Shard;

  const keysIn = async (prefix: string): Promise<string[]> =>
    (await shard.reader.all<{ k: string }>('SELECT k FROM gc_rows WHERE k LIKE ? ORDER BY k', [`${prefix}%`])).map(
      (r) => r.k,
    );

  /** Inserts one row and records which hooks run for this attempt. */
  const insertTraced = async (tx: Tx, k: string, v: number, t: Trace): Promise<number> => {
    t.calls++;
    tx.onCommit(() => t.commits++);
    tx.onRollback(() => t.rollbacks++);
    await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', [k, v]);
    return v;
  };

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    rt = await Runtime.open(env.config, { background: false });
    shard = rt.storage.shard('s0');
    await shard.write((tx) => tx.run('CREATE TABLE gc_rows (k TEXT PRIMARY KEY, v INTEGER NOT NULL)'));
  });
  afterAll(async () => {
    await rt?.close();
    await env?.cleanup();
  });
  beforeEach(async () => {
    await shard.write((tx) => tx.run('DELETE FROM gc_rows'));
  });

  it('lands many concurrent callers, each with its own result, in fewer transactions than callers', async () => {
    const before = { ...shard.committer.stats };
    const n = 300;
    const traces = Array.from({ length: n }, newTrace);
    const results = await Promise.all(
      traces.map((t, i) => shard.write((tx) => insertTraced(tx, `many/${String(i).padStart(4, '0')}`, i, t))),
    );
    expect(results).toEqual(Array.from({ length: n }, (_, i) => i));
    const rows = await shard.reader.all<{ k: string; v: number }>(
      "SELECT k, v FROM gc_rows WHERE k LIKE 'many/%' ORDER BY k",
    );
    expect(rows).toEqual(Array.from({ length: n }, (_, i) => ({ k: `many/${String(i).padStart(4, '0')}`, v: i })));
    for (const t of traces) {
      expect(t.commits).toBe(1);
      // A caller may be re-run after a neighbour's failure; every extra attempt was rolled back.
      expect(t.rollbacks).toBe(t.calls - 1);
    }
    const jobs = shard.committer.stats.jobs - before.jobs;
    const batches = shard.committer.stats.batches - before.batches;
    expect(jobs).toBe(n);
    expect(batches).toBeGreaterThan(0);
    expect(batches).toBeLessThan(n);
  });

  it('a caller that throws fails alone: its writes are rolled back, the others commit', async () => {
    const n = 20;
    const bad = 7;
    const boom = new Error('boom');
    const traces = Array.from({ length: n }, newTrace);
    const order: string[] = [];
    const settled = await Promise.allSettled(
      traces.map((t, i) =>
        shard.write(async (tx) => {
          await insertTraced(tx, `one/${String(i).padStart(2, '0')}`, i, t);
          if (i === bad) {
            await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', ['one/bad-extra', -1]);
            tx.onRollback(() => order.push('first'));
            tx.onRollback(() => order.push('second'));
            throw boom;
          }
          return i;
        }),
      ),
    );
    settled.forEach((s, i) => {
      if (i === bad) expect(s).toEqual({ status: 'rejected', reason: boom });
      else expect(s).toEqual({ status: 'fulfilled', value: i });
    });
    const expected = Array.from({ length: n }, (_, i) => i)
      .filter((i) => i !== bad)
      .map((i) => `one/${String(i).padStart(2, '0')}`);
    expect(await keysIn('one/')).toEqual(expected);
    traces.forEach((t, i) => {
      if (i === bad) {
        expect(t.commits).toBe(0);
        expect(t.calls).toBeGreaterThanOrEqual(1);
        expect(t.rollbacks).toBe(t.calls);
      } else {
        expect(t.commits).toBe(1);
        expect(t.rollbacks).toBe(t.calls - 1);
      }
    });
    // Rollback hooks of the failing caller run in reverse order of registration, once per attempt.
    expect(order.length).toBeGreaterThanOrEqual(2);
    for (let i = 0; i < order.length; i += 2) expect(order.slice(i, i + 2)).toEqual(['second', 'first']);
  });

  it('a caller whose statement fails in the database fails alone', async () => {
    await shard.write((tx) => tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', ['dup/taken', 0]));
    const settled = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        shard.write(async (tx) => {
          await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', [`dup/${i}`, i]);
          // Caller 4 violates the primary key after its first insert.
          if (i === 4) await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', ['dup/taken', 1]);
          return i;
        }),
      ),
    );
    settled.forEach((s, i) => expect(s.status).toBe(i === 4 ? 'rejected' : 'fulfilled'));
    expect(await keysIn('dup/')).toEqual([
      'dup/0',
      'dup/1',
      'dup/2',
      'dup/3',
      'dup/5',
      'dup/6',
      'dup/7',
      'dup/8',
      'dup/9',
      'dup/taken',
    ]);
    expect((await shard.reader.all<{ v: number }>("SELECT v FROM gc_rows WHERE k = 'dup/taken'"))[0]?.v).toBe(0);
  });

  it("a caller's promise resolves only once its write is committed and readable", async () => {
    const n = 200;
    const invisible: number[] = [];
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        shard
          .write((tx) => tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', [`vis/${i}`, i]))
          .then(async () => {
            const rows = await shard.reader.all('SELECT k FROM gc_rows WHERE k = ?', [`vis/${i}`]);
            if (rows.length !== 1) invisible.push(i);
          }),
      ),
    );
    expect(invisible).toEqual([]);
  });

  it('onCommit hooks run after commit and before the caller resolves; onRollback never runs for a committed write', async () => {
    const events: string[] = [];
    const p = shard.write(async (tx) => {
      tx.onCommit(() => events.push('commit-1'));
      tx.onCommit(() => events.push('commit-2'));
      tx.onRollback(() => events.push('rollback'));
      await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', ['hooks/a', 1]);
      events.push('fn-done');
      return 'ok';
    });
    const v = await p;
    events.push('resolved');
    expect(v).toBe('ok');
    // With a neighbour failing, a re-run attempt is allowed: its hooks show as rollback + a second fn-done.
    expect(events.slice(-3)).toEqual(['commit-1', 'commit-2', 'resolved']);
    expect(events.filter((e) => e.startsWith('commit'))).toEqual(['commit-1', 'commit-2']);
    expect(await keysIn('hooks/')).toEqual(['hooks/a']);
  });

  it('a caller that swallows a failed statement does not silently lose the other callers of its batch', async () => {
    await shard.write((tx) => tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', ['swallow/taken', 0]));
    const settled = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) =>
        shard.write(async (tx) => {
          if (i === 5) {
            // Ignoring the duplicate is fine on SQLite; on PostgreSQL it aborts the transaction.
            await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', ['swallow/taken', 1]).catch(() => 0);
            return i;
          }
          await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', [`swallow/${i}`, i]);
          return i;
        }),
      ),
    );
    // Whatever a caller was told, it must be true: fulfilled means committed.
    const present = new Set(await keysIn('swallow/'));
    settled.forEach((s, i) => {
      if (i < 5 && s.status === 'fulfilled') expect(present.has(`swallow/${i}`)).toBe(true);
      if (i < 5 && s.status === 'rejected') expect(present.has(`swallow/${i}`)).toBe(false);
    });
    // The callers that did nothing wrong are not failed because of the one that did.
    for (let i = 0; i < 5; i++) expect(settled[i]!.status).toBe('fulfilled');
    if (dialect === 'postgres') {
      // Its transaction was lost, so it is told so, with the statement's own error.
      expect(settled[5]).toMatchObject({ status: 'rejected', reason: { code: '23505' } });
    } else {
      // SQLite undoes only the failed statement; the caller's choice to ignore it stands.
      expect(settled[5]).toEqual({ status: 'fulfilled', value: 5 });
    }
    expect((await shard.reader.all<{ v: number }>("SELECT v FROM gc_rows WHERE k = 'swallow/taken'"))[0]?.v).toBe(0);
  });

  it('a caller that recovers from a failed statement with its own savepoint commits normally', async () => {
    await shard.write((tx) => tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', ['sp/taken', 0]));
    const results = await Promise.all(
      Array.from({ length: 4 }, (_, i) =>
        shard.write(async (tx) => {
          if (i === 1) {
            await tx.run('SAVEPOINT mine');
            const n = await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', ['sp/taken', 1]).catch(() => -1);
            expect(n).toBe(-1);
            await tx.run('ROLLBACK TO SAVEPOINT mine');
          }
          await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', [`sp/${i}`, i]);
          return i;
        }),
      ),
    );
    expect(results).toEqual([0, 1, 2, 3]);
    expect(await keysIn('sp/')).toEqual(['sp/0', 'sp/1', 'sp/2', 'sp/3', 'sp/taken']);
  });

  it.runIf(dialect === 'postgres')(
    'a channel marked local-only is announced in process but not NOTIFYed to the server; unmarked, it is again',
    async () => {
      const heard: string[] = [];
      const unlisten = await shard.driver.listen('gc_local', (p) => heard.push(p));
      const local: string[] = [];
      const onLocal = (c: string) => c === 'gc_local' && local.push(c);
      shard.committer.on('notify', onLocal);
      try {
        shard.committer.setLocalOnly('gc_local', true);
        await shard.write(async (tx) => {
          tx.notify('gc_local');
        });
        expect(local).toHaveLength(1);
        // A NOTIFY the server had taken would arrive before the one below, on the same session.
        shard.committer.setLocalOnly('gc_local', false);
        await shard.write(async (tx) => {
          tx.notify('gc_local');
        });
        await waitFor(() => heard.length >= 1, 5_000, 'the server to deliver the second notice');
        await shard.driver.notify('gc_local', 'marker');
        await waitFor(() => heard.includes('marker'), 5_000, 'the marker');
        expect(heard).toEqual(['', 'marker']);
        expect(local).toHaveLength(2);
      } finally {
        shard.committer.setLocalOnly('gc_local', false);
        shard.committer.off('notify', onLocal);
        await unlisten();
      }
    },
  );

  it('a throwing onCommit hook, with nobody listening for errors, still lets every caller of the batch settle', async () => {
    expect(shard.committer.listenerCount('error')).toBe(0);
    const settled: Array<PromiseSettledResult<number> | undefined> = new Array(5).fill(undefined);
    // Each write's outcome is recorded by its own handlers; the test waits on `settled` below.
    void Array.from({ length: 5 }, (_, i) =>
      shard
        .write(async (tx) => {
          if (i === 2)
            tx.onCommit(() => {
              throw new Error('hook failed');
            });
          await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', [`nolisten/${i}`, i]);
          return i;
        })
        .then(
          (value) => (settled[i] = { status: 'fulfilled', value }),
          (reason: unknown) => (settled[i] = { status: 'rejected', reason }),
        ),
    );
    await waitFor(() => settled.every((s) => s !== undefined), 10_000, 'every caller to settle');
    // The transaction committed, so every caller is told so.
    expect(settled.map((s) => s?.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    expect(await keysIn('nolisten/')).toEqual(['nolisten/0', 'nolisten/1', 'nolisten/2', 'nolisten/3', 'nolisten/4']);
    // The committer keeps working afterwards.
    expect(await shard.write((tx) => tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', ['nolisten/after', 9]))).toBe(
      1,
    );
  });

  it('a throwing onCommit hook does not keep other callers of the batch from resolving', async () => {
    const errors: unknown[] = [];
    const onError = (e: unknown) => errors.push(e);
    shard.committer.on('error', onError);
    try {
      const results = await Promise.all(
        Array.from({ length: 5 }, (_, i) =>
          shard.write(async (tx) => {
            if (i === 1)
              tx.onCommit(() => {
                throw new Error('hook failed');
              });
            await tx.run('INSERT INTO gc_rows (k, v) VALUES (?, ?)', [`hookerr/${i}`, i]);
            return i;
          }),
        ),
      );
      expect(results).toEqual([0, 1, 2, 3, 4]);
      expect(errors).toHaveLength(1);
      expect(await keysIn('hookerr/')).toEqual(['hookerr/0', 'hookerr/1', 'hookerr/2', 'hookerr/3', 'hookerr/4']);
    } finally {
      shard.committer.off('error', onError);
    }
  });
});
