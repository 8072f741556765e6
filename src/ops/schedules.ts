import { badRequest, MillraceError, toMillraceError } from '../core/errors.js';
import { decodeCursor, encodeCursor, pageLimit, type Page } from '../core/paging.js';
import type { Runtime } from '../runtime.js';
import { RetryTimer, type Timer, type TimerContext } from '../scheduler/scheduler.js';
import type { Tx } from '../storage/port.js';
import { timerPlaceIn, whileMoved } from '../storage/routed-timers.js';
import type { Shard } from '../storage/storage.js';
import type { Machines } from '../machines/machines.js';
import type { Bus } from '../bus/bus.js';
import {
  jitterOf,
  nextFire,
  nextFires,
  render,
  SCHEDULE_NAME,
  scheduleSchema,
  type ScheduleDef,
} from './schedule-spec.js';

export const TICK_KIND = 'schedules.tick';
export const RUN_KIND = 'schedules.run';
const tickOwner = (name: string): string => `sched:${name}`;
const runOwner = (name: string, fireAt: number): string => `sfire:${name}:${fireAt}`;
/** Most fire times one backfill may ask for. */
export const BACKFILL_MAX = 1000;
/** Attempts of an idempotent action (start, notify, publish) that keeps failing with a retryable error. */
const MAX_ATTEMPTS = 5;
/** Most missed fires counted one by one after downtime (beyond that the count says "at least"). */
const MISSED_COUNT_MAX = 10_000;

export type FireStatus = 'pending' | 'running' | 'buffered' | 'skipped' | 'done' | 'failed' | 'interrupted';

export interface ScheduleInfo {
  name: string;
  source: 'config' | 'runtime';
  definition: ScheduleDef;
  paused: boolean;
  next_fire_at: string | null;
  last_fire_at: string | null;
  /** Fires whose action runs now. */
  running: number;
  /** The fire kept for later by the `buffer_one` policy. */
  buffered_fire_at: string | null;
  /** Fires older than the catch-up window when the schedule came back (downtime). */
  missed: number;
  created_at: string;
  updated_at: string;
}

export interface FireInfo {
  fire_at: string;
  status: FireStatus;
  backfill: boolean;
  attempts: number;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
}

interface Row {
  name: string;
  definition: string;
  source: string;
  paused: number;
  next_fire_at: number | null;
  last_fire_at: number | null;
  running: number;
  buffered_at: number | null;
  missed: number;
  created_at: number;
  updated_at: number;
}

interface FireRow {
  fire_at: number;
  status: string;
  backfill: number;
  attempts: number;
  started_at: number | null;
  finished_at: number | null;
  error: string | null;
}

const COLS =
  'name, definition, source, paused, next_fire_at, last_fire_at, running, buffered_at, missed, created_at, updated_at';
const FIRE_COLS = 'fire_at, status, backfill, attempts, started_at, finished_at, error';
const isoOrNull = (t: number | null): string | null => (t === null ? null : new Date(Number(t)).toISOString());

/** The faces a schedule's action can reach (those this node serves). */
export interface ScheduleTargets {
  machines?: Machines | undefined;
  bus?: Bus | undefined;
}

export interface ScheduleHooks {
  /** Runs after an action, before its outcome is stored (tests stop the process here). */
  afterAction?: (name: string, fireAt: number) => Promise<void>;
}

/** Thrown inside a transaction to roll it back when this node's timer claim was lost. */
class ClaimLost extends Error {}

/** Thrown inside a transaction to roll it back when the timer's shard does not own the schedule now (a split cuts over): it fires again shortly. */
class NotHere extends Error {}

/** Thrown inside a transaction to roll it back when another node created the schedule first. */
class CreatedMeanwhile extends Error {}

/**
 * Schedules over the durable scheduler. Each schedule has one timer, due at
 * its next fire time (plus its jitter); the transaction that handles it
 * records the fire (the fire time is the key: a fire is recorded once) and
 * moves the timer to the following fire. A recorded fire that is to run gets
 * a timer of its own, which runs the action and stores its outcome in the
 * transaction that completes it: a fire whose node dies is run again by
 * another, and start, notify and publish are keyed by the fire time so the
 * repeat does nothing; a call, which carries no key, is not repeated and its
 * fire is marked `interrupted`.
 */
