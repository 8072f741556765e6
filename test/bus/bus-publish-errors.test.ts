import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestEnv, DIALECTS, PG_ADMIN_URL, waitFor, type TestEnv } from '../support/env.js';
import { checkStored, eventsOf, rowsOfAttempt, storedOf, type Acked, type Plan } from './order-support.js';
import { startBusNode } from './support.js';
import { MillraceError, toMillraceError } from '../../src/core/errors.js';
import type { Node } from '../../src/serve.js';
import type { Bus } from '../../src/bus/bus.js';
import type { Published } from '../../src/bus/publisher.js';
import type { Shard } from '../../src/storage/storage.js';
import type { Log } from '../../src/log/log.js';
import type { Tx } from '../../src/storage/port.js';

/**
 * What a publish answers when a failure strikes after part of it committed:
 * either nothing was stored, or the answer is retryable (`unavailable`) and
 * publishing the same batch again answers the stored ids as duplicates, at
 * their positions, and stores each id once.
 */

/** What to do to one shard transaction, decided from the statements it ran. */
type Rule = (shard: string, statements: readonly string[]) => 'pass' | 'rollback' | 'lose-commit';

class Faults {
  rule: Rule = () => 'pass';
  /** Awaited inside a transaction once its statements ran, before it commits (to hold it open). */
  hold: ((shard: string, statements: readonly string[]) => Promise<void>) | null = null;
  failPositions = false;
  /** Every write the publisher started, to wait for all of them in a test. */
  readonly inFlight = new Set<Promise<unknown>>();

  install(shards: readonly Shard[], log: Log): void {
    for (const shard of shards) {
      const write = shard.write.bind(shard);
      shard.write = (<T>(fn: (tx: Tx) => Promise<T>): Promise<T> => {
        let verdict: ReturnType<Rule> = 'pass';
        const run = async (): Promise<T> => {
          return write(async (tx) => {
            const statements: string[] = [];
            const spy: Tx = {
              all: (sql, params) => (statements.push(sql), tx.all(sql, params)),
              run: (sql, params) => (statements.push(sql), tx.run(sql, params)),
              onCommit: (f) => tx.onCommit(f),
              onRollback: (f) => tx.onRollback(f),
              notify: (c) => tx.notify(c),
            };
            const v = await fn(spy);
            await this.hold?.(shard.name, statements);
            verdict = this.rule(shard.name, statements);
            // Thrown inside the transaction: the group committer rolls this caller back.
            if (verdict === 'rollback')
              throw new Error(`injected: statement failed on ${shard.name}, transaction rolled back`);
            return v;
          }).then((v) => {
            // Committed, but the connection dropped before COMMIT's answer: the committer answers unavailable.
            if (verdict === 'lose-commit')
              throw new MillraceError('unavailable', 'write not committed: injected loss of the connection at COMMIT', {
                retryAfterS: 1,
              });
            return v;
          });
        };
        const p = run();
        this.inFlight.add(p);
        // Only tracks what is in flight: the caller gets the error from `p`.
        void p.catch(() => {}).finally(() => this.inFlight.delete(p));
        return p;
      }) as Shard['write'];
    }
    const positions = log.positions.bind(log);
    log.positions = async (...args: Parameters<Log['positions']>) => {
      const r = await positions(...args);
      if (this.failPositions) throw new Error('injected: reading positions failed');
      return r;
    };
  }

  reset(): void {
    this.rule = () => 'pass';
    this.hold = null;
    this.failPositions = false;
  }

  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }
}

const writesEvents = (statements: readonly string[]): boolean => statements.some((s) => /INSERT INTO events/i.test(s));

