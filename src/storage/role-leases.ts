import type { Logger } from 'pino';
import { MillraceError } from '../core/errors.js';
import { silentLogger } from '../core/logger.js';
import type { HeldLock, Queryable, ShardDriver, WriteConnection } from './port.js';

/**
 * An exclusive role held on a shard (its sequencer, an exclusive cursor):
 * valid while `lost` has not fired, and only for work whose transaction
 * passes `fence`.
 */
export interface RoleLease {
  readonly role: string;
  /** Fencing token: grows by one at every hand-over of the role. */
  readonly epoch: number;
  /** The session that holds the role's lock; it lives exactly as long as the role is held. */
  readonly conn: WriteConnection;
  /** Fires once the role is lost: its session broke, or another node took the role over. */
  readonly lost: AbortSignal;
  /**
   * Run inside the transaction that does the role's work: extends the lease
   * and throws `RoleLost` (rolling the transaction back) if another holder
   * has taken the role since. Because the check and the work commit together,
   * a holder that wakes from a pause cannot act on a role it lost.
   */
  fence(q: Queryable): Promise<void>;
  /**
   * The fence as a statement to run inside the caller's own statement (one
   * round trip instead of two), in the transaction that does the role's
   * work: `sql` (with `params`, no RETURNING) extends the lease if the role
   * is still ours; pass the number of rows it changed to `confirm`, which
   * throws `RoleLost` unless it is 1 (the caller then rolls back). Null
   * where `fence` checks nothing (one process owns the shard).
   */
  fenceStatement(): { sql: string; params: readonly unknown[]; confirm: (changed: number) => void } | null;
  /**
   * Runs one step of the role's work (a batch, a poll). While a step has
   * run for longer than a lease the lease is not renewed: a holder stuck
   * inside its work, not only a frozen process, loses the role (within
   * about two leases).
   */
  step<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Before an effect outside the shard (which no transaction can fence):
   * resolves at once if the lease was confirmed within half a lease, else
   * confirms it with the database; throws `RoleLost` if the role is gone.
   */
  check(): Promise<void>;
  release(): Promise<void>;
}

/** Thrown by `RoleLease.fence` when another holder has the role; retryable for anything that reaches a client. */
export class RoleLost extends MillraceError {
  constructor(role: string, epoch: number) {
    super('unavailable', `this node no longer holds the role ${role} (epoch ${epoch})`, {
      retryAfterS: 1,
      details: { role },
    });
  }
}

export interface RoleLeaseOptions {
  /** This node (recorded as the holder, for diagnostics). */
  holder: string;
  /** A role not renewed for this long may be taken over. */
  leaseMs: number;
  logger?: Logger;
}

interface Held {
  epoch: number;
  lost: AbortController;
  /** performance.now() when the running step began; undefined between steps. */
  busySince: number | undefined;
  /** performance.now() when the lease was last confirmed current. */
  confirmedAt: number;
}

/**
 * Exclusive roles of one node on one shard. A role is a lock held on a
 * session of its own (`ShardDriver.lock`: a standby blocks on its session
 * and gets the lock the moment the holder's session ends, so a killed
 * holder is replaced at once) plus, where other processes share the shard,
 * a lease row (`role_leases`) with an epoch:
 *
 * - Taking the role bumps the epoch and records the holder's session.
 * - One statement per tick (a quarter of the lease) for all roles of the
 *   node on the shard renews the leases it holds and, if it waits for some
 *   role, ends the session of a holder whose lease has run out. A holder
 *   that hangs (a frozen process keeps its sockets, and so its lock, open)
 *   thereby loses the role within about 1.25 leases, and its open
 *   transactions roll back with its session.
 * - The work of a role commits only with `fence` in its transaction, which
 *   checks the epoch: a holder that wakes after a hand-over does nothing.
 *
 * Where one process owns the shard (SQLite) the lock alone is enough: the
 * epoch is 1 and `fence` checks nothing.
 */
export class RoleLeases {
  private readonly held = new Map<string, Held>();
  private readonly wanted = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private ticked = false;
  private closed = false;

  constructor(
    private readonly driver: ShardDriver,
    private readonly opts: RoleLeaseOptions,
  ) {
    this.logger = opts.logger ?? silentLogger;
  }

  private logger: Logger;

  /** Where takeovers and failed renewals are logged. */
  setLogger(logger: Logger): void {
    this.logger = logger;
  }

  get tickMs(): number {
    return Math.max(50, Math.floor(this.opts.leaseMs / 4));
  }

  /** Roles this node holds on the shard, with their epochs (diagnostics). */
  holding(): Record<string, number> {
    return Object.fromEntries([...this.held].map(([r, h]) => [r, h.epoch]));
  }

