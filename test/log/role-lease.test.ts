import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { silentLogger } from '../../src/core/logger.js';
import type { Consumer } from '../../src/log/cursor.js';
import { chainHash, rowChainFields } from '../../src/log/chain.js';
import { Sequencer } from '../../src/log/sequencer.js';
import { verifyShard } from '../../src/log/verify.js';
import { Runtime } from '../../src/runtime.js';
import { PostgresDriver } from '../../src/storage/postgres/postgres-driver.js';
import { createTestEnv, DIALECTS, pgUrlFor, waitFor, type TestEnv } from '../support/env.js';
import { signalGroup, spawnTs, writeConfigFile } from '../support/proc.js';

const LEASE_MS = 1000;

/** A gate a test opens by hand: `wait()` blocks until `open()`. */
function gate(): { wait: () => Promise<void>; open: () => void; reached: Promise<void> } {
  let open!: () => void;
  let reached!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  const reachedP = new Promise<void>((r) => (reached = r));
  return {
    wait: () => {
      reached();
      return opened;
    },
    open,
    reached: reachedP,
  };
}

async function sequencerRuntime(env: TestEnv, nodeId: string): Promise<Runtime> {
  // No background loops: the test drives its own sequencers.
  return Runtime.open(buildConfig({ ...env.input, node_id: nodeId } as ConfigInput), { background: false });
}

async function checkShard(rt: Runtime, total: number): Promise<void> {
  const s = rt.storage.shard('s0');
  const [c] = await s.reader.all<{ n: number; d: number; top: number | null; unnumbered: number }>(
    'SELECT count(*)::int AS n, count(DISTINCT pos)::int AS d, max(pos) AS top, count(*) FILTER (WHERE pos IS NULL)::int AS unnumbered FROM events',
  );
  expect(c).toEqual({ n: total, d: total, top: total, unnumbered: 0 });
  expect(await verifyShard(s)).toMatchObject({ ok: true, checked: total });
}

