import { MillraceError } from '../core/errors.js';
import { sleep } from '../core/clock.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import type { MachinesContext } from './context.js';
import { emptyState, key, LEASE_CHANNEL, toState, unkey, type Row } from './machine-state.js';
import { SQL } from './machines-sql.js';
import type { MachineState } from './planner.js';

/**
 * Machine leases across nodes that share a shard. A step takes the lease on
 * the machine row (or runs on the one its node kept from its last commit,
 * for `lease_keep_ms`), renews it while it runs, and its commit settles it:
 * kept, or given up when another node asked for the machine. On a single
 * node there are no leases: the state comes from the cache.
 */
export class MachineLeases {
  /** Lease counters for metrics: steps on a kept lease (no round trip), leases taken, asks sent to peers, leases given up to one, leases taken from a node that had ended. */
  readonly stats = { kept: 0, taken: 0, asked: 0, givenUp: 0, fromDead: 0 };
  /** Machines whose lease a committed step already settled (given up or kept by its commit): no release transaction needed. */
  private readonly cleared = new Set<string>();
  /** Machines whose lease this node keeps after a committed step, with when it stops counting on it (lease_keep_ms). */
  private readonly kept = new Map<string, number>();
  /** Machines another node asked for: the next commit here gives the lease up instead of keeping it. */
  private readonly wanted = new Set<string>();
  private readonly keepMs: number;
  private readonly unlisten: Array<() => Promise<void>> = [];
  private sweep: NodeJS.Timeout | undefined;

  constructor(
    private readonly cx: MachinesContext,
    private readonly load: (ns: string, id: string) => Promise<MachineState>,
  ) {
    this.keepMs = cx.multiNode ? cx.cfg.lease_keep_ms : 0;
  }

  /** Listens for other nodes asking for machines whose lease this node keeps. */
  async open(): Promise<void> {
    if (this.keepMs === 0) return;
    // Forget kept leases that ran out (the rows need nothing: an expired lease is free).
    this.sweep = setInterval(
      () => {
        const now = this.cx.rt.clock.now();
        for (const [k, until] of this.kept) if (until < now && !this.cx.queues.busy(k)) this.kept.delete(k);
      },
      Math.max(1000, this.keepMs),
    );
    this.sweep.unref();
    for (const shard of this.cx.rt.storage.shards) {
      if (!shard.driver.capabilities.multiNode) continue;
      this.unlisten.push(
        await shard.driver.listen(LEASE_CHANNEL, (payload) => {
          try {
            const [ns, id, asker] = JSON.parse(payload) as [string, string, string];
            // Every node hears every ask, its own too.
            if (typeof ns === 'string' && typeof id === 'string' && asker !== this.cx.holder)
              this.onLeaseWanted(ns, id);
          } catch {
            // Not ours to read.
          }
        }),
      );
    }
  }

  /** Stops listening and gives up the leases kept for machines that are idle here (the context is marked stopped first). */
  async stop(): Promise<void> {
    clearInterval(this.sweep);
    for (const u of this.unlisten.splice(0))
      await u().catch((err: unknown) =>
        this.cx.rt.logger.debug({ err }, 'machines: could not stop listening for lease asks'),
      );
    const idle = [...this.kept.keys()].filter((k) => !this.cx.queues.busy(k));
    for (const k of idle) this.kept.delete(k);
    await Promise.all(
      idle.map((k) => {
        const [ns, id] = unkey(k);
        return this.releaseLease(ns, id).catch((err: unknown) => this.notReleased(err, ns, id));
      }),
    );
  }

  /**
   * Another node wants the machine: a lease kept here after a commit is given
   * up in the machine's turn (so no local step starts half-way through); a
   * running step's commit gives it up instead of keeping it.
   */
  private onLeaseWanted(ns: string, id: string): void {
    const k = key(ns, id);
    const busy = this.cx.queues.busy(k);
    if (!busy && !this.kept.has(k)) return;
    this.wanted.add(k);
    if (busy) return;
    void this.cx.queues
      .run(k, async () => {
        this.wanted.delete(k);
        // A step queued before this turn may have given it up already (or it ran out).
        if (!this.kept.delete(k)) return;
        this.stats.givenUp++;
        await this.releaseLease(ns, id);
      })
      // Not given up here: the lease runs out by itself (its end is at most keep and margin ahead).
      .catch(() => this.wanted.delete(k));
  }

