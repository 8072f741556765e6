import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { spawnTs, writeConfigFile } from '../support/proc.js';
import { busInput, startBusNode } from './support.js';
import { checkStored, eventsOf, planArb, rowsOfAttempt, storedOf, type Acked, type Plan } from './order-support.js';
import { MillraceError, toMillraceError } from '../../src/core/errors.js';
import type { Node } from '../../src/serve.js';
import type { Bus } from '../../src/bus/bus.js';
import type { Shard } from '../../src/storage/storage.js';
import type { Log } from '../../src/log/log.js';

/**
 * Per-key order of bus events that carry ids over several shards, and what
 * an error answer of a publish means, under injected failures at random
 * points between the claims and the writes:
 *  - `before`: a shard's transaction fails and is rolled back (a statement
 *    broke, the connection dropped mid-transaction);
 *  - `commit`: a shard's transaction committed, but the caller is told it
 *    failed (the connection dropped at COMMIT), as the group committer
 *    answers it: `unavailable`;
 *  - `positions`: the events committed, then reading their positions fails.
 * Whatever is injected: an error answer is retryable, or nothing of that
 * attempt was stored; republishing the batch stores each id once; per key,
 * a publisher's events are stored in publish order.
 */

type Fault = 'none' | 'before' | 'commit' | 'positions';

class Injector {
  private faults: Fault[] = [];
  readonly seen = { before: 0, commit: 0, positions: 0 };
  arm(faults: Fault[]): void {
    this.faults = [...faults];
  }
  next(): Fault {
    return this.faults.shift() ?? 'none';
  }
  install(shards: readonly Shard[], log: Log): void {
    for (const shard of shards) {
      const write = shard.write.bind(shard);
      shard.write = (<T>(fn: Parameters<Shard['write']>[0]): Promise<T> => {
        const f = this.next();
        if (f === 'before') {
          this.seen.before++;
          return Promise.reject(new Error('injected: connection lost inside the transaction'));
        }
        const done = write(fn) as Promise<T>;
        if (f !== 'commit') return done;
        return done.then(() => {
          this.seen.commit++;
          throw new MillraceError('unavailable', 'write not committed: injected loss of the connection at COMMIT', {
            retryAfterS: 1,
          });
        });
      }) as Shard['write'];
    }
    const positions = log.positions.bind(log);
    log.positions = async (...args: Parameters<Log['positions']>) => {
      const r = await positions(...args);
      if (this.next() === 'positions') {
        this.seen.positions++;
        throw new Error('injected: reading positions failed');
      }
      return r;
    };
  }
}

/** Fails with `what` if `p` has not settled within `ms` (failure detection only). */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>(
        (_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)),
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const faultArb = fc.array(fc.constantFrom<Fault>('none', 'none', 'none', 'before', 'commit', 'positions'), {
  maxLength: 24,
});

describe.each(DIALECTS)('bus per-key order with ids over several shards (%s)', (dialect) => {
  const nodes = new Map<number, { env: TestEnv; node: Node; bus: Bus; injector: Injector }>();
  afterAll(async () => {
    for (const { node, env } of nodes.values()) {
      await node.close();
      await env.cleanup();
    }
  });
  const nodeWith = async (shards: number) => {
    let n = nodes.get(shards);
    if (n === undefined) {
      const env = await createTestEnv(dialect, { shards });
      const { node, bus } = await startBusNode(env);
      const injector = new Injector();
      injector.install(node.runtime.storage.shards, node.runtime.log);
      n = { env, node, bus, injector };
      nodes.set(shards, n);
    }
    return n;
  };

  let runs = 0;
  /** Publishes the plan (publishers concurrently, each batch after the last), republishing a batch after an error. */
  const runPlan = async (shards: number, plan: Plan, faults: Fault[]) => {
    const { node, bus, injector } = await nodeWith(shards);
    const run = `${dialect}${shards}r${runs++}`;
    injector.arm(faults);
    const acked: Acked[] = [];
    const errors: Array<{ code: string; retryable: boolean }> = [];
    await Promise.all(
      plan.map(async (batches, pub) => {
        for (let batch = 0; batch < batches.length; batch++) {
          for (let attempt = 0; ; attempt++) {
            expect(attempt).toBeLessThan(30);
            try {
              const answer = await bus.publish(eventsOf(run, pub, batch, attempt, batches[batch]!));
              acked.push({ pub, batch, attempt, plan: batches[batch]!, answer });
              break;
            } catch (err) {
              // As a transport answers it.
              const e = toMillraceError(err);
              errors.push({ code: e.code, retryable: e.retryable });
              // Not retryable: then nothing of this attempt may have been stored.
              if (!e.retryable) {
                const rows = rowsOfAttempt(await storedOf(node.runtime.storage.shards, run), pub, batch, attempt);
                expect([e.code, e.message, rows.length]).toEqual([e.code, e.message, 0]);
              }
            }
          }
        }
      }),
    );
    injector.arm([]);
    // Events of failed attempts without ids may still wait for the sequencer.
    const rows = await waitFor(
      async () => {
        const rs = await storedOf(node.runtime.storage.shards, run);
        return rs.every((r) => r.pos !== null) ? rs : undefined;
      },
      10_000,
      'numbered events',
    );
    checkStored(run, plan, rows, acked);
    return errors;
  };

  it('a batch of 100 events with ids over 16 keys is stored in publish order on two shards', async () => {
    const plan: Plan = [[Array.from({ length: 100 }, (_, i) => ({ key: i % 16, id: i }))]];
    await runPlan(2, plan, []);
  });

  it('property: per-key positions rise in publish order and each id is stored once, over 2-4 shards, concurrent publishers and injected failures', async () => {
    let injected = 0;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 2, max: 4 }), planArb(), faultArb, async (shards, plan, faults) => {
        const errors = await runPlan(shards, plan, faults);
        injected += errors.length;
      }),
      { numRuns: dialect === 'postgres' ? 10 : 20 },
    );
    // The property went through failures, not only through the happy path.
    expect(injected).toBeGreaterThan(0);
  });
});

