import type { Logger } from 'pino';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import { badRequest } from '../core/errors.js';
import { Waker } from '../core/waker.js';
import type { Tx } from '../storage/port.js';
import type { Shard, Storage } from '../storage/storage.js';

export interface Timer {
  shard: string;
  id: number;
  /** Changes every time the owner's timer is replaced; (id, version) names one firing. */
  version: number;
  owner: string;
  kind: string;
  dueAt: number;
  payload: unknown;
  /** How many times this version has been claimed, this one included. */
  attempts: number;
}

export interface TimerContext {
  /**
   * Deletes this timer version inside the handler's own transaction. Returns
   * false if the version is gone (replaced, cancelled or already done), in
   * which case the handler must not act: that check makes it exactly-once.
   */
  completeIn(tx: Tx): Promise<boolean>;
  /**
   * Like completeIn, but turns this timer version into the owner's next timer
   * (a new version, due at `dueAt`) in the same statement. False, and nothing
   * changed, if the version is gone.
   */
  rescheduleIn(tx: Tx, kind: string, dueAt: number, payload?: unknown): Promise<boolean>;
}

/** Thrown by a handler to fire again after a delay, without counting as a failure. */
export class RetryTimer extends Error {
  constructor(readonly delayMs: number) {
    super(`retry in ${delayMs} ms`);
  }
}

export type TimerHandler = (timer: Timer, ctx: TimerContext) => Promise<void>;

export interface SchedulerOptions {
  nodeId: string;
  pollMs: number;
  leaseMs: number;
  batch: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Handlers running at once on this node. */
  concurrency?: number;
  /**
   * While the background loop runs, claims of handlers still running are
   * renewed every third of the lease, so a lease can be short (a frozen node
   * loses its claims within it) while handlers take longer. Default true.
   */
  renewClaims?: boolean;
  logger: Logger;
  clock?: Clock;
}

interface TimerRow {
  id: number;
  version: number;
  owner: string;
  kind: string;
  due_at: number;
  payload: string | null;
  attempts: number;
}

const OWNER_MAX = 512;

/**
 * Durable timers. One row per owner: scheduling replaces the owner's timer
 * (bumping its version), cancelling deletes it. Due rows are claimed with a
 * lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so nodes share the work);
 * a handler that dies mid-way loses its lease and the timer fires again
 * (at-least-once), and `completeIn` lets the handler act exactly once.
 * Timers that fell due while no node ran fire as soon as one starts.
 */
export class Scheduler {
  private readonly handlers = new Map<string, TimerHandler>();
  private readonly periodicJobs = new Map<string, () => Promise<unknown>>();
  private readonly waker = new Waker();
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly inFlight = new Set<Promise<void>>();
  /** Claims held by running handlers, per shard: timer id → the claim's attempt number. */
  private readonly claims = new Map<string, Map<number, number>>();
  private renewTimer: NodeJS.Timeout | undefined;
  /** Earliest due time a local schedule() asked for; lets the loop sleep precisely. */
  private nextLocalDue = Number.POSITIVE_INFINITY;
  readonly stats = { fired: 0, failed: 0 };

  constructor(
    private readonly storage: Storage,
    private readonly opts: SchedulerOptions,
  ) {}

  private get clock(): Clock {
    return this.opts.clock ?? systemClock;
  }

  register(kind: string, handler: TimerHandler): void {
    if (this.handlers.has(kind)) throw new Error(`timer kind ${kind} registered twice`);
    this.handlers.set(kind, handler);
  }