export class Schedules {
  /** Fires by status as this node stored them (recorded: pending, buffered, skipped; then done, failed, interrupted). */
  readonly stats = new Map<FireStatus | 'missed', number>();

  private count(tx: Tx, status: FireStatus | 'missed', n = 1): void {
    tx.onCommit(() => this.stats.set(status, (this.stats.get(status) ?? 0) + n));
  }

  constructor(
    private readonly rt: Runtime,
    private readonly targets: ScheduleTargets,
    private readonly hooks: ScheduleHooks = {},
  ) {}

  registerTimers(): void {
    this.rt.scheduler.register(TICK_KIND, (t, ctx) => this.onTick(t, ctx));
    this.rt.scheduler.register(RUN_KIND, (t, ctx) => this.onRun(t, ctx));
  }

  private home(name: string): Shard {
    return this.rt.storage.shardFor(['schedule', name]);
  }

  private lock(shard: Shard): string {
    return shard.driver.capabilities.multiNode ? ' FOR UPDATE' : '';
  }

  private async rowIn(tx: Tx, shard: Shard, name: string): Promise<Row | undefined> {
    return (await tx.all<Row>(`SELECT ${COLS} FROM schedules WHERE name = ?${this.lock(shard)}`, [name]))[0];
  }

  private checkName(name: string): void {
    if (typeof name !== 'string' || !SCHEDULE_NAME.test(name))
      throw badRequest('schedule name must be 1-150 letters, digits, ".", "_" or "-"');
  }

  /** Parses and checks a definition against the faces this node serves; a typed error, nothing written, when it is wrong. */
  parse(raw: unknown): ScheduleDef {
    const r = scheduleSchema.safeParse(raw);
    if (!r.success) {
      const issue = r.error.issues[0]!;
      throw badRequest(`schedule definition: ${issue.path.join('.') || '(root)'}: ${issue.message}`, {
        problems: r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
      });
    }
    const def = r.data;
    if ('machine' in def.action) {
      const m = this.targets.machines;
      if (m === undefined) throw badRequest('schedule definition: action.machine: this node does not serve machines');
      m.nsConfig(def.action.machine.namespace);
    } else {
      const bus = this.targets.bus;
      if (bus === undefined) throw badRequest('schedule definition: action.publish: this node does not serve the bus');
      const p = def.action.publish;
      bus.validate([
        {
          topic: p.topic,
          type: p.type,
          ...(p.key !== undefined ? { key: p.key } : {}),
          ...(p.headers !== undefined ? { headers: p.headers } : {}),
          data: null,
        },
      ]);
    }
    return def;
  }