  /** Waits until this node holds `role`; rejects if `abort` fires or the shard cannot be reached (the caller retries). */
  async acquire(role: string, abort: AbortSignal): Promise<RoleLease> {
    const sql = this.driver.sql.roles;
    if (sql === null) return this.local(await this.driver.lock(role, abort), role);
    this.wanted.set(role, (this.wanted.get(role) ?? 0) + 1);
    this.schedule();
    let lock: HeldLock;
    try {
      lock = await this.driver.lock(role, abort);
    } finally {
      const n = (this.wanted.get(role) ?? 1) - 1;
      if (n > 0) this.wanted.set(role, n);
      else this.wanted.delete(role);
    }
    let epoch: number;
    try {
      // Waits (bounded by the server's idle-in-transaction timeout) if a frozen
      // ex-holder's transaction still has the row locked.
      const rows = await lock.conn.all<{ epoch: number }>(sql.take, [role, this.opts.holder, this.opts.leaseMs]);
      epoch = Number(rows[0]!.epoch);
    } catch (err) {
      // The caller gets the error below; a lock that is not released goes with its connection.
      await lock.release().catch(() => {});
      throw err;
    }
    const lost = new AbortController();
    const held: Held = { epoch, lost, busySince: undefined, confirmedAt: performance.now() };
    this.held.set(role, held);
    this.schedule();
    const drop = (): void => {
      if (this.held.get(role) === held) this.held.delete(role);
      lost.abort(new RoleLost(role, epoch));
    };
    void lock.lost.then(drop, drop);
    return {
      role,
      epoch,
      conn: lock.conn,
      lost: lost.signal,
      fence: async (q) => {
        if (lost.signal.aborted) throw new RoleLost(role, epoch);
        const n = await q.run(sql.fence, [this.opts.leaseMs, role, epoch]);
        if (n !== 1) {
          drop();
          throw new RoleLost(role, epoch);
        }
        held.confirmedAt = performance.now();
      },
      fenceStatement: () => {
        if (lost.signal.aborted) throw new RoleLost(role, epoch);
        return {
          sql: sql.fence,
          params: [this.opts.leaseMs, role, epoch],
          confirm: (changed) => {
            if (changed !== 1) {
              drop();
              throw new RoleLost(role, epoch);
            }
            held.confirmedAt = performance.now();
          },
        };
      },
      step: async (fn) => {
        held.busySince = performance.now();
        try {
          return await fn();
        } finally {
          held.busySince = undefined;
        }
      },
      check: async () => {
        if (lost.signal.aborted) throw new RoleLost(role, epoch);
        if (performance.now() - held.confirmedAt < this.opts.leaseMs / 2) return;
        const n = await (this.driver.relaxed ?? this.driver.reader).run(sql.fence, [this.opts.leaseMs, role, epoch]);
        if (n !== 1) {
          drop();
          throw new RoleLost(role, epoch);
        }
        held.confirmedAt = performance.now();
      },
      release: async () => {
        drop();
        await lock.release();
      },
    };
  }

  /** A role where this process is the shard's only user: the lock is the whole story. */
  private local(lock: HeldLock, role: string): RoleLease {
    const lost = new AbortController();
    void lock.lost.then(() => lost.abort(new RoleLost(role, 1)));
    return {
      role,
      epoch: 1,
      conn: lock.conn,
      lost: lost.signal,
      fence: async () => {
        if (lost.signal.aborted) throw new RoleLost(role, 1);
      },
      fenceStatement: () => {
        if (lost.signal.aborted) throw new RoleLost(role, 1);
        return null;
      },
      step: (fn) => fn(),
      check: async () => {
        if (lost.signal.aborted) throw new RoleLost(role, 1);
      },
      release: () => lock.release(),
    };
  }

  private schedule(): void {
    if (this.timer !== undefined || this.closed) return;
    if (this.held.size === 0 && this.wanted.size === 0) return;
    // The first tick at once: its session (from the lease pool, kept while idle) opens at start, not later under load.
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        void this.tick().finally(() => this.schedule());
      },
      this.ticked ? this.tickMs : 0,
    );
    this.timer.unref();
  }

  /** Renews what this node holds and ends hung holders of what it waits for: one statement. */
  async tick(): Promise<void> {
    const sql = this.driver.sql.roles;
    if (sql === null || this.ticking || this.closed) return;
    if (this.held.size === 0 && this.wanted.size === 0) return;
    this.ticking = true;
    this.ticked = true;
    const now = performance.now();
    // A role whose current step has run for a whole lease is left to expire.
    const held = [...this.held].filter(([, h]) => h.busySince === undefined || now - h.busySince < this.opts.leaseMs);
    try {
      const q = this.driver.relaxed ?? this.driver.reader;
      const rows = await q.all<{ kind: 'held' | 'ended'; role: string }>(sql.tick, [
        held.map(([r]) => r),
        held.map(([, h]) => h.epoch),
        this.opts.leaseMs,
        [...this.wanted.keys()],
      ]);
      const renewed = new Set(rows.filter((r) => r.kind === 'held').map((r) => r.role));
      for (const [role, h] of held) {
        if (this.held.get(role) !== h) continue;
        if (renewed.has(role)) {
          h.confirmedAt = now;
          continue;
        }
        // Another node took the role over (this one was paused past its lease).
        this.logger.warn({ role, epoch: h.epoch }, 'role lease: taken over by another node; standing by');
        this.held.delete(role);
        h.lost.abort(new RoleLost(role, h.epoch));
      }
      for (const r of rows)
        if (r.kind === 'ended')
          this.logger.warn({ role: r.role }, 'role lease: ended the session of a holder that stopped renewing');
    } catch (err) {
      this.logger.warn({ err }, 'role lease: renewal failed');
    } finally {
      this.ticking = false;
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