  /**
   * A job that runs every `everyMs` on whichever node claims its timer, so a
   * cluster runs it once per period. The timer's owner and kind are both
   * `kind`; the next run is set in the same transaction that completes this
   * one. Calling it again for the same kind (a face started again over this
   * runtime) replaces the job function and keeps the timer. The first run is
   * due `firstInMs` from now (default `everyMs`) if no timer exists yet.
   */
  async periodic(
    kind: string,
    everyMs: number,
    job: () => Promise<unknown>,
    opts: { firstInMs?: number } = {},
  ): Promise<void> {
    if (!Number.isFinite(everyMs) || everyMs <= 0) throw new Error(`periodic job ${kind}: everyMs must be positive`);
    const known = this.periodicJobs.has(kind);
    this.periodicJobs.set(kind, job);
    if (!known) {
      this.register(kind, async (timer, ctx) => {
        await this.periodicJobs.get(kind)!();
        await this.storage.shard(timer.shard).write((tx) => ctx.rescheduleIn(tx, kind, this.clock.now() + everyMs));
      });
    }
    if (!(await this.get(kind))) await this.schedule(kind, kind, this.clock.now() + (opts.firstInMs ?? everyMs));
  }

  shardOf(owner: string, shardKey?: readonly string[] | string): Shard {
    return this.storage.shardFor(shardKey ?? owner);
  }

  /** Sets (or replaces) the owner's timer in its own transaction. */
  schedule(
    owner: string,
    kind: string,
    dueAt: number,
    payload?: unknown,
    shardKey?: readonly string[] | string,
  ): Promise<{ id: number; version: number }> {
    const shard = this.shardOf(owner, shardKey);
    return shard.write((tx) => this.scheduleIn(tx, owner, kind, dueAt, payload));
  }

  /** Sets (or replaces) the owner's timer inside a caller's transaction on the owner's shard. */
  async scheduleIn(
    tx: Tx,
    owner: string,
    kind: string,
    dueAt: number,
    payload?: unknown,
  ): Promise<{ id: number; version: number }> {
    checkOwner(owner);
    checkDue(dueAt);
    const rows = await tx.all<{ id: number; version: number }>(
      `${UPSERT_TIMERS} (?, ?, ?, ?, 1, 0) ${ON_OWNER_CONFLICT} RETURNING id, version`,
      [owner, kind, Math.floor(dueAt), encodePayload(payload)],
    );
    this.wakeOnCommit(tx, dueAt);
    return rows[0]!;
  }

  /** Once `tx` commits, wakes the local loop if `dueAt` is earlier than what it sleeps towards. */
  private wakeOnCommit(tx: Tx, dueAt: number): void {
    tx.onCommit(() => {
      if (dueAt < this.nextLocalDue) {
        this.nextLocalDue = dueAt;
        this.waker.wake();
      }
    });
  }

  /**
   * Sets (or replaces) many timers in one statement per 200, in order (a new
   * timer's id follows the order given). Owners must be distinct.
   */
  async scheduleManyIn(
    tx: Tx,
    items: ReadonlyArray<{ owner: string; kind: string; dueAt: number; payload?: unknown }>,
  ): Promise<void> {
    let min = Number.POSITIVE_INFINITY;
    for (const t of items) {
      checkOwner(t.owner);
      checkDue(t.dueAt);
      if (t.dueAt < min) min = t.dueAt;
    }
    for (let off = 0; off < items.length; off += 200) {
      const chunk = items.slice(off, off + 200);
      await tx.run(
        `${UPSERT_TIMERS} ${chunk.map(() => '(?, ?, ?, ?, 1, 0)').join(', ')} ${ON_OWNER_CONFLICT}`,
        chunk.flatMap((t) => [t.owner, t.kind, Math.floor(t.dueAt), encodePayload(t.payload)]),
      );
    }
    if (items.length > 0) this.wakeOnCommit(tx, min);
  }

  /** Deletes the timers of many owners; resolves to how many there were. */
  async cancelManyIn(tx: Tx, owners: readonly string[]): Promise<number> {
    let n = 0;
    for (let off = 0; off < owners.length; off += 500) {
      const chunk = owners.slice(off, off + 500);
      for (const o of chunk) checkOwner(o);
      n += await tx.run(`DELETE FROM timers WHERE owner IN (${chunk.map(() => '?').join(', ')})`, chunk);
    }
    return n;
  }

  cancel(owner: string, shardKey?: readonly string[] | string): Promise<boolean> {
    return this.shardOf(owner, shardKey).write((tx) => this.cancelIn(tx, owner));
  }