describe.each(DIALECTS)('bus publish errors after a partial commit (%s)', (dialect) => {
  for (const shards of [1, 2]) {
    describe(`${shards} shard(s)`, () => {
      let env: TestEnv;
      let node: Node;
      let bus: Bus;
      const faults = new Faults();
      let run = 0;
      beforeAll(async () => {
        env = await createTestEnv(dialect, { shards });
        ({ node, bus } = await startBusNode(env));
        faults.install(node.runtime.storage.shards, node.runtime.log);
      });
      afterAll(async () => {
        await node?.close();
        await env?.cleanup();
      });

      const shardOfKey = (k: string): string => node.runtime.storage.shardFor(['orders', k]).name;
      /** 10 events with ids, over keys of every shard. */
      const batch = (): Array<Record<string, unknown>> => {
        const r = `${dialect}${shards}-${run++}`;
        return Array.from({ length: 10 }, (_, i) => ({
          id: `${r}-id${i}`,
          topic: 'orders',
          key: `${r}-k${i % 5}`,
          type: 't',
          data: { i },
        }));
      };
      const storedIds = async (events: ReadonlyArray<Record<string, unknown>>): Promise<Map<string, number>> => {
        const ids = new Set(events.map((e) => e.id as string));
        const counts = new Map<string, number>();
        for (const s of node.runtime.storage.shards) {
          const rows = await s.reader.all<{ meta: string }>("SELECT meta FROM events WHERE stream LIKE 't/orders/%'");
          for (const r of rows) {
            const id = (JSON.parse(r.meta) as { id?: string }).id;
            if (id !== undefined && ids.has(id)) counts.set(id, (counts.get(id) ?? 0) + 1);
          }
        }
        return counts;
      };
      /** Publishes, answering the error as a transport would, once every write of the attempt has settled. */
      const attempt = async (
        events: Array<Record<string, unknown>>,
      ): Promise<{ ok: Published[] } | { err: MillraceError }> => {
        try {
          return { ok: await bus.publish(events) };
        } catch (err) {
          return { err: toMillraceError(err) };
        } finally {
          await faults.settled();
          faults.reset();
        }
      };
      /** The error answer is retryable, or nothing is stored; then a republish stores each id once and answers the stored ones as duplicates. */
      const expectSafe = async (
        events: Array<Record<string, unknown>>,
        first: { ok: Published[] } | { err: MillraceError },
        expectStored: 'some' | 'none' | 'any',
      ) => {
        expect('err' in first).toBe(true);
        const err = (first as { err: MillraceError }).err;
        const before = await storedIds(events);
        if (expectStored === 'some') expect(before.size).toBeGreaterThan(0);
        if (expectStored === 'none') expect(before.size).toBe(0);
        if (before.size > 0) expect([err.code, err.retryable]).toEqual(['unavailable', true]);
        const again = await attempt(events);
        expect('ok' in again).toBe(true);
        const answer = (again as { ok: Published[] }).ok;
        const after = await storedIds(events);
        expect([...after.values()]).toEqual(events.map(() => 1));
        events.forEach((e, i) => expect([e.id, answer[i]!.duplicate]).toEqual([e.id, before.has(e.id as string)]));
        // A third publish answers every id as a duplicate, at the same positions.
        const third = await bus.publish(events);
        expect(third).toEqual(answer.map((p) => ({ ...p, duplicate: true })));
      };

      it('the connection drops at COMMIT of the events: retryable, and the retry answers them as duplicates', async () => {
        const events = batch();
        faults.rule = (_s, st) => (writesEvents(st) ? 'lose-commit' : 'pass');
        await expectSafe(events, await attempt(events), 'some');
      });

      it('reading the positions fails after the events committed: retryable, and the retry answers them as duplicates', async () => {
        const events = batch();
        faults.failPositions = true;
        await expectSafe(events, await attempt(events), 'some');
      });

      if (shards > 1) {
        it('the keys of a batch route to both shards', () => {
          expect(new Set(batch().map((e) => shardOfKey(e.key as string))).size).toBe(2);
        });

        it('one shard stores its events, the other rolls back: retryable, and the retry stores the rest once', async () => {
          const events = batch();
          faults.rule = (s, st) => (s === 's1' && writesEvents(st) ? 'rollback' : 'pass');
          await expectSafe(events, await attempt(events), 'some');
        });

        it('one shard fails while the other is still committing: the answer waits for it, and is retryable', async () => {
          const events = batch();
          let s1Failed!: () => void;
          const failed = new Promise<void>((r) => (s1Failed = r));
          // The transaction that stores events on s0 stays open until the one on s1 has failed.
          faults.hold = async (s, st) => {
            if (s === 's0' && writesEvents(st)) await failed;
          };
          faults.rule = (s, st) => {
            if (s === 's1' && writesEvents(st)) {
              setImmediate(s1Failed);
              return 'rollback';
            }
            return 'pass';
          };
          await expectSafe(events, await attempt(events), 'some');
        });

        it('the claims commit but every event write rolls back: nothing is stored, and the retry takes the claims over', async () => {
          const events = batch();
          faults.rule = (_s, st) => (writesEvents(st) ? 'rollback' : 'pass');
          await expectSafe(events, await attempt(events), 'none');
        });

        it('the claims of one home shard are lost at COMMIT: retryable, nothing stored, the retry stores each id once', async () => {
          const events = batch();
          faults.rule = (s, st) => (s === 's0' && !writesEvents(st) ? 'lose-commit' : 'pass');
          const first = await attempt(events);
          expect('err' in first && first.err.retryable).toBe(true);
          await expectSafe(events, first, 'none');
        });
      }
    });
  }
});

