import type { Logger } from 'pino';
import { sleepUnless } from '../core/waker.js';
import type { Tx } from '../storage/port.js';
import type { RoleLease } from '../storage/role-leases.js';
import type { Shard, Storage } from '../storage/storage.js';

/** A batch of log positions on one shard that a rule wants removed, all of one scope (e.g. `topic:orders`). */
export interface PruneBatch {
  scope: string;
  /** Ascending. */
  positions: number[];
}

/**
 * What may be removed, contributed by a face. Rules only ever name the
 * streams they own (bus topics); machine histories are never offered.
 */
export interface RetentionSource {
  readonly name: string;
  /** Whether any rule is set now; with none anywhere the job takes no role (and so holds no session). */
  active(): boolean;
  /**
   * Positions of events on `shard` to remove now, oldest first, at most
   * `limit` in all, each batch below `below` (the head, which is never
   * removed: the next append chains on its hash).
   */
  candidates?(shard: Shard, below: number, limit: number): Promise<PruneBatch[]>;
  /** Inside the transaction that removes `removed` (the positions actually removed): bookkeeping such as lost counts. */
  onRemoved?(tx: Tx, shard: Shard, scope: string, removed: readonly number[]): Promise<void>;
  /** Removes at most `limit` rows outside the log (e.g. dead pipe sessions); resolves to how many. */
  sweep?(shard: Shard, limit: number): Promise<number>;
}

interface Interval {
  first: number;
  last: number;
  hash: Buffer;
  stored: boolean;
}

/**
 * Removes the events at `positions` (those still present and below the
 * shard's head) inside `tx`, and records each run of removed positions in
 * `chain_gaps` with the hash of its last event, merging runs that touch.
 * Returns the positions removed.
 *
 * Why a table of gap anchors and not a "prev hash" column on every row: the
 * anchors need no change to how events are written (the sequencer and the
 * SQLite append path stay as they are), they cost one row per run of
 * removed positions (runs merge as neighbours go, so a topic pruned in order
 * leaves one row), and the verifier still recomputes every remaining event's
 * hash from its predecessor's: a run's anchor stands in for the removed
 * predecessor exactly as the shard checkpoint (the run that starts at 1)
 * stands in for the removed prefix.
 */
export async function removeEventsIn(tx: Tx, positions: readonly number[]): Promise<number[]> {
  if (positions.length === 0) return [];
  const marks = positions.map(() => '?').join(', ');
  const rows = await tx.all<{ pos: number; hash: Buffer }>(
    `SELECT pos, hash FROM events WHERE pos IN (${marks}) AND pos < (SELECT MAX(pos) FROM events) ORDER BY pos`,
    positions,
  );
  if (rows.length === 0) return [];
  const lo = Number(rows[0]!.pos);
  const hi = Number(rows[rows.length - 1]!.pos);
  const gaps = await tx.all<{ first_pos: number; last_pos: number; last_hash: Buffer }>(
    'SELECT first_pos, last_pos, last_hash FROM chain_gaps WHERE last_pos >= ? AND first_pos <= ? ORDER BY first_pos',
    [lo - 1, hi + 1],
  );
  const intervals: Interval[] = [
    ...gaps.map((g) => ({ first: Number(g.first_pos), last: Number(g.last_pos), hash: g.last_hash, stored: true })),
    ...rows.map((r) => ({ first: Number(r.pos), last: Number(r.pos), hash: r.hash, stored: false })),
  ].sort((a, b) => a.first - b.first);
  const merged: Array<Interval & { parts: Interval[] }> = [];
  for (const iv of intervals) {
    const cur = merged[merged.length - 1];
    if (cur !== undefined && iv.first === cur.last + 1) {
      cur.last = iv.last;
      cur.hash = iv.hash;
      cur.parts.push(iv);
    } else merged.push({ ...iv, parts: [iv] });
  }
  const removed = rows.map((r) => Number(r.pos));
  await tx.run(`DELETE FROM events WHERE pos IN (${removed.map(() => '?').join(', ')})`, removed);
  for (const m of merged) {
    // A stored run that absorbs nothing stays as it is.
    if (m.parts.length === 1 && m.parts[0]!.stored) continue;
    const stored = m.parts.filter((p) => p.stored);
    if (stored.length)
      await tx.run(
        `DELETE FROM chain_gaps WHERE first_pos IN (${stored.map(() => '?').join(', ')})`,
        stored.map((p) => p.first),
      );
    await tx.run('INSERT INTO chain_gaps (first_pos, last_pos, last_hash) VALUES (?, ?, ?)', [m.first, m.last, m.hash]);
  }
  return removed;
}

/** Records that `removed` events of `scope` are gone (its horizon and count). */
export async function recordHorizonIn(tx: Tx, scope: string, removed: readonly number[], now: number): Promise<void> {
  if (removed.length === 0) return;
  const top = removed[removed.length - 1]!;
  await tx.run(
    `INSERT INTO retention_horizons (scope, pos, removed, updated_at) VALUES (?, ?, ?, ?)
     ON CONFLICT (scope) DO UPDATE SET pos = CASE WHEN retention_horizons.pos > excluded.pos THEN retention_horizons.pos ELSE excluded.pos END,
       removed = retention_horizons.removed + excluded.removed, updated_at = excluded.updated_at`,
    [scope, top, removed.length, now],
  );
}