describe.runIf(DIALECTS.includes('postgres'))('role leases (postgres)', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('fencing: a sequencer paused before its numbering transaction, whose role was handed over meanwhile, numbers nothing', async () => {
    const env = await createTestEnv('postgres', { extra: { cluster: { role_lease_ms: LEASE_MS } } });
    cleanups.push(() => env.cleanup());
    const rt = await sequencerRuntime(env, 'fence-a');
    cleanups.push(() => rt.close());
    const shard = rt.storage.shard('s0');
    const pause = gate();
    const epochsAtNumbering: Array<{ epoch: number; numbered: number }> = [];
    let first = true;
    const seq: Sequencer = new Sequencer(rt.log, shard, {
      batch: 100,
      pollMs: 50,
      logger: silentLogger,
      beforeNumbering: async () => {
        epochsAtNumbering.push({ epoch: seq.epoch, numbered: seq.numbered });
        if (first) {
          first = false;
          await pause.wait();
        }
      },
    });
    seq.start();
    cleanups.push(() => seq.stop());
    await waitFor(() => seq.leader, 10_000, 'the sequencer to lead');
    const epoch0 = seq.epoch;
    const r = await rt.log.append('f/a', [
      { type: 'x', data: 1 },
      { type: 'x', data: 2 },
      { type: 'x', data: 3 },
    ]);
    await pause.reached;
    // While it is paused, the role changes hands: what a takeover by another node leaves in the lease row.
    // (Its session is left alive on purpose: only the epoch check stands between it and the rows.)
    await shard.write((tx) =>
      tx.run('UPDATE role_leases SET epoch = epoch + 1 WHERE role = ?', [Sequencer.role('s0')]),
    );
    pause.open();
    expect(await rt.log.positions(r, 15_000)).toEqual([1, 2, 3]);
    // It numbered the rows only after losing the role and taking it again (epoch0 + 2), not in the fenced transaction.
    expect(epochsAtNumbering).toEqual([
      { epoch: epoch0, numbered: 0 },
      { epoch: epoch0 + 2, numbered: 0 },
    ]);
    await checkShard(rt, 3);
  });

  it('a row numbered elsewhere while the sequencer prepared its batch: its numbering statement numbers nothing, and it chains on the tip it finds again', async () => {
    const env = await createTestEnv('postgres', { extra: { cluster: { role_lease_ms: LEASE_MS } } });
    cleanups.push(() => env.cleanup());
    const rt = await sequencerRuntime(env, 'elsewhere');
    cleanups.push(() => rt.close());
    const shard = rt.storage.shard('s0');
    const pause = gate();
    let first = true;
    const seq: Sequencer = new Sequencer(rt.log, shard, {
      batch: 100,
      pollMs: 50,
      logger: silentLogger,
      beforeNumbering: async () => {
        if (first) {
          first = false;
          await pause.wait();
        }
      },
    });
    seq.start();
    cleanups.push(() => seq.stop());
    await waitFor(() => seq.leader, 10_000, 'the sequencer to lead');
    const r = await rt.log.append('e/a', [
      { type: 'x', data: 1 },
      { type: 'x', data: 2 },
      { type: 'x', data: 3 },
    ]);
    await pause.reached;
    // While it holds its batch, another numberer sets the first row (its hash chained on nothing the sequencer knows).
    const foreign = Buffer.alloc(32, 7);
    await shard.write((tx) => tx.run('UPDATE events SET pos = 1, hash = ? WHERE id = ?', [foreign, r.rowIds![0]]));
    pause.open();
    expect(await rt.log.positions(r, 15_000)).toEqual([1, 2, 3]);
    // The batch's statement numbered none of the other rows (the sequencer counts only what it numbered) ...
    await waitFor(() => seq.numbered === 2, 10_000, 'the two other rows numbered');
    // ... and their hashes chain on the row it found numbered, not on the tip it had computed.
    const rows = await shard.reader.all<{
      pos: number;
      stream: string;
      seq: number;
      type: string;
      data: string;
      meta: string | null;
      created_at: number;
      hash: Buffer;
    }>('SELECT pos, stream, seq, type, data, meta, created_at, hash FROM events ORDER BY pos');
    let prev: Buffer = foreign;
    for (const row of rows.slice(1)) {
      const want = chainHash(prev, rowChainFields(row.pos, row));
      expect(row.hash.equals(want)).toBe(true);
      prev = want;
    }
  });

  it('a sequencer paused past its lease loses the role to a standby on another node; on waking it numbers nothing and stands by', async () => {
    const env = await createTestEnv('postgres', { extra: { cluster: { role_lease_ms: LEASE_MS } } });
    cleanups.push(() => env.cleanup());
    const a = await sequencerRuntime(env, 'pause-a');
    cleanups.push(() => a.close());
    const b = await sequencerRuntime(env, 'pause-b');
    cleanups.push(() => b.close());
    const pause = gate();
    let first = true;
    const seqA: Sequencer = new Sequencer(a.log, a.storage.shard('s0'), {
      batch: 100,
      pollMs: 50,
      logger: silentLogger,
      beforeNumbering: async () => {
        if (first) {
          first = false;
          await pause.wait();
        }
      },
    });
    seqA.start();
    cleanups.push(() => seqA.stop());
    await waitFor(() => seqA.leader, 10_000, 'A to lead');
    const seqB = new Sequencer(b.log, b.storage.shard('s0'), { batch: 100, pollMs: 50, logger: silentLogger });
    seqB.start();
    cleanups.push(() => seqB.stop());
    const r = await b.log.append('p/a', [
      { type: 'x', data: 1 },
      { type: 'x', data: 2 },
    ]);
    await pause.reached;
    // A is stuck before its transaction; B takes over once A's lease runs out, and numbers the rows.
    expect(await b.log.positions(r, LEASE_MS * 10)).toEqual([1, 2]);
    expect(seqB.leader).toBe(true);
    pause.open();
    await waitFor(() => !seqA.leader, 10_000, 'A to notice it lost the role');
    const r2 = await a.log.append('p/a', [{ type: 'x', data: 3 }]);
    expect(await a.log.positions(r2, 10_000)).toEqual([3]);
    expect(seqA.numbered).toBe(0);
    expect(seqB.numbered).toBeGreaterThanOrEqual(2);
    expect(seqA.leader).toBe(false);
    await checkShard(b, 3);
  });

  it('property: work fenced by the lease commits only under the newest epoch, whatever the interleaving of takeovers and work', async () => {
    const env = await createTestEnv('postgres');
    cleanups.push(() => env.cleanup());
    const rt = await Runtime.open(env.config, { background: false });
    cleanups.push(() => rt.close());
    const url = pgUrlFor(env.pgDatabases[0]!);
    const drivers = [0, 1, 2].map(() => new PostgresDriver({ url, durability: 'relaxed', poolSize: 3, writers: 1 }));
    cleanups.push(async () => {
      for (const d of drivers) await d.close();
    });
    const sql = drivers[0]!.sql.roles!;
    await rt.storage
      .shard('s0')
      .write((tx) =>
        tx.run('CREATE TABLE fenced_work (n BIGINT PRIMARY KEY, who INT NOT NULL, epoch BIGINT NOT NULL)'),
      );
    await rt.storage.shard('s0').write((tx) => tx.run('CREATE TABLE work_counter (n BIGINT NOT NULL)'));
    await rt.storage.shard('s0').write((tx) => tx.run('INSERT INTO work_counter (n) VALUES (0)'));
    type Op = { kind: 'take'; who: number } | { kind: 'work'; who: number; delayMs: number };
    const opArb: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constant('take' as const), who: fc.integer({ min: 0, max: 2 }) }),
      fc.record({
        kind: fc.constant('work' as const),
        who: fc.integer({ min: 0, max: 2 }),
        delayMs: fc.integer({ min: 0, max: 5 }),
      }),
    );
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(opArb, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 8 }),
        async (rounds) => {
          const role = `prop-${run++}`;
          const epochs: Array<number | null> = [null, null, null];
          const taken: number[] = [];
          for (const round of rounds) {
            // Each round's operations run concurrently, each on its own contender's connections.
            await Promise.all(
              round.map(async (op) => {
                const d = drivers[op.who]!;
                if (op.kind === 'take') {
                  const rows = await d.reader.all<{ epoch: number }>(sql.take, [role, `c${op.who}`, 60_000]);
                  epochs[op.who] = Number(rows[0]!.epoch);
                  taken.push(Number(rows[0]!.epoch));
                  return;
                }
                const epoch = epochs[op.who];
                if (epoch === null) return;
                const c = await d.acquireWriter();
                try {
                  await c.exec('BEGIN');
                  const ok = (await c.run(sql.fence, [60_000, role, epoch])) === 1;
                  await new Promise((r) => setTimeout(r, op.delayMs));
                  if (ok) {
                    const [{ n }] = (await c.all<{ n: number }>('UPDATE work_counter SET n = n + 1 RETURNING n')) as [
                      { n: number },
                    ];
                    await c.run('INSERT INTO fenced_work (n, who, epoch) VALUES (?, ?, ?)', [n, op.who, epoch]);
                    await c.exec('COMMIT');
                  } else await c.exec('ROLLBACK');
                } finally {
                  c.release();
                }
              }),
            );
          }
          const work = await rt.storage
            .shard('s0')
            .reader.all<{ n: number; who: number; epoch: number }>('SELECT n, who, epoch FROM fenced_work ORDER BY n');
          await rt.storage.shard('s0').write((tx) => tx.run('DELETE FROM fenced_work'));
          // Epochs of committed work never go back (in the order the lease row serialised them) ...
          for (let i = 1; i < work.length; i++)
            expect(Number(work[i]!.epoch)).toBeGreaterThanOrEqual(Number(work[i - 1]!.epoch));
          // ... one epoch belongs to one contender ...
          const owner = new Map<number, number>();
          for (const w of work) {
            const e = Number(w.epoch);
            expect(owner.get(e) ?? w.who).toBe(w.who);
            owner.set(e, w.who);
          }
          // ... and every take handed out a new epoch.
          expect(new Set(taken).size).toBe(taken.length);
        },
      ),
      { numRuns: 25 },
    );
  });

  it('an exclusive consumer whose holder is frozen (SIGSTOP) moves to a standby within the lease; after SIGCONT the old holder handles nothing more and stands by', async () => {
    const env = await createTestEnv('postgres', { extra: { cluster: { role_lease_ms: LEASE_MS } } });
    cleanups.push(() => env.cleanup());
    const dir = mkdtempSync(join(tmpdir(), 'millrace-role-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const rt = await Runtime.open(env.config);
    cleanups.push(() => rt.close());
    const child = spawnTs(
      'test/support/exclusive-consumer.ts',
      [writeConfigFile(dir, { ...env.input, node_id: 'child' })],
      {},
      { group: true },
    );
    cleanups.push(() => {
      signalGroup(child, 'SIGCONT');
      signalGroup(child, 'SIGKILL');
    });
    let stdout = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const childHandled = (): number[] =>
      stdout
        .split('\n')
        .filter((l) => l.startsWith('{"handled"'))
        .flatMap((l) => (JSON.parse(l) as { handled: number[] }).handled);
    await waitFor(() => stdout.includes('"holding":true'), 30_000, 'the child to hold the consumer');
    const handledHere: number[] = [];
    const mine: Consumer = rt.cursors.consume({
      shard: 's0',
      name: 'x',
      mode: 'at-least-once',
      exclusive: true,
      handler: async (events) => {
        handledHere.push(...events.map((e) => e.pos!));
      },
    });
    cleanups.push(() => mine.stop());
    const appendN = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await rt.log.positions(await rt.log.append(`c/${i % 3}`, [{ type: 'e', data: i }]));
    };
    await appendN(10);
    await waitFor(
      async () => (await rt.cursors.position('s0', 'x')) === 10,
      10_000,
      'the child to handle the first events',
    );
    expect(handledHere).toEqual([]);

    signalGroup(child, 'SIGSTOP');
    await appendN(5);
    // Failure detection only: well past lease + a tick.
    await waitFor(() => mine.holding, LEASE_MS * 10, 'this node to take the consumer over from the frozen holder');
    await waitFor(() => handledHere.includes(15), 10_000, 'the new holder to handle the new events');
    expect(handledHere).toEqual([11, 12, 13, 14, 15]);
    expect(child.exitCode).toBe(null);

    signalGroup(child, 'SIGCONT');
    await waitFor(
      async () => {
        const rows = await rt.storage
          .shard('s0')
          .reader.all<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'millrace:child:s0-lock' AND wait_event_type = 'Lock'",
          );
        return rows[0]!.n === 1;
      },
      15_000,
      'the resumed child to stand by',
    );
    await appendN(5);
    await waitFor(() => handledHere.includes(20), 10_000, 'this node to go on handling');
    expect(mine.holding).toBe(true);
    expect(childHandled()).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    await waitFor(async () => (await rt.cursors.position('s0', 'x')) === 20, 10_000, 'the position to be stored');
  });
});