  /** Creates or replaces a schedule; an unchanged definition changes nothing (its timer keeps running). */
  async put(
    name: string,
    raw: unknown,
    source: 'config' | 'runtime' = 'runtime',
  ): Promise<{ created: boolean; schedule: ScheduleInfo }> {
    this.checkName(name);
    const def = this.parse(raw);
    const text = JSON.stringify(def);
    const shard = this.home(name);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.putOnce(shard, name, def, text, source);
      } catch (err) {
        if (!(err instanceof CreatedMeanwhile) || attempt >= 3) throw err;
      }
    }
  }

  private async putOnce(
    shard: Shard,
    name: string,
    def: ScheduleDef,
    text: string,
    source: 'config' | 'runtime',
  ): Promise<{ created: boolean; schedule: ScheduleInfo }> {
    const created = await shard.write(async (tx) => {
      const row = await this.rowIn(tx, shard, name);
      if (row !== undefined && row.source === 'config' && source === 'runtime') {
        throw new MillraceError(
          'schedule_defined_in_config',
          `schedule "${name}" is defined in the configuration file`,
          { details: { name } },
        );
      }
      if (row !== undefined && row.definition === text && row.source === source) return false;
      const now = this.rt.clock.now();
      const paused = def.paused ?? (row === undefined ? false : row.paused === 1);
      const next = paused ? null : nextFire(def, now);
      if (row === undefined) {
        const n = await tx.run(
          `INSERT INTO schedules (name, definition, source, paused, next_fire_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`,
          [name, text, source, paused ? 1 : 0, next, now, now],
        );
        // Created meanwhile by another node (two nodes applying one config file): read it again.
        if (n === 0) throw new CreatedMeanwhile();
      } else {
        await tx.run(
          'UPDATE schedules SET definition = ?, source = ?, paused = ?, next_fire_at = ?, updated_at = ? WHERE name = ?',
          [text, source, paused ? 1 : 0, next, now, name],
        );
      }
      await this.armIn(tx, name, def, next);
      return row === undefined;
    });
    return { created, schedule: await this.get(name) };
  }

  /** Points the schedule's timer at `next` (nominal), or removes it. */
  private async armIn(tx: Tx, name: string, def: ScheduleDef, next: number | null): Promise<void> {
    if (next === null) await this.rt.scheduler.cancelIn(tx, tickOwner(name));
    else
      await this.rt.scheduler.scheduleIn(tx, tickOwner(name), TICK_KIND, next + jitterOf(def, name, next), {
        fire_at: next,
      });
  }

  async get(name: string): Promise<ScheduleInfo> {
    this.checkName(name);
    const shard = this.home(name);
    const row = (await shard.reader.all<Row>(`SELECT ${COLS} FROM schedules WHERE name = ?`, [name]))[0];
    if (row === undefined) throw notFound(name);
    return infoOf(row);
  }

  /** Every schedule, by name, across shards, paged. */
  async list(opts: { limit?: number | undefined; cursor?: string | undefined } = {}): Promise<Page<ScheduleInfo>> {
    const limit = pageLimit(opts.limit);
    const after = decodeCursor(opts.cursor, (v): v is string => typeof v === 'string') ?? '';
    const rows: Row[] = [];
    for (const shard of this.rt.storage.shards) {
      const page = await shard.reader.all<Row>(`SELECT ${COLS} FROM schedules WHERE name > ? ORDER BY name LIMIT ?`, [
        after,
        limit + 1,
      ]);
      // A split's source keeps moved schedules for a grace period: each is listed from where routing finds it.
      rows.push(...page.filter((r) => this.home(r.name).name === shard.name));
    }
    rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const items = rows.slice(0, limit).map(infoOf);
    return { items, next_cursor: rows.length > limit ? encodeCursor(items[items.length - 1]!.name) : null };
  }

  /** Deletes a schedule, its timer and its fire records; fires already running finish. */
  async remove(name: string, source: 'config' | 'runtime' = 'runtime'): Promise<void> {
    this.checkName(name);
    const shard = this.home(name);
    await shard.write(async (tx) => {
      const row = await this.rowIn(tx, shard, name);
      if (row === undefined) throw notFound(name);
      if (row.source === 'config' && source === 'runtime') {
        throw new MillraceError(
          'schedule_defined_in_config',
          `schedule "${name}" is defined in the configuration file`,
          { details: { name } },
        );
      }
      await tx.run('DELETE FROM schedules WHERE name = ?', [name]);
      await tx.run('DELETE FROM schedule_fires WHERE schedule = ?', [name]);
      await this.rt.scheduler.cancelIn(tx, tickOwner(name));
    });
  }

  /** Stops firing (fires already running finish); the state is stored. */
  async pause(name: string): Promise<ScheduleInfo> {
    return this.setPaused(name, true);
  }

  /** Fires again from the next fire time after now; the fires of the paused time are not caught up. */
  async resume(name: string): Promise<ScheduleInfo> {
    return this.setPaused(name, false);
  }

  private async setPaused(name: string, paused: boolean): Promise<ScheduleInfo> {
    this.checkName(name);
    const shard = this.home(name);
    await shard.write(async (tx) => {
      const row = await this.rowIn(tx, shard, name);
      if (row === undefined) throw notFound(name);
      if ((row.paused === 1) === paused) return;
      const def = JSON.parse(row.definition) as ScheduleDef;
      const next = paused ? null : nextFire(def, this.rt.clock.now());
      await tx.run('UPDATE schedules SET paused = ?, next_fire_at = ?, updated_at = ? WHERE name = ?', [
        paused ? 1 : 0,
        next,
        this.rt.clock.now(),
        name,
      ]);
      await this.armIn(tx, name, def, next);
    });
    return this.get(name);
  }

  /** The next `count` fire times (nominal, and when they are due with the jitter) from now. */
  async next(name: string, count: number): Promise<Array<{ fire_at: string; due_at: string }>> {
    if (!Number.isInteger(count) || count < 1 || count > 1000)
      throw badRequest('count must be a whole number from 1 to 1000');
    const info = await this.get(name);
    const def = info.definition;
    if (info.paused) return [];
    return nextFires(def, this.rt.clock.now(), count).map((t) => ({
      fire_at: new Date(t).toISOString(),
      due_at: new Date(t + jitterOf(def, name, t)).toISOString(),
    }));
  }

  /**
   * Runs the action for every fire time in [from, to] that has no fire yet
   * (the fire time is the key: a time already fired is not run again).
   */
  async backfill(
    name: string,
    fromText: unknown,
    toText: unknown,
  ): Promise<{ fire_times: number; queued: number; already: number }> {
    this.checkName(name);
    const from =
      typeof fromText === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(fromText) ? Date.parse(fromText) : Number.NaN;
    const to = typeof toText === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(toText) ? Date.parse(toText) : Number.NaN;
    if (Number.isNaN(from) || Number.isNaN(to)) throw badRequest('backfill: from and to must be RFC 3339 date-times');
    if (to < from) throw badRequest('backfill: to must not be before from');
    const info = await this.get(name);
    const times: number[] = [];
    let t = from - 1;
    for (;;) {
      const n = nextFire(info.definition, t);
      if (n === null || n > to) break;
      if (times.length === BACKFILL_MAX)
        throw badRequest(`backfill: the range holds more than ${BACKFILL_MAX} fire times; split it`, {
          max: BACKFILL_MAX,
        });
      times.push(n);
      t = n;
    }
    const shard = this.home(name);
    const queued = await shard.write(async (tx) => {
      const row = await this.rowIn(tx, shard, name);
      if (row === undefined) throw notFound(name);
      let n = 0;
      const now = this.rt.clock.now();
      for (const at of times) {
        const ins = await tx.run(
          `INSERT INTO schedule_fires (schedule, fire_at, status, backfill) VALUES (?, ?, 'pending', 1) ON CONFLICT (schedule, fire_at) DO NOTHING`,
          [name, at],
        );
        if (ins !== 1) continue;
        n++;
        await this.rt.scheduler.scheduleIn(tx, runOwner(name, at), RUN_KIND, now, { name, fire_at: at });
      }
      if (n > 0)
        await tx.run('UPDATE schedules SET running = running + ?, updated_at = ? WHERE name = ?', [n, now, name]);
      return n;
    });
    return { fire_times: times.length, queued, already: times.length - queued };
  }

  /** Recorded fires, newest first, paged. */
  async fires(
    name: string,
    opts: { limit?: number | undefined; cursor?: string | undefined } = {},
  ): Promise<Page<FireInfo>> {
    await this.get(name);
    const limit = pageLimit(opts.limit);
    const before = decodeCursor(opts.cursor, (v): v is number => Number.isInteger(v)) ?? Number.MAX_SAFE_INTEGER;
    const rows = await this.home(name).reader.all<FireRow>(
      `SELECT ${FIRE_COLS} FROM schedule_fires WHERE schedule = ? AND fire_at < ? ORDER BY fire_at DESC LIMIT ?`,
      [name, before, limit + 1],
    );
    const items = rows.slice(0, limit).map(fireOf);
    return { items, next_cursor: rows.length > limit ? encodeCursor(Number(rows[limit - 1]!.fire_at)) : null };
  }

  /** Applies the config file's schedules: each is created or replaced; config schedules no longer in the file are deleted. */
  async applyConfig(defs: Record<string, unknown>): Promise<void> {
    for (const [name, def] of Object.entries(defs)) await this.put(name, def, 'config');
    for (const shard of this.rt.storage.shards) {
      const rows = await shard.reader.all<{ name: string }>(`SELECT name FROM schedules WHERE source = 'config'`);
      for (const r of rows)
        if (!Object.hasOwn(defs, r.name))
          await this.remove(r.name, 'config').catch((err: unknown) =>
            this.rt.logger.warn(
              { err, schedule: r.name },
              'schedules: removing a schedule no longer in the config failed',
            ),
          );
    }
  }

  // ---- firing ----

  private async onTick(timer: Timer, ctx: TimerContext): Promise<void> {
    const name = timer.owner.slice('sched:'.length);
    const fireAt = Number((timer.payload as { fire_at: number }).fire_at);
    const shard = this.rt.storage.shard(timer.shard);
    try {
      await shard.write(async (tx) => {
        if (!(await this.hereIn(tx, timer, ctx, name))) return;
        const row = await this.rowIn(tx, shard, name);
        if (row === undefined || row.paused === 1) {
          await ctx.completeIn(tx);
          return;
        }
        const def = JSON.parse(row.definition) as ScheduleDef;
        const now = this.rt.clock.now();
        if (fireAt + jitterOf(def, name, fireAt) < now - def.catchup_window_ms) {
          // Downtime: this fire is older than the catch-up window. Count what was missed and go on from the first fire inside it.
          let missed = 0;
          let t = fireAt;
          const edge = now - def.catchup_window_ms;
          while (t < edge && missed < MISSED_COUNT_MAX) {
            missed++;
            const n = nextFire(def, t);
            if (n === null) break;
            t = n;
          }
          const first = nextFire(def, Math.max(edge, t) - 1);
          if (!(await this.moveTimer(tx, ctx, name, def, first))) throw new ClaimLost();
          await tx.run('UPDATE schedules SET missed = missed + ?, next_fire_at = ?, updated_at = ? WHERE name = ?', [
            missed,
            first,
            now,
            name,
          ]);
          this.count(tx, 'missed', missed);
          return;
        }
        const next = nextFire(def, fireAt);
        if (!(await this.moveTimer(tx, ctx, name, def, next))) throw new ClaimLost();
        let status: FireStatus = 'pending';
        let running = Number(row.running);
        let buffered = row.buffered_at === null ? null : Number(row.buffered_at);
        if (running > 0 && def.overlap === 'skip') status = 'skipped';
        else if (running > 0 && def.overlap === 'buffer_one') {
          if (buffered === null) {
            status = 'buffered';
            buffered = fireAt;
          } else status = 'skipped';
        }
        const ins = await tx.run(
          `INSERT INTO schedule_fires (schedule, fire_at, status) VALUES (?, ?, ?) ON CONFLICT (schedule, fire_at) DO NOTHING`,
          [name, fireAt, status],
        );
        if (ins === 1) this.count(tx, status);
        if (ins === 1 && status === 'pending') {
          running++;
          await this.rt.scheduler.scheduleIn(tx, runOwner(name, fireAt), RUN_KIND, now, { name, fire_at: fireAt });
        }
        if (ins !== 1) buffered = row.buffered_at === null ? null : Number(row.buffered_at);
        await tx.run(
          'UPDATE schedules SET next_fire_at = ?, last_fire_at = ?, running = ?, buffered_at = ?, updated_at = ? WHERE name = ?',
          [next, fireAt, running, buffered, now, name],
        );
      });
    } catch (err) {
      if (err instanceof NotHere) throw new RetryTimer(Math.min(1000, this.rt.config.scheduler.poll_ms));
      if (!(err instanceof ClaimLost)) throw err;
    }
  }

  /**
   * In the timer's transaction on its own shard: true when that shard owns
   * the schedule now. A split's source copy of the timer (the target fires
   * its own) is dropped unacted (false); while the range cuts over, NotHere
   * (the timer fires again shortly). So a fire is recorded and run only by
   * the shard that owns the schedule.
   */
  private async hereIn(tx: Tx, timer: Timer, ctx: TimerContext, name: string): Promise<boolean> {
    const place = await timerPlaceIn(this.rt.storage, tx, timer.shard, ['schedule', name]);
    if (place === 'own') return true;
    if (place === 'wait') throw new NotHere();
    await ctx.completeIn(tx);
    return false;
  }

  private async moveTimer(
    tx: Tx,
    ctx: TimerContext,
    name: string,
    def: ScheduleDef,
    next: number | null,
  ): Promise<boolean> {
    if (next === null) return ctx.completeIn(tx);
    return ctx.rescheduleIn(tx, TICK_KIND, next + jitterOf(def, name, next), { fire_at: next });
  }

  private async onRun(timer: Timer, ctx: TimerContext): Promise<void> {
    const { name, fire_at: fireAt } = timer.payload as { name: string; fire_at: number };
    const shard = this.rt.storage.shard(timer.shard);
    let def: ScheduleDef | null = null;
    let attempts = 0;
    try {
      def = await shard.write(async (tx) => {
        if (!(await this.hereIn(tx, timer, ctx, name))) return null;
        const row = await this.rowIn(tx, shard, name);
        const fire = (
          await tx.all<FireRow>(`SELECT ${FIRE_COLS} FROM schedule_fires WHERE schedule = ? AND fire_at = ?`, [
            name,
            fireAt,
          ])
        )[0];
        if (row === undefined || fire === undefined || (fire.status !== 'pending' && fire.status !== 'running')) {
          await ctx.completeIn(tx);
          return null;
        }
        const d = JSON.parse(row.definition) as ScheduleDef;
        if (Number(fire.attempts) > 0 && !repeatable(d)) {
          // A call that may or may not have reached the machine: not repeated.
          if (!(await ctx.completeIn(tx))) throw new ClaimLost();
          await this.finishIn(
            tx,
            shard,
            name,
            fireAt,
            'interrupted',
            'the node running this call stopped before its outcome was stored; a call is not repeated',
          );
          return null;
        }
        attempts = Number(fire.attempts) + 1;
        await tx.run(
          `UPDATE schedule_fires SET status = 'running', attempts = ?, started_at = COALESCE(started_at, ?) WHERE schedule = ? AND fire_at = ?`,
          [attempts, this.rt.clock.now(), name, fireAt],
        );
        return d;
      });
    } catch (err) {
      if (err instanceof ClaimLost) return;
      if (err instanceof NotHere) throw new RetryTimer(Math.min(1000, this.rt.config.scheduler.poll_ms));
      throw err;
    }
    if (def === null) return;
    let status: FireStatus = 'done';
    let error: string | null = null;
    try {
      // A target whose range is cutting over refuses with nothing written: the same attempt goes again by the new routing.
      await whileMoved(this.rt.storage, () => this.act(name, def, fireAt));
    } catch (err) {
      const e = toMillraceError(err);
      // Start, notify and publish are keyed by the fire time: a retryable failure is tried again.
      if (e.retryable && repeatable(def) && attempts < MAX_ATTEMPTS) throw err;
      status = 'failed';
      error = `${e.code}: ${e.message}`;
    }
    await this.hooks.afterAction?.(name, fireAt);
    await shard.write(async (tx) => {
      // The schedule moved while the action ran (a split cut over): the target has the fire as running and finishes
      // it as a fire whose node stopped (start, notify and publish repeated under the fire's key; a call: interrupted).
      if ((await timerPlaceIn(this.rt.storage, tx, timer.shard, ['schedule', name])) !== 'own') return;
      if (!(await ctx.completeIn(tx))) return;
      await this.finishIn(tx, shard, name, fireAt, status, error);
    });
  }

  /** Stores a fire's outcome and, once nothing runs, starts the buffered fire. */
  private async finishIn(
    tx: Tx,
    shard: Shard,
    name: string,
    fireAt: number,
    status: FireStatus,
    error: string | null,
  ): Promise<void> {
    const now = this.rt.clock.now();
    await tx.run(
      'UPDATE schedule_fires SET status = ?, finished_at = ?, error = ? WHERE schedule = ? AND fire_at = ?',
      [status, now, error, name, fireAt],
    );
    this.count(tx, status);
    const row = await this.rowIn(tx, shard, name);
    if (row === undefined) return;
    let running = Math.max(0, Number(row.running) - 1);
    let buffered = row.buffered_at === null ? null : Number(row.buffered_at);
    if (buffered !== null && running === 0) {
      await tx.run(`UPDATE schedule_fires SET status = 'pending' WHERE schedule = ? AND fire_at = ?`, [name, buffered]);
      await this.rt.scheduler.scheduleIn(tx, runOwner(name, buffered), RUN_KIND, now, { name, fire_at: buffered });
      running = 1;
      buffered = null;
    }
    await tx.run('UPDATE schedules SET running = ?, buffered_at = ?, updated_at = ? WHERE name = ?', [
      running,
      buffered,
      now,
      name,
    ]);
  }

  /** The fire's action, with its templates filled in; the fire's key makes start, notify and publish safe to repeat. */
  private async act(name: string, def: ScheduleDef, fireAt: number): Promise<void> {
    const key = `schedule/${name}/${fireAt}`;
    if ('machine' in def.action) {
      const a = def.action.machine;
      const m = this.targets.machines;
      if (m === undefined) throw badRequest('this node does not serve machines');
      const id = String(render(a.id, name, fireAt));
      const args = render(a.args ?? null, name, fireAt);
      if (a.op === 'start') {
        try {
          await m.start(a.namespace, id, args);
        } catch (err) {
          if (err instanceof MillraceError && err.code === 'machine_already_exists') return;
          throw err;
        }
      } else if (a.op === 'call') await m.call(a.namespace, { id }, args);
      else await m.notify(a.namespace, { id }, args, { key });
      return;
    }
    const p = def.action.publish;
    const bus = this.targets.bus;
    if (bus === undefined) throw badRequest('this node does not serve the bus');
    await bus.publish([
      {
        id: key,
        topic: p.topic,
        type: p.type,
        ...(p.key !== undefined ? { key: String(render(p.key, name, fireAt)) } : {}),
        ...(p.headers !== undefined ? { headers: p.headers } : {}),
        data: render(p.data ?? null, name, fireAt),
      },
    ]);
  }
}

