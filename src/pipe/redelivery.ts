import { PAUSED_RECHECK_MS } from '../catalog/pauses.js';
import { isMillraceError } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import { RetryTimer, type Timer, type TimerContext } from '../scheduler/scheduler.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import type { PipeConfig, PipeKindConfig } from './config.js';
import type { Outcome } from './lane.js';
import { heldIn, ownedUnfenced, untilRouted, writableIn } from './moves.js';
import { SQL } from './pipe-sql.js';
import type { Semaphore } from './semaphore.js';
import { idOfTimer, TIMER_LEASE, TIMER_REDELIVER, timerKey } from './session-id.js';
import type { SessionWrites } from './session-writes.js';
import type { Delivery, KindConfigOf, Pusher, PushVerdict, SessionRow } from './types.js';

export interface RedeliveryDeps {
  rt: Runtime;
  config: PipeConfig;
  pusher: Pusher;
  kindConfig: KindConfigOf;
  /** Per kind: push concurrency on this node. */
  semaphores: ReadonlyMap<string, Semaphore>;
  /** Streaming connections of this node that own sessions. */
  owners: ReadonlyMap<string, unknown>;
  writes: SessionWrites;
  /** Applies a handler's verdict through the session's lane, for that delivery only. */
  verdict: (d: Delivery, v: PushVerdict) => Promise<Outcome>;
  stats: { pushes: number; pushFailures: number };
  /** Whether pushes of a kind are paused (its sessions stay stored and wait). */
  paused?: (kind: string) => boolean;
}

/**
 * Bringing sessions back: the redelivery timer of a stored session pushes
 * it to its kind's handler (under the kind's concurrency), the handler's
 * answer or failure settles the delivery, and the lease timer of an open or
 * delivering session finds the ones whose owner or handler went away.
 */