  async cancelIn(tx: Tx, owner: string): Promise<boolean> {
    checkOwner(owner);
    return (await tx.run('DELETE FROM timers WHERE owner = ?', [owner])) > 0;
  }

  async get(owner: string, shardKey?: readonly string[] | string): Promise<Timer | null> {
    const shard = this.shardOf(owner, shardKey);
    const rows = await shard.reader.all<TimerRow>(
      'SELECT id, version, owner, kind, due_at, payload, attempts FROM timers WHERE owner = ?',
      [owner],
    );
    return rows[0] ? toTimer(shard.name, rows[0]) : null;
  }

  /** Deletes one timer version inside a transaction; false if it is no longer there. */
  async completeIn(tx: Tx, timer: Pick<Timer, 'id' | 'version'>): Promise<boolean> {
    return (await tx.run('DELETE FROM timers WHERE id = ? AND version = ?', [timer.id, timer.version])) === 1;
  }

  /**
   * Claims due timers on every shard and runs their handlers; resolves to how
   * many it fired, after they finish. The background loop calls this; tests
   * with a manual clock call it directly.
   */
  async tick(): Promise<number> {
    let fired = 0;
    for (const shard of this.storage.shards) {
      const claimed = await this.claim(shard, this.opts.batch);
      fired += claimed.length;
      await Promise.all(claimed.map((t) => this.fire(t)));
    }
    return fired;
  }

  start(): void {
    if (this.running) return;
    this.running = this.loop();
    if (this.opts.renewClaims !== false) {
      this.renewTimer = setInterval(() => void this.renewClaims(), Math.max(20, Math.floor(this.opts.leaseMs / 3)));
      this.renewTimer.unref();
    }
  }

  /** Extends the claims of handlers still running on this node (one statement per shard). */
  private async renewClaims(): Promise<void> {
    for (const shard of this.storage.shards) {
      const held = this.claims.get(shard.name);
      if (held === undefined || held.size === 0) continue;
      const ids = [...held.keys()];
      const until = this.clock.now() + this.opts.leaseMs;
      try {
        for (let i = 0; i < ids.length; i += 500) {
          const part = ids.slice(i, i + 500);
          // Rows a transaction has locked (completing or rescheduling them) are skipped, not waited for:
          // no lock-order conflict with group commits.
          const sql = `UPDATE timers SET claim_until = ? WHERE id IN (SELECT id FROM timers WHERE claimed_by = ? AND id IN (${part.map(() => '?').join(', ')})
                        ORDER BY id${shard.driver.sql.claimRows})`;
          const params = [until, this.opts.nodeId, ...part];
          // A renewal lost in a database crash only frees the claim early: no need to wait for the WAL.
          if (shard.driver.relaxed) await shard.driver.relaxed.run(sql, params);
          else await shard.write((tx) => tx.run(sql, params));
        }
      } catch (err) {
        this.opts.logger.warn({ err, shard: shard.name }, 'scheduler: renewing claims failed');
      }
    }
  }

  async stop(): Promise<void> {
    if (this.renewTimer !== undefined) clearInterval(this.renewTimer);
    this.renewTimer = undefined;
    this.stopped = true;
    this.waker.wake();
    await this.running;
    await Promise.allSettled([...this.inFlight]);
  }

  /** Releases claims that a previous run of this node (or, single-node, of any node) left behind. */
  async recover(): Promise<void> {
    for (const shard of this.storage.shards) {
      if (shard.driver.capabilities.multiNode) {
        await shard.write((tx) =>
          tx.run('UPDATE timers SET claimed_by = NULL, claim_until = NULL WHERE claimed_by = ?', [this.opts.nodeId]),
        );
      } else {
        await shard.write((tx) =>
          tx.run('UPDATE timers SET claimed_by = NULL, claim_until = NULL WHERE claimed_by IS NOT NULL'),
        );
      }
    }
  }