  /** The machine's state for a step: from the cache on a single node, or with the lease across nodes. */
  async acquire(ns: string, id: string, deadline: number, starting: boolean): Promise<MachineState> {
    const { cx } = this;
    const k = key(ns, id);
    if (!cx.multiNode) {
      const hit = cx.cache.state(k);
      if (hit) return hit;
      const state = await this.load(ns, id);
      cx.cache.put(k, state);
      return state;
    }
    const kept = this.kept.get(k);
    if (kept !== undefined) {
      // Still ours for a while (kept at the last commit, nobody asked for it): no round trip.
      const hit = cx.cache.state(k);
      if (hit && !this.wanted.has(k) && kept - cx.rt.clock.now() >= this.keepMs / 2) {
        this.stats.kept++;
        return hit;
      }
      this.kept.delete(k);
    }
    const shard = cx.shardOf(ns, id);
    let attempt = 0;
    for (;;) {
      const now = cx.rt.clock.now();
      const sql = SQL.takeLease;
      const params = [cx.holder, this.stepLeaseEnd(deadline), ns, id, now, cx.holder];
      // The lease need not wait for a group commit's flush: lost in a database
      // crash, it only frees early, and the step's commit checks the version.
      const relaxed = shard.driver.relaxed;
      let rows = relaxed ? await relaxed.all<Row>(sql, params) : await shard.write((tx) => tx.all<Row>(sql, params));
      if (!rows[0] && attempt % 6 === 1) rows = await this.takeFromDeadNode(shard, ns, id, deadline);
      if (rows[0]) {
        this.stats.taken++;
        const state = toState(rows[0]);
        // The row the lease returns is the truth: a cached window survives only if it belongs to the same
        // generation and ends at or before its last event (events another node committed since are read).
        cx.cache.put(k, state);
        return state;
      }
      const exists = await shard.reader.all<{ n: number }>(SQL.exists, [ns, id]);
      if (exists.length === 0) {
        if (!starting) return emptyState(ns, id);
        await shard.write((tx) => tx.run(SQL.insertEmpty, [ns, id, now]));
        continue;
      }
      // Held by another node: ask it to give the lease up (it may only be keeping it), then again now and then.
      if (attempt % 6 === 0) {
        this.stats.asked++;
        void shard.driver
          .notify(LEASE_CHANNEL, JSON.stringify([ns, id, cx.holder]))
          // The ask is repeated every few attempts; the holder's lease also runs out by itself.
          .catch((err: unknown) => cx.rt.logger.debug({ err, ns, id }, 'machines: could not ask for a lease'));
      }
      const delay = Math.min(500, 5 * 2 ** Math.min(attempt++, 10));
      if (cx.rt.clock.now() + delay >= deadline)
        throw new MillraceError('unavailable', `machine ${id} is being processed by another node`, { retryAfterS: 1 });
      await sleep(delay);
    }
  }