export class Redelivery {
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly d: RedeliveryDeps) {}

  private get rt(): Runtime {
    return this.d.rt;
  }

  private get now(): number {
    return this.d.rt.clock.now();
  }

  private get ttlMs(): number {
    return this.d.config.session_ttl_s * 1000;
  }

  private shardOf(id: string): Shard {
    return this.d.rt.storage.shardFor(id);
  }

  /** Registers the timer handlers. */
  register(): void {
    this.rt.scheduler.register(TIMER_REDELIVER, (t, ctx) => this.onRedeliver(t, ctx));
    this.rt.scheduler.register(TIMER_LEASE, (t, ctx) => this.onLease(t, ctx));
  }

  /** No new pushes; waits for the pushes in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const sem of this.d.semaphores.values()) sem.wakeAll();
    await Promise.allSettled([...this.inFlight]);
  }

  /** An open session's owner went away: stored, due after the kind's default delay. Conditional on what was read. */
  async unfinishedIn(
    tx: Tx,
    id: string,
    kind: string,
    now: number,
    cond: { owner?: string; touchedAt?: number },
  ): Promise<boolean> {
    const delay = (this.d.kindConfig(kind)?.default_delay_s ?? 10) * 1000;
    const due = Math.floor(now + delay);
    const n = await tx.run(SQL.unfinished(cond.owner !== undefined, cond.touchedAt !== undefined), [
      due,
      now,
      id,
      ...(cond.owner !== undefined ? [cond.owner] : []),
      ...(cond.touchedAt !== undefined ? [cond.touchedAt] : []),
    ]);
    if (n === 0) return false;
    await this.d.writes.comeBackIn(tx, id, kind, due);
    return true;
  }

  /** A push failed or its lease ran out: back off, or dead-letter after max_repeats. Conditional on the delivery still being current. */
  private async failedIn(
    tx: Tx,
    id: string,
    kind: string,
    repeats: number,
    error: string,
    now: number,
    touchedAt?: number,
  ): Promise<boolean> {
    const cfg = this.d.kindConfig(kind);
    const byTouched = touchedAt !== undefined;
    const extra = touchedAt === undefined ? [] : [touchedAt];
    if (cfg === undefined || repeats >= cfg.max_repeats) {
      const n = await tx.run(SQL.dead(byTouched), [error.slice(0, 2000), now, id, repeats, ...extra]);
      if (n > 0) await this.rt.scheduler.cancelIn(tx, timerKey(id));
      return n > 0;
    }
    const backoff = Math.min(cfg.retry_max_s, cfg.retry_base_s * 2 ** Math.min(40, repeats - 1)) * 1000;
    const due = Math.floor(now + backoff);
    const n = await tx.run(SQL.backOff(byTouched), [due, error.slice(0, 2000), now, id, repeats, ...extra]);
    if (n > 0) await this.d.writes.comeBackIn(tx, id, kind, due);
    return n > 0;
  }

  /** Stored sessions of these kinds parked for want of a handler get their timers. */
  async unpark(kinds: readonly string[]): Promise<void> {
    for (const shard of this.rt.storage.shards) {
      for (const kind of kinds) {
        for (;;) {
          const rows = await shard.reader.all<{ id: string; due_at: number }>(SQL.parkedOfKind, [kind]);
          if (rows.length === 0) break;
          let done = 0;
          await shard.write(async (tx) => {
            done = 0;
            // A split's source keeps moved sessions for a while: those are the target's to un-park.
            const mine = await writableIn(
              this.rt.storage,
              tx,
              rows.map((r) => r.id),
            );
            for (const r of rows) {
              if (!mine.has(r.id)) continue;
              done++;
              if ((await tx.run(SQL.unparkStored, [r.id])) === 0) continue;
              await this.rt.scheduler.scheduleIn(tx, timerKey(r.id), TIMER_REDELIVER, Number(r.due_at), kind);
            }
          });
          // Rows this shard may not change stay parked here: a page of only those ends the pass.
          if (done === 0) break;
        }
      }
    }
  }

  /**
   * A timer that fired on a shard other than where routing finds its
   * session. After a split that is the source's copy of a moved session's
   * timer (the target fires its own), or the target's copy before the
   * target owns the range. The copy is dropped unacted once its own shard's
   * routing state no longer holds the session's range and the shard routing
   * names owns it, unfenced; otherwise it waits (the range is cutting over,
   * or this node's routing is behind). So a session is acted on only from
   * the shard that owns it.
   */
  private async elsewhere(timer: Timer, ctx: TimerContext, shard: Shard): Promise<boolean> {
    if (shard.name === timer.shard) return false;
    const id = idOfTimer(timer);
    if (await ownedUnfenced(shard.base, id)) {
      const dropped = await this.rt.storage
        .shard(timer.shard)
        .write(async (tx) => (await heldIn(tx, id)) === false && (await ctx.completeIn(tx)));
      if (dropped) return true;
    }
    void this.rt.storage.refreshRouting();
    throw new RetryTimer(Math.min(1000, this.rt.config.scheduler.poll_ms));
  }

  /** A stored session is due: mark it delivering (with a lease) and push it to its kind's handler. */
  private async onRedeliver(timer: Timer, ctx: TimerContext): Promise<void> {
    const id = idOfTimer(timer);
    const shard = this.shardOf(id);
    if (await this.elsewhere(timer, ctx, shard)) return;
    // The kind rides in the timer, so the push waits in its kind's line before any I/O: due order is kept.
    const kind = typeof timer.payload === 'string' ? timer.payload : '';
    const cfg = this.d.kindConfig(kind);
    if (cfg?.handler === undefined) {
      await shard
        .write(async (tx) => {
          if (await ctx.completeIn(tx)) await tx.run(SQL.parkStored, [id]);
        })
        .catch((err: unknown) => {
          throw this.retryMoved(err);
        });
      return;
    }
    if (this.stopped) throw new RetryTimer(0);
    if (this.d.paused?.(kind) === true) throw new RetryTimer(PAUSED_RECHECK_MS);
    const sem = this.d.semaphores.get(kind)!;
    // Wait in line unless the line is long: then leave the scheduler's slots to other kinds.
    if (sem.waiting >= Math.max(64, cfg.concurrency * 4))
      throw new RetryTimer(Math.min(1000, this.rt.config.scheduler.poll_ms));
    const release = await sem.acquire();
    if (this.stopped) {
      release();
      throw new RetryTimer(0);
    }
    let delivery: Delivery | null;
    try {
      const now = this.now;
      delivery = await shard.write(async (tx) => {
        // The redelivery timer becomes the delivery's lease timer (one statement; false if this version is gone).
        if (!(await ctx.rescheduleIn(tx, TIMER_LEASE, now + this.ttlMs))) return null;
        const upd = await tx.all<{ repeats: number; kind: string }>(SQL.startDelivery, [now, id]);
        if (!upd[0]) {
          // Not stored (any more): no lease timer may stay behind for it.
          await this.rt.scheduler.cancelIn(tx, timerKey(id));
          return null;
        }
        const recs = await tx.all<{ data: Buffer }>(SQL.records, [id]);
        return { id, kind: upd[0].kind, repeats: Number(upd[0].repeats), records: recs.map((r) => r.data) };
      });
    } catch (err) {
      release();
      throw this.retryMoved(err);
    }
    if (delivery === null) {
      release();
      return;
    }
    const d = delivery;
    // The kind's slot is the handler's: it frees once the handler has answered, before the outcome is written.
    const p = this.push(cfg, d, release).finally(() => {
      release();
      this.inFlight.delete(p);
    });
    this.inFlight.add(p);
  }

  private async push(cfg: PipeKindConfig, d: Delivery, answered: () => void): Promise<void> {
    this.d.stats.pushes++;
    let verdict: PushVerdict | undefined;
    const t0 = performance.now();
    try {
      verdict = await this.d.pusher(cfg.handler!, cfg, d);
      this.rt.activity.time('push', performance.now() - t0, true);
      answered();
    } catch (err) {
      this.rt.activity.time('push', performance.now() - t0, true);
      answered();
      this.d.stats.pushFailures++;
      const message = err instanceof Error ? err.message : String(err);
      this.rt.logger.debug({ session: d.id, kind: d.kind, repeats: d.repeats, err: message }, 'pipe: push failed');
      try {
        // Refused while the session's range moves: written again by the new routing.
        await untilRouted(
          this.rt,
          this.ttlMs,
          () =>
            this.shardOf(d.id).write((tx) =>
              this.failedIn(tx, d.id, d.kind, d.repeats, `push failed: ${message}`, this.now),
            ),
          () => false,
        );
      } catch (e) {
        // The lease timer brings the session back anyway.
        this.rt.logger.warn({ err: e, session: d.id }, 'pipe: could not record a failed push');
      }
      return;
    }
    if (verdict === undefined) return;
    // The handler finished the session in its answer: one write instead of a call back, and only for this delivery.
    try {
      if ((await this.d.verdict(d, verdict)) === 'refused')
        this.rt.logger.debug(
          { session: d.id, repeats: d.repeats },
          'pipe: handler verdict on a delivery that is no longer current',
        );
    } catch (e) {
      this.rt.logger.warn(
        { err: e, session: d.id },
        'pipe: could not apply the handler verdict; the lease brings the session back',
      );
    }
  }

  /** The lease of an open or delivering session is up: extend it if its owner is alive, else the session is unfinished. */
  private async onLease(timer: Timer, ctx: TimerContext): Promise<void> {
    const id = idOfTimer(timer);
    const shard = this.shardOf(id);
    if (await this.elsewhere(timer, ctx, shard)) return;
    await this.leaseIn(shard, id, ctx).catch((err: unknown) => {
      throw this.retryMoved(err);
    });
  }

  /** A write refused because the session's range is cutting over: the timer fires again shortly (not a failure). */
  private retryMoved(err: unknown): unknown {
    if (!isMillraceError(err, 'shard_moved')) return err;
    return new RetryTimer(Math.min(1000, this.rt.config.scheduler.poll_ms));
  }

  private async leaseIn(shard: Shard, id: string, ctx: TimerContext): Promise<void> {
    await shard.write(async (tx) => {
      if (!(await ctx.completeIn(tx))) return;
      const rows = await tx.all<SessionRow>(SQL.leaseRead, [id]);
      const s = rows[0];
      if (!s || (s.state !== 'open' && s.state !== 'delivering')) return;
      const now = this.now;
      const touched = Number(s.touched_at);
      if (s.owner !== null) {
        let alive = this.d.owners.has(s.owner);
        if (!alive) {
          const o = await tx.all<{ alive_until: number }>(SQL.ownerAliveUntil, [s.owner]);
          alive = o[0] !== undefined && Number(o[0].alive_until) > now;
        }
        if (alive) {
          await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_LEASE, now + this.ttlMs);
          return;
        }
      } else if (touched + this.ttlMs > now) {
        await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_LEASE, touched + this.ttlMs);
        return;
      }
      const done =
        s.state === 'open'
          ? await this.unfinishedIn(tx, id, s.kind, now, s.owner !== null ? { owner: s.owner } : { touchedAt: touched })
          : await this.failedIn(
              tx,
              id,
              s.kind,
              Number(s.repeats),
              'lease expired before the handler finished the session',
              now,
              touched,
            );
      // Written to meanwhile: look again after a lease.
      if (!done) await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_LEASE, now + this.ttlMs);
    });
  }
}
