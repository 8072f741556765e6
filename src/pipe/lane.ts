/**
 * The lane of client operations: per shard and writer connection, an
 * ordered queue with one job in flight, and the plan that regroups a job's
 * operations into rounds for bulk statements. Pure: no database here; the
 * job itself is a function given to the lane.
 */

/** `moved`: the session's shard no longer owns it, or is fencing it for a split; nothing was written (retry by the new table). */
export type Outcome = 'written' | 'duplicate' | 'refused' | 'done' | 'moved';

/** A client operation on an existing session (or a new one), queued in its shard's lane. */
export type LaneOp = (
  | { type: 'append' | 'replace'; record: Buffer; seq: number | undefined }
  | { type: 'create'; kind: string; owner: string | null }
  | { type: 'store'; due: number; delivery?: number | undefined }
  | { type: 'delete'; delivery?: number | undefined }
) & {
  id: string;
  now: number;
};

export type WriteOp = Extract<LaneOp, { type: 'append' | 'replace' }>;
export type StoreOp = Extract<LaneOp, { type: 'store' }>;
export type CreateOp = Extract<LaneOp, { type: 'create' }>;
export type DeleteOp = Extract<LaneOp, { type: 'delete' }>;

/** Order of operation kinds inside a round of a lane job (appends and replaces are one kind: their writes keep their order). */
export const TYPE_RANK: Record<LaneOp['type'], number> = { create: 0, append: 1, replace: 1, store: 2, delete: 3 };

/**
 * Operations on different sessions commute, so a job regroups them for bulk
 * statements: round r holds each session's r-th stretch of same-kind
 * operations (so a session's order holds), and within a round creates go
 * first, then writes, stores and deletes, each kept in arrival order.
 * Returns the rounds as indexes into `ops`, each in the order to apply.
 */
export function planLane(ops: ReadonlyArray<{ id: string; type: LaneOp['type'] }>): number[][] {
  const last = new Map<string, { rank: number; round: number }>();
  const rounds: number[][] = [];
  for (let i = 0; i < ops.length; i++) {
    const o = ops[i]!;
    const rank = TYPE_RANK[o.type];
    const l = last.get(o.id);
    const round = l === undefined ? 0 : l.rank === rank ? l.round : l.round + 1;
    last.set(o.id, { rank, round });
    (rounds[round] ??= []).push(i);
  }
  // One round already in kind order (the usual case): as it came.
  if (rounds.length === 1 && ops.every((o, i) => i === 0 || TYPE_RANK[ops[i - 1]!.type] <= TYPE_RANK[o.type]))
    return rounds;
  return rounds.map((round) => round.sort((a, b) => TYPE_RANK[ops[a]!.type] - TYPE_RANK[ops[b]!.type] || a - b));
}

/**
 * Runs a job's rounds one after another through `applyRun` (which gets each
 * round's operations in order and answers one result per operation);
 * resolves to the results in the order of `ops`.
 */
export async function runPlan<T extends { id: string; type: LaneOp['type'] }, R>(
  ops: readonly T[],
  applyRun: (run: readonly T[]) => Promise<R[]>,
): Promise<R[]> {
  const rounds = planLane(ops);
  if (rounds.length === 1 && rounds[0]!.every((x, k) => x === k)) return applyRun(ops);
  const out = new Array<R>(ops.length);
  for (const order of rounds) {
    const res = await applyRun(order.map((i) => ops[i]!));
    for (let k = 0; k < order.length; k++) out[order[k]!] = res[k]!;
  }
  return out;
}

/**
 * Runs `run` over the operations whose session is not in `skip`, in their
 * order, and answers `skipped` for the others, in place: one result per
 * operation, in the order of `ops` (a lane job's sessions that its shard may
 * not write now are answered without being applied).
 */
export async function runExcept<T extends { id: string }, R>(
  ops: readonly T[],
  skip: ReadonlySet<string>,
  skipped: R,
  run: (kept: readonly T[]) => Promise<R[]>,
): Promise<R[]> {
  if (skip.size === 0) return run(ops);
  const kept = ops.filter((o) => !skip.has(o.id));
  const res = kept.length === 0 ? [] : await run(kept);
  let k = 0;
  return ops.map((o) => (skip.has(o.id) ? skipped : res[k++]!));
}

interface Waiting<T, R> {
  op: T;
  resolve: (r: R) => void;
  reject: (err: unknown) => void;
}

/**
 * An ordered queue with one job in flight: a job takes every operation
 * queued by the time it calls `take` (the same ones on every call, so a job
 * run again after a rollback applies the same), and its results go to the
 * callers in order. Operations queued meanwhile go to the next job.
 */
export class Lane<T, R> {
  private queue: Array<Waiting<T, R>> = [];
  private busy = false;

  constructor(private readonly job: (take: () => readonly T[]) => Promise<readonly R[]>) {}

  push(op: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ op, resolve, reject });
      if (!this.busy) this.run();
    });
  }

  private run(): void {
    this.busy = true;
    let taken: Array<Waiting<T, R>> | null = null;
    let ops: T[] = [];
    const takeWaiting = (): Array<Waiting<T, R>> => {
      if (taken === null) {
        taken = this.queue;
        this.queue = [];
        ops = taken.map((w) => w.op);
      }
      return taken;
    };
    const take = (): readonly T[] => {
      takeWaiting();
      return ops;
    };
    let job: Promise<readonly R[]>;
    try {
      job = this.job(take);
    } catch (err) {
      job = Promise.reject(err);
    }
    job
      .then(
        (out) => {
          const w = takeWaiting();
          for (let i = 0; i < w.length; i++) w[i]!.resolve(out[i]!);
        },
        (err: unknown) => {
          for (const w of takeWaiting()) w.reject(err);
        },
      )
      .finally(() => {
        this.busy = false;
        if (this.queue.length > 0) this.run();
      });
  }
}