/** Whether repeating the action after a crash is safe (it is keyed by the fire time). */
function repeatable(def: ScheduleDef): boolean {
  return !('machine' in def.action && def.action.machine.op === 'call');
}

function notFound(name: string): MillraceError {
  return new MillraceError('schedule_not_found', `no schedule "${name}"`, { details: { name } });
}

function infoOf(r: Row): ScheduleInfo {
  return {
    name: r.name,
    source: r.source === 'config' ? 'config' : 'runtime',
    definition: JSON.parse(r.definition) as ScheduleDef,
    paused: Number(r.paused) === 1,
    next_fire_at: isoOrNull(r.next_fire_at),
    last_fire_at: isoOrNull(r.last_fire_at),
    running: Number(r.running),
    buffered_fire_at: isoOrNull(r.buffered_at),
    missed: Number(r.missed),
    created_at: new Date(Number(r.created_at)).toISOString(),
    updated_at: new Date(Number(r.updated_at)).toISOString(),
  };
}

function fireOf(r: FireRow): FireInfo {
  return {
    fire_at: new Date(Number(r.fire_at)).toISOString(),
    status: r.status as FireStatus,
    backfill: Number(r.backfill) === 1,
    attempts: Number(r.attempts),
    started_at: isoOrNull(r.started_at),
    finished_at: isoOrNull(r.finished_at),
    error: r.error,
  };
}
