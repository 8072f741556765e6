import { endSpan, SpanKind, startSpan } from '../core/telemetry.js';
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { isTransientTxError, sqlstateOf } from '../core/db-errors.js';
import { MillraceError, toMillraceError } from '../core/errors.js';
import type { Queryable, ShardDriver, Tx, WriteConnection } from './port.js';

export type TxFn<T> = (tx: Tx) => Promise<T>;

export interface SubmitOptions {
  /**
   * Names of the contended things (rows) the function writes, e.g. the
   * streams it appends to. Where several writers share a shard (PostgreSQL)
   * the transaction that runs the function locks all of its batch's keys
   * first, in one global order, so two writers never wait on each other in
   * opposite orders (no deadlock between writers that declare their keys).
   */
  lockKeys?: readonly string[] | undefined;
  /**
   * The function reads the committer's `beginRead` row (see its options):
   * where the connection sends statements together, the transaction reads it
   * with BEGIN, in the same round trip, and leaves it in `tx.scope` as
   * `beginRow` (null: no row). Otherwise the function reads it itself.
   */
  beginRead?: boolean | undefined;
}

/** What a transaction's scope holds when its BEGIN read the committer's `beginRead` query. */
export interface BegunScope {
  beginRow?: Record<string, unknown> | null;
}

/**
 * A write that is one statement (see `GroupCommitter.submitStatement`).
 */
export interface OneStatement<R, T> {
  /**
   * The statement's text. `locks`, when not null, is a query that takes the
   * caller's lock keys and yields one row: the statement must begin
   * `WITH locks AS (${locks})` and read it before it touches any contended
   * row (e.g. `WHERE (SELECT n FROM locks) >= 0` on the rows it writes from).
   * Its parameter is put before `params`.
   */
  sql(locks: string | null, route?: string | null): string;
  /**
   * The statement honours `route` (see Shard.writeStatement): given one, a
   * query yielding one row `ok`, it must read it as `route AS (${route})`
   * and write nothing, yielding no rows, unless `(SELECT ok FROM route)`;
   * when it writes, it yields at least one row. A statement that does not
   * honour it is run, where its key's route must be checked, as a
   * transaction that checks it first.
   */
  readonly routable?: boolean;
  readonly params: readonly unknown[];
  /** Channels to notify when it commits (as `Tx.notify`). */
  readonly channels?: readonly string[] | undefined;
  /** The caller's result from the statement's rows: called once, after the commit. */
  result(rows: R[]): T;
}

interface Job {
  fn: TxFn<unknown>;
  /** Set for a one-statement write that runs as a transaction by itself. */
  one?: OneStatement<unknown, unknown> | undefined;
  keys: readonly number[] | undefined;
  beginRead?: boolean | undefined;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** A transaction that lost a race is re-run this many times in all before its callers get the (retryable) error. */
export const MAX_TX_ATTEMPTS = 8;

/** Lock keys one transaction takes at most, summed over its callers (a caller with more runs alone). */
const MAX_BATCH_LOCKS = 256;
/** A caller declaring more keys than this takes none (the server's lock table is shared and bounded). */
const MAX_JOB_LOCKS = 1024;

/** 32-bit lock key of a name (first 4 bytes of its SHA-1, signed). */
export function lockKeyOf(name: string): number {
  return createHash('sha1').update(name).digest().readInt32BE(0);
}

/** A caller's function failed: its error, and where in the batch. */
interface Failure {
  index: number;
  error: unknown;
}

class JobTx implements Tx {
  readonly commits: Array<() => void> = [];
  readonly rollbacks: Array<() => void> = [];
  readonly channels = new Set<string>();
  constructor(
    private readonly conn: Queryable,
    readonly scope: object,
  ) {}
  all<R>(sql: string, params?: readonly unknown[]): Promise<R[]> {
    return this.conn.all<R>(sql, params);
  }
  run(sql: string, params?: readonly unknown[]): Promise<number> {
    return this.conn.run(sql, params);
  }
  onCommit(fn: () => void): void {
    this.commits.push(fn);
  }
  onRollback(fn: () => void): void {
    this.rollbacks.push(fn);
  }
  notify(channel: string): void {
    this.channels.add(channel);
  }
  undo(): void {
    for (let i = this.rollbacks.length - 1; i >= 0; i--) this.rollbacks[i]!();
  }
}

interface Outcome {
  job: Job;
  tx: JobTx;
  ok: boolean;
  value?: unknown;
  error?: unknown;
}

/**
 * Group commit: callers submit functions of a transaction; the committer folds
 * whatever is waiting into one transaction per writer connection, so one fsync
 * acknowledges many callers. A caller's failure never fails the others: with
 * cheap savepoints each caller runs inside its own; otherwise a failed batch is
 * rolled back and re-run one caller per transaction.
 *
 * A caller's promise resolves only after COMMIT returned, i.e. after the write
 * is durable under the configured durability.
 */
export class GroupCommitter extends EventEmitter {
  private queue: Job[] = [];
  private active = 0;
  private scheduled = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  /** Counters for metrics (`retries`: transactions re-run after a deadlock or serialization failure). */
  readonly stats = { batches: 0, jobs: 0, reruns: 0, retries: 0 };
  /** Channels whose only reader is in this process (the 'notify' event reaches it): no NOTIFY goes to the server. */
  private readonly localOnly = new Set<string>();

