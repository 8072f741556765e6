import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Lane, planLane, runPlan, TYPE_RANK, type LaneOp } from '../../src/pipe/lane.js';

type Op = { id: string; type: LaneOp['type']; n: number };

// A job of up to 60 operations over a few sessions, in any interleaving.
const opsArb = fc
  .array(
    fc.record({
      id: fc.constantFrom('a', 'b', 'c', 'd'),
      type: fc.constantFrom<LaneOp['type']>('create', 'append', 'replace', 'store', 'delete'),
    }),
    { maxLength: 60 },
  )
  .map((xs) => xs.map((x, n) => ({ ...x, n })));

describe('planLane', () => {
  it('keeps every session in arrival order and every operation exactly once', () => {
    fc.assert(
      fc.property(opsArb, (ops: Op[]) => {
        const rounds = planLane(ops);
        const flat = rounds.flat();
        expect([...flat].sort((x, y) => x - y)).toEqual(ops.map((_, i) => i));
        for (const id of new Set(ops.map((o) => o.id))) {
          const planned = flat.filter((i) => ops[i]!.id === id);
          expect(planned).toEqual(ops.flatMap((o, i) => (o.id === id ? [i] : [])));
        }
      }),
      { numRuns: 500 },
    );
  });

  it('orders each round by kind (creates, writes, stores, deletes), then arrival; a session has one kind per round', () => {
    fc.assert(
      fc.property(opsArb, (ops: Op[]) => {
        for (const round of planLane(ops)) {
          for (let k = 1; k < round.length; k++) {
            const [p, q] = [ops[round[k - 1]!]!, ops[round[k]!]!];
            expect(
              TYPE_RANK[p.type] < TYPE_RANK[q.type] ||
                (TYPE_RANK[p.type] === TYPE_RANK[q.type] && round[k - 1]! < round[k]!),
            ).toBe(true);
          }
          const rankOf = new Map<string, number>();
          for (const i of round) {
            const r = rankOf.get(ops[i]!.id);
            if (r !== undefined) expect(TYPE_RANK[ops[i]!.type]).toBe(r);
            rankOf.set(ops[i]!.id, TYPE_RANK[ops[i]!.type]);
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('needs as many rounds as the most changes of kind on one session', () => {
    const ops: Op[] = [
      { id: 'a', type: 'create', n: 0 },
      { id: 'b', type: 'append', n: 1 },
      { id: 'a', type: 'append', n: 2 },
      { id: 'a', type: 'replace', n: 3 },
      { id: 'b', type: 'store', n: 4 },
      { id: 'a', type: 'store', n: 5 },
      { id: 'a', type: 'append', n: 6 },
      { id: 'c', type: 'delete', n: 7 },
    ];
    // a: create | append, replace | store | append ; b: append | store ; c: delete
    expect(planLane(ops)).toEqual([[0, 1, 7], [2, 3, 4], [5], [6]]);
    // Already one round in kind order: as it came.
    expect(planLane([ops[0]!, ops[1]!, ops[7]!])).toEqual([[0, 1, 2]]);
    expect(planLane([])).toEqual([]);
  });
});

describe('runPlan', () => {
  it('answers one result per operation, in the order of the operations', async () => {
    await fc.assert(
      fc.asyncProperty(opsArb, async (ops: Op[]) => {
        const runs: Op[][] = [];
        const out = await runPlan(ops, async (run) => {
          runs.push([...run]);
          return run.map((o) => `r${o.n}`);
        });
        expect(out).toEqual(ops.map((o) => `r${o.n}`));
        expect(runs.length).toBe(planLane(ops).length);
      }),
      { numRuns: 200 },
    );
  });
});

describe('Lane', () => {
  function deferred<T>() {
    let resolve!: (v: T) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
    return { promise, resolve, reject };
  }

  it('runs one job at a time; operations queued meanwhile go to the next job, each caller gets its own result', async () => {
    const jobs: Array<{ ops: readonly number[]; done: ReturnType<typeof deferred<number[]>> }> = [];
    const lane = new Lane<number, number>((take) => {
      const done = deferred<number[]>();
      jobs.push({ ops: take(), done });
      return done.promise;
    });
    const p1 = lane.push(1);
    const p2 = lane.push(2);
    expect(jobs.map((j) => j.ops)).toEqual([[1]]);
    const p3 = lane.push(3);
    expect(jobs.length).toBe(1);
    jobs[0]!.done.resolve([10]);
    expect(await p1).toBe(10);
    await Promise.resolve();
    expect(jobs.map((j) => j.ops)).toEqual([[1], [2, 3]]);
    jobs[1]!.done.resolve([20, 30]);
    expect([await p2, await p3]).toEqual([20, 30]);
  });

  it('takes late: a job that asks for its operations later gets every one queued by then, the same on every call', async () => {
    const gate = deferred<void>();
    const seen: Array<readonly string[]> = [];
    const lane = new Lane<string, string>(async (take) => {
      await gate.promise;
      seen.push(take(), take());
      return take().map((s) => s.toUpperCase());
    });
    const ps = [lane.push('a'), lane.push('b'), lane.push('c')];
    gate.resolve();
    expect(await Promise.all(ps)).toEqual(['A', 'B', 'C']);
    expect(seen).toEqual([
      ['a', 'b', 'c'],
      ['a', 'b', 'c'],
    ]);
  });

  it('a failed job rejects its callers only; the next job still runs', async () => {
    let calls = 0;
    const lane = new Lane<number, number>(async (take) => {
      const ops = take();
      if (calls++ === 0) throw new Error('rolled back');
      return ops.map((x) => x * 2);
    });
    const p1 = lane.push(1);
    const p2 = lane.push(2);
    await expect(p1).rejects.toThrow('rolled back');
    expect(await p2).toBe(4);
  });

  it('a job that fails before taking rejects the operations queued by then', async () => {
    const lane = new Lane<number, number>(() => Promise.reject(new Error('no connection')));
    await expect(lane.push(1)).rejects.toThrow('no connection');
    await expect(lane.push(2)).rejects.toThrow('no connection');
  });
});