/** The shard's checkpoint: the run of removed positions that starts at 1 (position 0 and the genesis hash when none). */
export async function checkpointOf(shard: Shard): Promise<{ pos: number; hash: Buffer | null }> {
  const rows = await shard.reader.all<{ last_pos: number; last_hash: Buffer }>(
    'SELECT last_pos, last_hash FROM chain_gaps WHERE first_pos = 1',
  );
  const r = rows[0];
  return r === undefined ? { pos: 0, hash: null } : { pos: Number(r.last_pos), hash: r.last_hash };
}

export interface PrunerOptions {
  intervalMs: number;
  batch: number;
  logger: Logger;
  now: () => number;
  /** Awaited inside each removing transaction, after the rows are removed (tests stand for a crash there). */
  afterRemove?: () => Promise<void>;
}

export interface PassResult {
  removed: number;
  swept: number;
}

/**
 * The pruning job: on each shard, the node that holds the shard's pruner
 * role (`RoleLeases`, so a node that hangs loses it and another takes over)
 * removes what the retention sources name, one bounded batch per
 * transaction through the group committer (writers interleave between
 * batches), each transaction fenced by the role's epoch.
 */
export class Pruner {
  private readonly sources: RetentionSource[] = [];
  private readonly abort = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private stopped = false;
  /** Shards whose role this node holds now (diagnostics). */
  readonly holding = new Set<string>();

  constructor(
    private readonly storage: Storage,
    private readonly opts: PrunerOptions,
  ) {}

  static role(shard: string): string {
    return `millrace:pruner:${shard}`;
  }

  register(source: RetentionSource): void {
    this.sources.push(source);
  }

  start(): void {
    for (const shard of this.storage.shards) this.loops.push(this.loop(shard));
  }

  private async loop(shard: Shard): Promise<void> {
    while (!this.stopped) {
      // No rule anywhere: hold no role (a role costs a session on PostgreSQL); look again later.
      if (!this.sources.some((s) => s.active())) {
        await sleepUnless(this.opts.intervalMs, this.abort.signal);
        continue;
      }
      let lease: RoleLease;
      try {
        lease = await shard.roles.acquire(Pruner.role(shard.name), this.abort.signal);
      } catch (err) {
        if (this.stopped) return;
        this.opts.logger.warn({ err, shard: shard.name }, 'pruner: cannot reach the shard');
        await sleepUnless(this.opts.intervalMs, this.abort.signal);
        continue;
      }
      this.holding.add(shard.name);
      try {
        while (!this.stopped && !lease.lost.aborted) {
          try {
            await this.pass(shard, lease);
          } catch (err) {
            if (this.stopped || lease.lost.aborted) break;
            this.opts.logger.warn({ err, shard: shard.name }, 'pruner: pass failed');
          }
          await sleepUnless(this.opts.intervalMs, AbortSignal.any([this.abort.signal, lease.lost]));
          if (!this.sources.some((s) => s.active())) break;
        }
      } finally {
        this.holding.delete(shard.name);
        await lease
          .release()
          .catch((err: unknown) =>
            this.opts.logger.warn(
              { err, shard: shard.name },
              'pruner: releasing the role lease failed; it lapses at the end of its term',
            ),
          );
      }
    }
  }

  /** One pass over `shard`: batches until the sources name nothing more. */
  async pass(shard: Shard, lease?: RoleLease): Promise<PassResult> {
    const out: PassResult = { removed: 0, swept: 0 };
    for (const src of this.sources) {
      if (src.sweep) {
        for (;;) {
          if (this.stopped || lease?.lost.aborted) return out;
          const n = await src.sweep(shard, this.opts.batch);
          out.swept += n;
          if (n < this.opts.batch) break;
        }
      }
      if (!src.candidates) continue;
      for (;;) {
        if (this.stopped || lease?.lost.aborted) return out;
        const headRows = await shard.reader.all<{ head: number | null }>('SELECT MAX(pos) AS head FROM events');
        const head = Number(headRows[0]?.head ?? 0);
        const batches = await src.candidates(shard, head, this.opts.batch);
        const total = batches.reduce((n, b) => n + b.positions.length, 0);
        if (total === 0) break;
        const step = async (): Promise<number> =>
          shard.write(async (tx) => {
            if (lease) await lease.fence(tx);
            let n = 0;
            for (const b of batches) {
              const removed = await removeEventsIn(tx, b.positions);
              await recordHorizonIn(tx, b.scope, removed, this.opts.now());
              if (src.onRemoved) await src.onRemoved(tx, shard, b.scope, removed);
              n += removed.length;
            }
            if (this.opts.afterRemove) await this.opts.afterRemove();
            return n;
          });
        const n = lease ? await lease.step(step) : await step();
        out.removed += n;
        // Nothing removable among what was named (e.g. only the head): done for now.
        if (n === 0) break;
      }
    }
    return out;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await Promise.allSettled(this.loops);
  }
}