  constructor(
    private readonly driver: ShardDriver,
    private readonly opts: {
      maxBatch: number;
      retryDelayMs?: number;
      /** A query of one row that callers asking `beginRead` need in their transaction (e.g. the shard's routing row). */
      beginRead?: string;
    },
  ) {
    super();
  }

  /**
   * Runs `fn` in a write transaction shared with other callers. The function
   * may run more than once: after a deadlock or serialization failure its
   * transaction is rolled back (its onRollback hooks run) and it is re-run in
   * a fresh one, up to MAX_TX_ATTEMPTS times; only the attempt that commits
   * runs its onCommit hooks, and the promise settles once.
   */
  submit<T>(fn: TxFn<T>, opts: SubmitOptions = {}): Promise<T> {
    if (this.closed) return Promise.reject(new MillraceError('shutting_down', 'storage is closing'));
    // A caller with very many keys goes without: it still gets the deadlock retry.
    const declared =
      opts.lockKeys !== undefined &&
      opts.lockKeys.length > 0 &&
      opts.lockKeys.length <= MAX_JOB_LOCKS &&
      this.driver.sql.beginLocked !== null;
    const keys = declared ? opts.lockKeys!.map(lockKeyOf) : undefined;
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        fn: fn as TxFn<unknown>,
        keys,
        beginRead: opts.beginRead,
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      this.schedule();
    });
  }

  /**
   * Runs a write that is one statement as a transaction by itself, in one
   * round trip where the dialect allows (`SqlFragments.lockingQuery`): the
   * statement is sent outside BEGIN, takes the caller's lock keys first (in
   * the committer's one order, inside the statement), and commits before it
   * answers, durably as any commit here. It is not batched with other
   * callers: it is meant for a write that already carries many (a wave of
   * ledger postings). A lost race (deadlock, serialization failure) re-runs
   * it, up to MAX_TX_ATTEMPTS times; `result` runs once, after the commit.
   * Where the dialect has no such locks, or a channel to notify must reach
   * other nodes, it runs as an ordinary caller (BEGIN, statement, COMMIT).
   */
  submitStatement<R, T>(stmt: OneStatement<R, T>, opts: SubmitOptions = {}): Promise<T> {
    const fn: TxFn<R[]> = async (tx) => {
      const rows = await tx.all<R>(stmt.sql(null), stmt.params);
      for (const c of stmt.channels ?? []) tx.notify(c);
      return rows;
    };
    if (this.driver.sql.lockingQuery === null) return this.submit(fn, opts).then((rows) => stmt.result(rows));
    if (this.closed) return Promise.reject(new MillraceError('shutting_down', 'storage is closing'));
    const declared = opts.lockKeys !== undefined && opts.lockKeys.length > 0 && opts.lockKeys.length <= MAX_JOB_LOCKS;
    const keys = declared ? opts.lockKeys!.map(lockKeyOf) : undefined;
    return new Promise<R[]>((resolve, reject) => {
      this.queue.push({
        fn: fn as TxFn<unknown>,
        one: stmt as OneStatement<unknown, unknown>,
        keys,
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      this.schedule();
    }).then((rows) => stmt.result(rows));
  }

  /** How many waiting jobs the next batch takes: at most `max`, and lock keys within MAX_BATCH_LOCKS (the server's lock table is shared and bounded). */
  private batchLength(max: number): number {
    // A one-statement write goes alone (first in its batch), and ends the batch before it.
    if (this.queue[0]?.one !== undefined) return 1;
    let n = 0;
    let keys = 0;
    while (n < this.queue.length && n < max) {
      if (this.queue[n]!.one !== undefined) break;
      const k = this.queue[n]!.keys?.length ?? 0;
      if (n > 0 && keys + k > MAX_BATCH_LOCKS) break;
      keys += k;
      n++;
    }
    return n;
  }

  /** BEGIN for a transaction of `jobs`: with their lock keys, sorted and distinct, where the dialect takes them. */
  private beginFor(jobs: readonly Job[]): string {
    const locked = this.driver.sql.beginLocked;
    if (locked === null) return this.driver.sql.begin;
    const keys = new Set<number>();
    for (const j of jobs) if (j.keys) for (const k of j.keys) keys.add(k);
    if (keys.size === 0) return this.driver.sql.begin;
    return locked([...keys].sort((a, b) => a - b));
  }

  /**
   * Begins the transaction of `jobs`. Where one of them asks for the
   * `beginRead` row, the connection sends statements together and the jobs
   * share `scope`, the row is read in the same round trip as BEGIN.
   */
  private async begin(conn: WriteConnection, jobs: readonly Job[], scope: BegunScope | undefined): Promise<void> {
    const sql = this.beginFor(jobs);
    const read = this.opts.beginRead;
    if (read === undefined || scope === undefined || conn.execRows === undefined || !jobs.some((j) => j.beginRead)) {
      await conn.exec(sql);
      return;
    }
    const rows = await conn.execRows(`${sql}; ${read}`);
    scope.beginRow = rows[0] ?? null;
  }

  /** A short random pause before re-running a transaction that lost a race, longer with each attempt. */
  private async backoff(attempt: number): Promise<void> {
    this.stats.retries++;
    const base = this.opts.retryDelayMs ?? 2;
    if (base <= 0) return;
    await new Promise((r) => setTimeout(r, Math.random() * base * attempt));
  }

  /**
   * Marks a channel as read only in this process, or not any more. The
   * sequencer that leads a shard marks the append channel so: commits here
   * wake it through the 'notify' event, and the server is spared a NOTIFY
   * per batch (which would also wake every listening session of the database).
   */
  setLocalOnly(channel: string, on: boolean): void {
    if (on) this.localOnly.add(channel);
    else this.localOnly.delete(channel);
  }

  get pending(): number {
    return this.queue.length;
  }

  private schedule(): void {
    if (this.scheduled || this.active >= this.driver.writers) return;
    this.scheduled = true;
    // Let every caller woken in this turn of the event loop join the batch.
    setImmediate(() => {
      this.scheduled = false;
      while (this.active < this.driver.writers && this.queue.length > 0) {
        this.active++;
        void this.drain();
      }
    });
  }

  private async drain(): Promise<void> {
    let conn: WriteConnection | undefined;
    let healthy = true;
    try {
      conn = await this.driver.acquireWriter();
      while (healthy && this.queue.length > 0) {
        // Share what is waiting among the writer connections instead of
        // letting the first one take it all while the others sit idle.
        const share = Math.ceil(this.queue.length / this.driver.writers);
        const batch = this.queue.splice(0, this.batchLength(Math.min(this.opts.maxBatch, share)));
        const one = batch[0]!.one;
        healthy =
          one !== undefined && this.alone(one)
            ? await this.runStatement(conn, batch[0]!, one)
            : await this.runBatch(conn, batch);
      }
    } catch (err) {
      // Could not get a connection: fail what is waiting rather than hang.
      const waiting = this.queue.splice(0);
      const e = new MillraceError('unavailable', `storage unavailable: ${(err as Error).message}`, {
        cause: err,
        retryAfterS: 1,
      });
      for (const j of waiting) j.reject(e);
    } finally {
      // A connection that failed at BEGIN/COMMIT may be broken: do not reuse it.
      conn?.release(!healthy);
      this.active--;
      if (this.queue.length > 0) this.schedule();
      else if (this.active === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** Whether a one-statement write can run by itself: none of its channels must reach the server (a NOTIFY needs a statement of its own). */
  private alone(one: OneStatement<unknown, unknown>): boolean {
    if (this.driver.sql.lockingQuery === null) return false;
    return this.driver.sql.notify === null || (one.channels ?? []).every((c) => this.localOnly.has(c));
  }

  /** A one-statement write as a transaction by itself (see submitStatement); resolves false if the connection failed. */
  private async runStatement(conn: WriteConnection, job: Job, one: OneStatement<unknown, unknown>): Promise<boolean> {
    const span = startSpan('millrace.group_commit', undefined, SpanKind.INTERNAL, {
      'millrace.jobs': 1,
      'millrace.one_statement': true,
    });
    if (span === undefined) return this.runStatementTraced(conn, job, one);
    const ok = await this.runStatementTraced(conn, job, one);
    endSpan(span, ok ? undefined : new Error('the connection failed'));
    return ok;
  }

  private async runStatementTraced(
    conn: WriteConnection,
    job: Job,
    one: OneStatement<unknown, unknown>,
  ): Promise<boolean> {
    this.stats.batches++;
    this.stats.jobs++;
    const keys = job.keys === undefined ? [] : [...new Set(job.keys)].sort((a, b) => a - b);
    // The locking query's parameter (the keys) comes first: its text comes first.
    const text = one.sql(keys.length > 0 ? this.driver.sql.lockingQuery : null);
    const params = keys.length > 0 ? [keys, ...one.params] : one.params;
    for (let attempt = 1; ; attempt++) {
      let rows: unknown[];
      try {
        rows = await conn.all(text, params);
      } catch (err) {
        // The statement's transaction was rolled back: nothing of it is stored.
        if (isTransientTxError(err) && attempt < MAX_TX_ATTEMPTS) {
          await this.backoff(attempt);
          continue;
        }
        // A server's refusal (an SQLSTATE) is the caller's error and leaves the
        // connection usable; anything else (a broken connection) may have lost
        // the answer of a commit: nothing is known durable.
        const refused = isRefusal(err);
        job.reject(refused && !isTransientTxError(err) ? err : commitError(err));
        return refused;
      }
      for (const c of one.channels ?? []) {
        try {
          this.emit('notify', c);
        } catch (err) {
          // Committed: a failing listener must not keep the caller unanswered (reported as in settle).
          if (this.listenerCount('error') > 0) this.emit('error', err);
        }
      }
      job.resolve(rows);
      return true;
    }
  }

  /** Runs one batch; resolves false if the connection failed outside any caller's code. */
  private async runBatch(conn: WriteConnection, batch: Job[]): Promise<boolean> {
    const span = startSpan('millrace.group_commit', undefined, SpanKind.INTERNAL, { 'millrace.jobs': batch.length });
    if (span === undefined) return this.runBatchTraced(conn, batch);
    try {
      const ok = await this.runBatchTraced(conn, batch);
      endSpan(span, ok ? undefined : new Error('the connection failed'));
      return ok;
    } catch (err) {
      endSpan(span, err);
      throw err;
    }
  }

  private async runBatchTraced(conn: WriteConnection, batch: Job[]): Promise<boolean> {
    this.stats.batches++;
    this.stats.jobs += batch.length;
    const cheap = this.driver.capabilities.cheapSavepoints;
    for (let attempt = 1; ; attempt++) {
      let outcomes: Outcome[] | Failure;
      try {
        outcomes = cheap ? await this.runWithSavepoints(conn, batch) : await this.runOptimistic(conn, batch);
        if (Array.isArray(outcomes)) await this.driver.sync?.();
      } catch (err) {
        // BEGIN or COMMIT failed and the transaction was rolled back. A lost
        // race (the lock statement or COMMIT chosen as a deadlock victim) is
        // re-run; anything else: nothing of this batch is known durable.
        if (isTransientTxError(err)) {
          if (attempt < MAX_TX_ATTEMPTS) {
            await this.backoff(attempt);
            continue;
          }
          // Out of attempts for the batch: each caller gets attempts of its own.
          if (batch.length > 1) return this.runEachAlone(conn, batch);
        }
        const e = commitError(err);
        for (const j of batch) j.reject(e);
        return isTransientTxError(err);
      }
      if (Array.isArray(outcomes)) {
        this.settle(outcomes);
        return true;
      }
      // A caller lost a race (deadlock, serialization failure): every caller
      // of the batch was rolled back with it and none is at fault; run the
      // batch again.
      if (isTransientTxError(outcomes.error) && attempt < MAX_TX_ATTEMPTS) {
        await this.backoff(attempt);
        continue;
      }
      return this.runEachAlone(conn, batch);
    }
  }

  /** One caller failed inside a batch without savepoints: re-run each caller in a transaction of its own. */
  private async runEachAlone(conn: WriteConnection, batch: Job[]): Promise<boolean> {
    this.stats.reruns++;
    const outcomes: Outcome[] = [];
    let healthy = true;
    for (const job of batch) {
      if (!healthy) {
        job.reject(
          new MillraceError('unavailable', 'write not committed: storage connection failed', { retryAfterS: 1 }),
        );
        continue;
      }
      for (let attempt = 1; ; attempt++) {
        let r: Outcome;
        try {
          r = (await this.runWithSavepoints(conn, [job], false))[0]!;
        } catch (err) {
          if (isTransientTxError(err) && attempt < MAX_TX_ATTEMPTS) {
            await this.backoff(attempt);
            continue;
          }
          if (!isTransientTxError(err)) healthy = false;
          job.reject(commitError(err));
          break;
        }
        if (!r.ok && isTransientTxError(r.error) && attempt < MAX_TX_ATTEMPTS) {
          await this.backoff(attempt);
          continue;
        }
        outcomes.push(r);
        break;
      }
    }
    if (this.driver.sync) {
      try {
        await this.driver.sync();
      } catch (err) {
        const e = commitError(err);
        for (const o of outcomes) o.job.reject(e);
        return false;
      }
    }
    this.settle(outcomes);
    return healthy;
  }

  private settle(outcomes: Outcome[]): void {
    const channels = new Set<string>();
    for (const o of outcomes) {
      if (!o.ok) continue;
      for (const c of o.tx.channels) channels.add(c);
      for (const fn of o.tx.commits) {
        try {
          fn();
        } catch (err) {
          // Without a listener, emit('error') would throw here and leave the batch's callers unsettled.
          if (this.listenerCount('error') > 0) this.emit('error', err);
        }
      }
    }
    for (const c of channels) this.emit('notify', c);
    for (const o of outcomes) o.ok ? o.job.resolve(o.value) : o.job.reject(o.error);
  }

  /** Each caller in its own savepoint (or alone, when `savepoints` is false). */
  private async runWithSavepoints(conn: WriteConnection, batch: Job[], savepoints = true): Promise<Outcome[]> {
    const shared: BegunScope = {};
    // Each caller in a savepoint of its own has a scope of its own: nothing read at BEGIN is handed out then.
    await this.begin(conn, batch, savepoints ? undefined : shared);
    const outcomes: Outcome[] = [];
    try {
      for (const job of batch) {
        // A savepoint rolled back frees what was locked inside it: nothing is shared past one.
        const tx = new JobTx(conn, savepoints ? {} : shared);
        if (savepoints) await conn.exec('SAVEPOINT job');
        try {
          const value = await job.fn(tx);
          // A statement failed and the caller caught it, but the transaction is lost: the caller failed.
          const broken = await conn.failure?.();
          // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrows what broke the connection, as the driver got it
          if (broken !== undefined) throw broken;
          if (savepoints) await conn.exec('RELEASE job');
          outcomes.push({ job, tx, ok: true, value });
        } catch (error) {
          // Hooks first: if the rollback statement fails too, the outer catch undoes only the callers that succeeded.
          tx.undo();
          if (savepoints) {
            await conn.exec('ROLLBACK TO job');
            await conn.exec('RELEASE job');
          } else await conn.exec('ROLLBACK');
          outcomes.push({ job, tx, ok: false, error });
          if (!savepoints) return outcomes;
        }
      }
      await this.notifyInTx(conn, outcomes);
      await conn.exec('COMMIT');
      return outcomes;
    } catch (err) {
      // The jobs get the error below; a ROLLBACK that fails means the connection is gone, which ends the transaction too.
      await conn.exec('ROLLBACK').catch(() => {});
      for (let i = outcomes.length - 1; i >= 0; i--) if (outcomes[i]!.ok) outcomes[i]!.tx.undo();
      throw err;
    }
  }

  /** No savepoints: all callers in one transaction; the first failure if any of them failed (then nothing was committed). */
  private async runOptimistic(conn: WriteConnection, batch: Job[]): Promise<Outcome[] | Failure> {
    if (batch.length === 1) {
      const r = await this.runWithSavepoints(conn, batch, false);
      return r[0]!.ok ? r : { index: 0, error: r[0]!.error };
    }
    const scope: BegunScope = {};
    await this.begin(conn, batch, scope);
    const outcomes: Outcome[] = [];
    try {
      for (const job of batch) {
        const tx = new JobTx(conn, scope);
        try {
          const value = await job.fn(tx);
          const broken = await conn.failure?.();
          // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrows what broke the connection, as the driver got it
          if (broken !== undefined) throw broken;
          outcomes.push({ job, tx, ok: true, value });
        } catch (error) {
          const index = outcomes.length;
          tx.undo();
          for (let i = outcomes.length - 1; i >= 0; i--) outcomes[i]!.tx.undo();
          // Undone once: should the ROLLBACK fail, the outer catch finds nothing left to undo.
          outcomes.length = 0;
          await conn.exec('ROLLBACK');
          return { index, error };
        }
      }
      await this.notifyInTx(conn, outcomes);
      await conn.exec('COMMIT');
      return outcomes;
    } catch (err) {
      // The jobs get the error below; a ROLLBACK that fails means the connection is gone, which ends the transaction too.
      await conn.exec('ROLLBACK').catch(() => {});
      for (let i = outcomes.length - 1; i >= 0; i--) outcomes[i]!.tx.undo();
      throw err;
    }
  }

  private async notifyInTx(conn: WriteConnection, outcomes: Outcome[]): Promise<void> {
    const sql = this.driver.sql.notify;
    if (sql === null) return;
    const channels = new Set<string>();
    for (const o of outcomes) if (o.ok) for (const c of o.tx.channels) if (!this.localOnly.has(c)) channels.add(c);
    for (const c of channels) await conn.run(sql, [c, '']);
  }

  /** Stops accepting work and waits for what is in flight. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.active === 0 && this.queue.length === 0 && !this.scheduled) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }
}

/** A refusal the server answered with on a session that goes on (not a connection failure or the server going down). */
function isRefusal(err: unknown): boolean {
  const s = sqlstateOf(err);
  return s !== undefined && !s.startsWith('08') && !s.startsWith('57');
}

/** The error for callers whose transaction failed at BEGIN or COMMIT (or the connection broke). */
function commitError(err: unknown): unknown {
  if (err instanceof MillraceError) return err;
  const e = toMillraceError(err);
  if (e.code !== 'internal') return e;
  return new MillraceError('unavailable', `write not committed: ${(err as Error).message}`, {
    cause: err,
    retryAfterS: 1,
  });
}