describe.each(DIALECTS)('bus per-key order with ids over several shards across kill -9 (%s)', (dialect) => {
  const envs = new Map<number, TestEnv>();
  let child: ChildProcess | undefined;
  afterAll(async () => {
    child?.kill('SIGKILL');
    for (const env of envs.values()) await env.cleanup();
  });
  let runs = 0;

  it('property: a publishing process killed at a random point, its unacknowledged batches published again, keeps per-key order and stores each id once', async () => {
    let killedMidway = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 4 }),
        planArb({ batches: 6, events: 16 }),
        fc.nat(),
        async (shards, plan, killAt) => {
          let env = envs.get(shards);
          if (env === undefined) {
            env = await createTestEnv(dialect, { shards });
            envs.set(shards, env);
          }
          const run = `${dialect}${shards}k${runs++}`;
          const total = plan.reduce((n, b) => n + b.length, 0);
          // Killed after this many acknowledgements (all but at least one batch).
          const acksBeforeKill = killAt % total;
          const cfg = writeConfigFile(env.dataDir, busInput(env), 'order.json');
          const planFile = join(env.dataDir, `plan-${run}.json`);
          writeFileSync(planFile, JSON.stringify({ run, plan }));
          const acked: Acked[] = [];
          child = spawnTs('test/bus/order-child.ts', [cfg, planFile]);
          const proc = child;
          let out = '';
          let err = '';
          proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
          const exited = new Promise<void>((r) => proc.once('exit', () => r()));
          await within(
            30_000,
            `child of run ${run}: ready and ${acksBeforeKill} acknowledgements`,
            new Promise<void>((resolve, reject) => {
              let ready = false;
              proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
                out += d;
                let nl: number;
                while ((nl = out.indexOf('\n')) >= 0) {
                  const line = out.slice(0, nl);
                  out = out.slice(nl + 1);
                  if (line === 'ready') ready = true;
                  if (line.startsWith('ack ')) {
                    const a = JSON.parse(line.slice(4)) as Omit<Acked, 'plan'>;
                    acked.push({ ...a, plan: plan[a.pub]![a.batch]! });
                  }
                }
                if (ready && acked.length >= acksBeforeKill) {
                  proc.kill('SIGKILL');
                  resolve();
                }
              });
              proc.once('exit', (code, signal) => {
                if (signal !== 'SIGKILL') reject(new Error(`the child exited with ${code}: ${err}`));
              });
            }),
          );
          await within(10_000, 'exit of the killed child', exited);
          child = undefined;
          if (acked.length < total) killedMidway++;

          // The publishers publish again every batch they were not answered, from the first.
          const { node, bus } = await within(30_000, 'start of the node after the kill', startBusNode(env));
          try {
            await within(
              60_000,
              'publishing the unacknowledged batches again',
              Promise.all(
                plan.map(async (batches, pub) => {
                  const done = new Set(acked.filter((a) => a.pub === pub).map((a) => a.batch));
                  for (let batch = 0; batch < batches.length; batch++) {
                    if (done.has(batch)) continue;
                    const answer = await bus.publish(eventsOf(run, pub, batch, 1, batches[batch]!));
                    acked.push({ pub, batch, attempt: 1, plan: batches[batch]!, answer });
                  }
                }),
              ),
            );
            const rows = await waitFor(
              async () => {
                const rs = await storedOf(node.runtime.storage.shards, run);
                return rs.every((r) => r.pos !== null) ? rs : undefined;
              },
              10_000,
              'numbered events',
            );
            checkStored(run, plan, rows, acked);
          } finally {
            await node.close();
          }
        },
      ),
      // Each run starts processes: report the first counterexample rather than shrink it.
      { numRuns: 3, endOnFailure: true },
    );
    expect(killedMidway).toBeGreaterThan(0);
  }, 180_000);
});
