import { isMillraceError, MillraceError } from '../core/errors.js';
import type { AppendResult } from '../log/log.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import type { MachinesContext } from './context.js';
import { frozenEvent, rangeSpan, type MachineEvent } from './history-cache.js';
import type { MachineLeases } from './leases.js';
import {
  Abort,
  EVENT_TYPE,
  FULL_RANGE,
  key,
  NOTIFY_KIND,
  notifyOwner,
  streamOf,
  TIMEOUT_KIND,
  timerOwner,
  type Hooks,
} from './machine-state.js';
import { SQL } from './machines-sql.js';
import { applyFailure, applyPlan, type MachineState, type Plan, type StepInput } from './planner.js';

/**
 * The commit of a step: the planner's plan (or a failure) applied in one
 * transaction on the machine's shard, under an optimistic version check:
 * the row, its events, timer, tag, removal, notification bookkeeping and
 * lease; then the machine cache, once the commit is durable.
 */
export class MachineCommits {
  constructor(
    private readonly cx: MachinesContext,
    private readonly leases: MachineLeases,
  ) {}

  /** Records a failed step: the machine becomes failed, its timer and notification delivery stop. */
  async commitFailure(state: MachineState, input: StepInput, reason: unknown, hooks: Hooks): Promise<void> {
    const { cx } = this;
    const starting = input.kind === 'signal' && input.signal.type === 'init';
    const next = applyFailure(state, reason, { starting });
    const shard = cx.shardOf(state.ns, state.id);
    try {
      await shard.write(async (tx) => {
        if (hooks.timer && !(await hooks.timer.ctx.completeIn(tx))) throw new Abort('timer_gone');
        await this.writeRow(tx, state, next);
        await cx.rt.scheduler.cancelIn(tx, timerOwner(state.ns, state.id));
        await cx.rt.scheduler.cancelIn(tx, notifyOwner(state.ns, state.id));
      });
    } catch (err) {
      throw this.commitError(err, state);
    }
    // A new generation (a start that failed) leaves the old window behind.
    cx.cache.put(key(state.ns, state.id), next);
  }

  /** Commits a plan: row, events, timer, tag, removal and notification bookkeeping in one transaction. */
  async commit(
    state: MachineState,
    input: StepInput,
    plan: Extract<Plan, { kind: 'commit' }>,
    hooks: Hooks,
  ): Promise<void> {
    const { cx } = this;
    const { ns, id } = state;
    const starting = input.kind === 'signal' && input.signal.type === 'init';
    const next = applyPlan(state, plan, { starting });
    const shard = cx.shardOf(ns, id);
    const tagShard = plan.tag === undefined ? undefined : cx.tagShard(ns, plan.tag);
    if (plan.tag !== undefined && tagShard!.base !== shard.base) {
      // Tags of another shard are reserved first; a reservation whose step did not commit is recognised as stale.
      if (!(await tagShard!.write((tx) => this.claimTagIn(tx, ns, plan.tag!, id, next.gen, shard))))
        throw new Abort('tag_taken');
    }
    const resumed = state.status === 'failed' && next.status === 'working';
    let createdAt = cx.rt.clock.now();
    let appended: AppendResult | undefined;
    try {
      await shard.write(async (tx) => {
        if (hooks.timer && !(await hooks.timer.ctx.completeIn(tx))) throw new Abort('timer_gone');
        if (hooks.notification) {
          const n = await tx.run(SQL.deleteNotification, [hooks.notification.nid]);
          if (n !== 1) throw new Abort('notification_gone');
        }
        if (plan.events.length > 0) {
          // The row and the events in one statement where the dialect allows it.
          const update = await this.rowUpdate(tx, state, next);
          const r = await cx.rt.log.appendGuarded(
            tx,
            shard,
            streamOf(ns, id, next.gen),
            plan.events.map((data) => ({ type: EVENT_TYPE, data, meta: { ns, id, gen: next.gen } })),
            update,
            { expectedSeq: starting ? 0 : state.lastEvent },
          );
          if (r === null) throw new Abort('conflict');
          update.settle();
          createdAt = r.createdAt;
          appended = r;
        } else await this.writeRow(tx, state, next);
        if (
          plan.tag !== undefined &&
          tagShard!.base === shard.base &&
          !(await this.claimTagIn(tx, ns, plan.tag, id, next.gen, shard))
        )
          throw new Abort('tag_taken');
        if (plan.remove) {
          await cx.rt.scheduler.cancelIn(tx, timerOwner(ns, id));
          await cx.rt.scheduler.cancelIn(tx, notifyOwner(ns, id));
          await tx.run(SQL.deleteNotifications, [ns, id]);
          for (const t of state.tags)
            if (cx.tagShard(ns, t).base === shard.base) await tx.run(SQL.deleteTag, [ns, t, id]);
          return;
        }
        if (plan.timer !== 'keep' || resumed || starting || hooks.timer) {
          if (next.timer)
            await cx.rt.scheduler.scheduleIn(tx, timerOwner(ns, id), TIMEOUT_KIND, next.timer.dueAt, {
              ns,
              id,
              gen: next.gen,
              range: next.timer.range,
            });
          else if (!hooks.timer) await cx.rt.scheduler.cancelIn(tx, timerOwner(ns, id));
        }
        if (resumed) {
          const pending = await tx.all<{ nid: number }>(SQL.firstNotificationNid, [ns, id]);
          if (pending.length > 0)
            await cx.rt.scheduler.scheduleIn(tx, notifyOwner(ns, id), NOTIFY_KIND, cx.rt.clock.now(), { ns, id });
        }
      });
    } catch (err) {
      throw this.commitError(err, state);
    }
    // The sink sees the events before the caller gets its answer (PostgreSQL numbers them after commit).
    if (appended && cx.nsConfig(ns).sink !== undefined) {
      // Committed either way: a sink that misses the wait reads the events once they are numbered.
      await cx.rt.log
        .positions(appended)
        .catch((err: unknown) => cx.rt.logger.debug({ err, ns, id }, 'machines: waiting for event positions failed'));
    }
    if (plan.remove) {
      for (const t of state.tags) {
        const ts = cx.tagShard(ns, t);
        // A tag row left behind names a removed machine: claimTagIn and resolve see it as stale.
        if (ts.base !== shard.base)
          await ts
            .write((tx) => tx.run(SQL.deleteTag, [ns, t, id]))
            .catch((err: unknown) =>
              cx.rt.logger.debug({ err, ns, id, tag: t }, "machines: a removed machine's tag row stays (stale)"),
            );
      }
    }
    // The cache follows the commit only once it is durable (a failed commit dropped the machine's entry above).
    const k = key(ns, id);
    cx.cache.put(k, next);
    if (cx.cache.keepsEvents && plan.events.length > 0 && !plan.remove) {
      // The events as a read gives them back: their stored JSON text, parsed.
      const at = new Date(createdAt).toISOString();
      const first = (starting ? 0 : state.lastEvent) + 1;
      const events: MachineEvent[] = [];
      const sizes: number[] = [];
      for (let i = 0; i < plan.events.length; i++) {
        const data = plan.events[i];
        const f = frozenEvent(first + i, at, data === undefined ? 'null' : JSON.stringify(data));
        events.push(f.event);
        sizes.push(f.bytes);
      }
      cx.cache.add(k, next, first, events, sizes);
    }
    // Keep what the namespace's next step asks for (nothing if the namespace was deleted meanwhile).
    const nsc = cx.namespaces.get(ns);
    cx.cache.retain(k, nsc === undefined ? null : rangeSpan(next.lastEvent, nsc.history_range ?? FULL_RANGE));
  }