  private async loop(): Promise<void> {
    const concurrency = this.opts.concurrency ?? 256;
    while (!this.stopped) {
      let full = false;
      try {
        for (const shard of this.storage.shards) {
          const free = concurrency - this.inFlight.size;
          if (free <= 0) {
            full = true;
            break;
          }
          const claimed = await this.claim(shard, Math.min(free, this.opts.batch));
          if (claimed.length === Math.min(free, this.opts.batch)) full = true;
          for (const t of claimed) {
            const p = this.fire(t).finally(() => {
              this.inFlight.delete(p);
              if (this.inFlight.size === concurrency - 1) this.waker.wake();
            });
            this.inFlight.add(p);
          }
        }
      } catch (err) {
        this.opts.logger.warn({ err }, 'scheduler: claim failed');
      }
      if (this.stopped) break;
      if (full && this.inFlight.size < concurrency) continue;
      this.nextLocalDue = Number.POSITIVE_INFINITY;
      const next = await this.nextDue().catch(() => Number.POSITIVE_INFINITY);
      const wait = Math.min(this.opts.pollMs, Math.max(0, next - this.clock.now()));
      await this.waker.sleep(wait);
    }
  }

  private async nextDue(): Promise<number> {
    let next = Number.POSITIVE_INFINITY;
    for (const shard of this.storage.shards) {
      const rows = await shard.reader.all<{ due: number | null }>(
        'SELECT min(due_at) AS due FROM timers WHERE claim_until IS NULL',
      );
      const due = rows[0]?.due;
      if (due !== null && due !== undefined && due < next) next = due;
    }
    return next;
  }

  private async claim(shard: Shard, limit: number): Promise<Timer[]> {
    if (limit <= 0) return [];
    const now = this.clock.now();
    // A read first: every node polls every shard, and an empty claim would
    // still be a write joining the shard's group-commit batch.
    const due = await shard.reader.all(
      'SELECT 1 AS d FROM timers WHERE due_at <= ? AND (claim_until IS NULL OR claim_until <= ?) LIMIT 1',
      [now, now],
    );
    if (due.length === 0) return [];
    const rows = await shard.write((tx) =>
      tx.all<TimerRow>(
        `UPDATE timers SET claimed_by = ?, claim_until = ?, attempts = attempts + 1
          WHERE id IN (SELECT id FROM timers WHERE due_at <= ? AND (claim_until IS NULL OR claim_until <= ?)
                        ORDER BY due_at, id LIMIT ?${shard.driver.sql.claimRows})
          RETURNING id, version, owner, kind, due_at, payload, attempts`,
        [this.opts.nodeId, now + this.opts.leaseMs, now, now, limit],
      ),
    );
    rows.sort((a, b) => a.due_at - b.due_at || a.id - b.id);
    return rows.map((r) => toTimer(shard.name, r));
  }

  private async fire(timer: Timer): Promise<void> {
    const shard = this.storage.shard(timer.shard);
    const handler = this.handlers.get(timer.kind);
    if (handler === undefined) {
      // No handler on this node (yet): put it back so a node that has one takes it.
      await this.release(shard, timer, this.opts.pollMs).catch((err: unknown) =>
        this.opts.logger.warn(
          { err, owner: timer.owner, kind: timer.kind },
          'scheduler: releasing a timer failed; its claim lapses',
        ),
      );
      return;
    }
    const claimed = this.claims.get(shard.name) ?? new Map<number, number>();
    this.claims.set(shard.name, claimed);
    claimed.set(timer.id, timer.attempts);
    try {
      await this.runHandler(shard, timer, handler);
    } finally {
      if (claimed.get(timer.id) === timer.attempts) claimed.delete(timer.id);
    }
  }