  /**
   * Runs a step (`fn`) that holds the machine's lease (across nodes): the
   * lease is renewed while it runs, and afterwards given up unless the
   * step's commit settled it.
   */
  async hold<T>(ns: string, id: string, deadline: number, fn: () => Promise<T>): Promise<T> {
    const { cx } = this;
    const k = key(ns, id);
    this.cleared.delete(k);
    // The lease of a running step reaches at most one role lease (plus the margin) ahead, so a node
    // that freezes mid-step holds the machine that long, not until the request's deadline; while
    // the step runs, it is extended every half role lease (a lease kept from the last commit too).
    const renew = setInterval(
      () => {
        const shard = cx.shardOf(ns, id);
        const params = [this.stepLeaseEnd(deadline), ns, id, cx.holder];
        void (
          shard.driver.relaxed
            ? shard.driver.relaxed.run(SQL.renewLease, params)
            : shard.write((tx) => tx.run(SQL.renewLease, params))
        )
          // The next renewal tries again; a lease that ran out meanwhile is caught by the commit's version check.
          .catch((err: unknown) => cx.rt.logger.debug({ err, ns, id }, 'machines: lease renewal failed'));
      },
      Math.max(
        50,
        Math.min(
          cx.rt.config.cluster.role_lease_ms / 2,
          Math.max(0, (this.kept.get(k) ?? Infinity) - cx.rt.clock.now() - 100),
        ),
      ),
    );
    try {
      return await fn();
    } finally {
      clearInterval(renew);
      // A step that committed settled the lease in its own transaction; otherwise give it up here.
      if (!this.cleared.delete(k)) {
        this.kept.delete(k);
        this.wanted.delete(k);
        await this.releaseLease(ns, id).catch((err: unknown) => this.notReleased(err, ns, id));
      } else if (this.wanted.has(k) && this.kept.has(k)) {
        // Asked for after this step's commit had kept the lease: give it up before the next turn.
        this.wanted.delete(k);
        this.kept.delete(k);
        this.stats.givenUp++;
        await this.releaseLease(ns, id).catch((err: unknown) => this.notReleased(err, ns, id));
      }
    }
  }

  /**
   * The lease columns a commit writes with the machine's row (the holder and
   * until when, or nulls to give it up), and `settle`, to call once the row
   * is changed: across nodes, the lease is noted as settled when the
   * transaction commits (kept for lease_keep_ms unless another node asked
   * for the machine).
   */
  commitTerms(k: string, now: number): { holder: string | null; until: number | null; settle: (tx: Tx) => void } {
    const { cx } = this;
    const keep = this.keepMs > 0 && !cx.stopped && !this.wanted.has(k);
    const settle = (tx: Tx): void => {
      if (!cx.multiNode) return;
      tx.onCommit(() => {
        this.cleared.add(k);
        if (keep) this.kept.set(k, now + this.keepMs);
        else {
          this.kept.delete(k);
          if (this.wanted.delete(k)) this.stats.givenUp++;
        }
      });
    };
    return { holder: keep ? cx.holder : null, until: keep ? now + this.keepMs + cx.cfg.lease_margin_ms : null, settle };
  }

  /** When the lease of a step that runs now ends: one role lease ahead at most, never past the deadline, plus the margin. */
  private stepLeaseEnd(deadline: number): number {
    return (
      Math.min(deadline, this.cx.rt.clock.now() + this.cx.rt.config.cluster.role_lease_ms) + this.cx.cfg.lease_margin_ms
    );
  }

  /**
   * The lease is held by another node: if that node's process has ended (a
   * killed node's node claim is gone with its session), take the lease now
   * instead of waiting out its keep and margin. Safe even if the node were
   * only cut off: a step commits only against the version it read.
   */
  private async takeFromDeadNode(shard: Shard, ns: string, id: string, deadline: number): Promise<Row[]> {
    const { cx } = this;
    const [row] = await shard.reader.all<{ lease_holder: string | null }>(SQL.leaseHolder, [ns, id]);
    const holder = row?.lease_holder;
    if (holder === null || holder === undefined || holder === cx.holder) return [];
    if ((await cx.rt.nodeAlive(holder)) !== false) return [];
    const params = [cx.holder, this.stepLeaseEnd(deadline), ns, id, holder];
    const relaxed = shard.driver.relaxed;
    const rows = relaxed
      ? await relaxed.all<Row>(SQL.takeDeadLease, params)
      : await shard.write((tx) => tx.all<Row>(SQL.takeDeadLease, params));
    if (rows[0]) this.stats.fromDead++;
    return rows;
  }

  private async releaseLease(ns: string, id: string): Promise<void> {
    const shard = this.cx.shardOf(ns, id);
    const sql = SQL.releaseLease;
    const params = [ns, id, this.cx.holder];
    if (shard.driver.relaxed) await shard.driver.relaxed.run(sql, params);
    else await shard.write((tx) => tx.run(sql, params));
  }

  /** A lease not given up runs out by itself (its end is at most a role lease and the margin ahead). */
  private notReleased(err: unknown, ns: string, id: string): void {
    this.cx.rt.logger.debug({ err, ns, id }, 'machines: could not give up a lease; it runs out by itself');
  }
}