  private commitError(err: unknown, state: MachineState): unknown {
    this.cx.cache.delete(key(state.ns, state.id));
    if (err instanceof Abort) {
      if (err.why === 'tag_taken') return err;
      return new MillraceError(
        'unavailable',
        `machine ${state.id} changed while it was processed (${err.why}); retry`,
        { retryAfterS: 1 },
      );
    }
    if (isMillraceError(err, 'stream_conflict'))
      return new MillraceError('unavailable', `machine ${state.id} changed while it was processed; retry`, {
        retryAfterS: 1,
      });
    return err;
  }

  private async writeRow(tx: Tx, prev: MachineState, next: MachineState): Promise<void> {
    const update = await this.rowUpdate(tx, prev, next);
    if ((await tx.run(update.sql, update.params)) !== 1) throw new Abort('conflict');
    update.settle();
  }

  /**
   * The statement that writes a step's row (inserting the empty row first
   * for a new machine), and what to do once it changed the row: across
   * nodes, note that the lease is settled (given up, or kept for
   * lease_keep_ms unless another node asked for the machine).
   */
  private async rowUpdate(
    tx: Tx,
    prev: MachineState,
    next: MachineState,
  ): Promise<{ sql: string; params: unknown[]; settle: () => void }> {
    const now = this.cx.rt.clock.now();
    if (prev.version === 0) await tx.run(SQL.insertEmpty, [prev.ns, prev.id, now]);
    const lease = this.leases.commitTerms(key(prev.ns, prev.id), now);
    const params = [
      next.gen,
      next.status,
      next.reason === null || next.reason === undefined ? null : JSON.stringify(next.reason),
      next.auxState === undefined ? null : JSON.stringify(next.auxState),
      next.lastEvent,
      next.timer === null ? null : JSON.stringify(next.timer),
      JSON.stringify(next.tags),
      next.version,
      lease.holder,
      lease.until,
      now,
      prev.ns,
      prev.id,
      prev.version,
    ];
    return { sql: SQL.updateRow, params, settle: () => lease.settle(tx) };
  }

  /** Claims a tag for (id, gen) on the tag's shard; false if a live machine holds it. */
  private async claimTagIn(
    tx: Tx,
    ns: string,
    tag: string,
    id: string,
    gen: number,
    machineShard: Shard,
  ): Promise<boolean> {
    await tx.run(SQL.insertTag, [ns, tag, id, gen]);
    const rows = await tx.all<{ id: string; gen: number }>(SQL.getTag, [ns, tag]);
    const holder = rows[0]!;
    if (holder.id === id && Number(holder.gen) === gen) return true;
    if (holder.id !== id) {
      const hs = this.cx.shardOf(ns, holder.id);
      const q = hs.base === machineShard.base ? tx : hs.reader;
      const h = await q.all<{ gen: number; status: string; tags: string }>(SQL.holderOfTag, [ns, holder.id]);
      const live =
        h[0] &&
        h[0].status !== 'none' &&
        Number(h[0].gen) === Number(holder.gen) &&
        (JSON.parse(h[0].tags) as string[]).includes(tag);
      if (live) return false;
    }
    await tx.run(SQL.moveTag, [id, gen, ns, tag]);
    return true;
  }
}