describe.skipIf(!DIALECTS.includes('postgres'))(
  "bus publish while PostgreSQL drops one shard's sessions (postgres)",
  () => {
    let env: TestEnv;
    let node: Node;
    let bus: Bus;
    beforeAll(async () => {
      env = await createTestEnv('postgres', { shards: 2 });
      ({ node, bus } = await startBusNode(env));
    });
    afterAll(async () => {
      await node?.close();
      await env?.cleanup();
    });

    it('every error answer is retryable or stored nothing; republishing stores each id once, each key in publish order', async () => {
      const run = 'pgkill';
      const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
      await admin.connect();
      // The pool sessions (writers and readers) of shard s1, not its lock or LISTEN sessions.
      const appName = `millrace:${node.runtime.config.node_id}:s1`;
      let killing = true;
      let terminated = 0;
      // Sessions are dropped for the first 40 rounds, then the publishers finish.
      const killer = (async () => {
        for (let round = 0; killing && round < 40; round++) {
          const r = await admin.query(
            'SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = $1',
            [appName],
          );
          terminated += Number(r.rows[0].n);
          await new Promise((res) => setTimeout(res, 50));
        }
      })();
      const plan: Plan = Array.from({ length: 4 }, (_, pub) =>
        Array.from({ length: 12 }, (_, b) =>
          Array.from({ length: 10 }, (_, i) => ({
            key: (pub + b + i) % 6,
            id: i % 4 === 3 ? null : (pub * 1000 + b * 10 + i) % 150,
          })),
        ),
      );
      const acked: Acked[] = [];
      try {
        await Promise.all(
          plan.map(async (batches, pub) => {
            for (let batch = 0; batch < batches.length; batch++) {
              for (let attempt = 0; ; attempt++) {
                expect(attempt).toBeLessThan(200);
                try {
                  const answer = await bus.publish(eventsOf(run, pub, batch, attempt, batches[batch]!));
                  acked.push({ pub, batch, attempt, plan: batches[batch]!, answer });
                  break;
                } catch (err) {
                  const e = toMillraceError(err);
                  if (!e.retryable) {
                    const rows = rowsOfAttempt(
                      await storedOf(node.runtime.storage.shards, run).catch(() => []),
                      pub,
                      batch,
                      attempt,
                    );
                    expect([e.code, e.message, rows.length]).toEqual([e.code, e.message, 0]);
                  }
                  await new Promise((res) => setTimeout(res, 10));
                }
              }
            }
          }),
        );
      } finally {
        killing = false;
        await killer;
        await admin.end();
      }
      expect(terminated).toBeGreaterThan(0);
      const rows = await waitFor(
        async () => {
          // Undefined while the storage cannot answer yet: waitFor tries again.
          const rs = await storedOf(node.runtime.storage.shards, run).catch(() => undefined);
          return rs?.every((r) => r.pos !== null) ? rs : undefined;
        },
        20_000,
        'numbered events',
      );
      checkStored(run, plan, rows, acked);
    }, 120_000);
  },
);