  private async runHandler(shard: Shard, timer: Timer, handler: TimerHandler): Promise<void> {
    let completed = false;
    // The claim is the fence: this firing acts only while the timer is still claimed by it (same
    // node, same attempt), so a node that wakes after its claim ran out and another claimed the
    // timer cannot complete it.
    const ctx: TimerContext = {
      completeIn: async (tx) => {
        const ok = await this.completeClaimedIn(tx, timer);
        if (ok) tx.onCommit(() => (completed = true));
        return ok;
      },
      rescheduleIn: async (tx, kind, dueAt, payload) => {
        checkDue(dueAt);
        const n = await tx.run(
          `UPDATE timers SET kind = ?, due_at = ?, payload = ?, version = version + 1, attempts = 0, claimed_by = NULL, claim_until = NULL
            WHERE id = ? AND version = ? AND claimed_by = ? AND attempts = ?`,
          [kind, Math.floor(dueAt), encodePayload(payload), timer.id, timer.version, this.opts.nodeId, timer.attempts],
        );
        if (n !== 1) return false;
        tx.onCommit(() => (completed = true));
        this.wakeOnCommit(tx, dueAt);
        return true;
      },
    };
    try {
      await handler(timer, ctx);
      this.stats.fired++;
      if (!completed) await shard.write((tx) => this.completeClaimedIn(tx, timer));
    } catch (err) {
      if (err instanceof RetryTimer) {
        await this.release(shard, timer, err.delayMs).catch((err: unknown) =>
          this.opts.logger.warn(
            { err, owner: timer.owner, kind: timer.kind },
            'scheduler: releasing a timer failed; its claim lapses',
          ),
        );
        return;
      }
      this.stats.failed++;
      const delay = Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** Math.min(30, timer.attempts - 1));
      this.opts.logger.warn(
        { err, owner: timer.owner, kind: timer.kind, attempts: timer.attempts, retry_in_ms: delay },
        'scheduler: timer handler failed',
      );
      await this.release(shard, timer, delay).catch((err: unknown) =>
        this.opts.logger.warn(
          { err, owner: timer.owner, kind: timer.kind },
          'scheduler: releasing a timer failed; its claim lapses',
        ),
      );
    }
  }

  /** Deletes the timer version this node's claim (this attempt) holds; false if the version is gone or was claimed again since. */
  private async completeClaimedIn(tx: Tx, timer: Timer): Promise<boolean> {
    const n = await tx.run('DELETE FROM timers WHERE id = ? AND version = ? AND claimed_by = ? AND attempts = ?', [
      timer.id,
      timer.version,
      this.opts.nodeId,
      timer.attempts,
    ]);
    return n === 1;
  }

  private release(shard: Shard, timer: Timer, delayMs: number): Promise<number> {
    const due = this.clock.now() + delayMs;
    return shard.write((tx) =>
      tx.run(
        'UPDATE timers SET due_at = ?, claimed_by = NULL, claim_until = NULL WHERE id = ? AND version = ? AND claimed_by = ? AND attempts = ?',
        [due, timer.id, timer.version, this.opts.nodeId, timer.attempts],
      ),
    );
  }
}

/** Insert-or-replace of a timer by owner: a replaced timer gets a new version and is unclaimed. */
const UPSERT_TIMERS = 'INSERT INTO timers (owner, kind, due_at, payload, version, attempts) VALUES';
const ON_OWNER_CONFLICT = `ON CONFLICT (owner) DO UPDATE SET kind = excluded.kind, due_at = excluded.due_at, payload = excluded.payload,
  version = timers.version + 1, attempts = 0, claimed_by = NULL, claim_until = NULL`;

function checkDue(dueAt: number): void {
  if (!Number.isFinite(dueAt)) throw badRequest('timer due time must be a finite number of milliseconds');
}

function encodePayload(payload: unknown): string | null {
  return payload === undefined ? null : JSON.stringify(payload);
}

function checkOwner(owner: string): void {
  if (typeof owner !== 'string' || owner.length === 0 || owner.length > OWNER_MAX) {
    throw badRequest(`timer owner must be a non-empty string of at most ${OWNER_MAX} characters`);
  }
}

function toTimer(shard: string, r: TimerRow): Timer {
  return {
    shard,
    id: r.id,
    version: r.version,
    owner: r.owner,
    kind: r.kind,
    dueAt: r.due_at,
    payload: r.payload === null ? null : JSON.parse(r.payload),
    attempts: r.attempts,
  };
}
