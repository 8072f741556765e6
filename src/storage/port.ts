/**
 * The storage port. Core code and faces talk to a shard only through these
 * interfaces; each dialect (sqlite/, postgres/) implements them. SQL is written
 * once with `?` placeholders; a dialect that numbers its parameters rewrites
 * them. Timestamps are integer milliseconds since the epoch, JSON is text,
 * bytes are Buffers, and 64-bit integers come back as JavaScript numbers
 * (positions stay far below 2^53).
 */

export type Row = Record<string, unknown>;

export interface Queryable {
  /** Rows of a SELECT, or of a statement with RETURNING. */
  all<R = Row>(sql: string, params?: readonly unknown[]): Promise<R[]>;
  /** Executes a statement; resolves to the number of rows it changed. */
  run(sql: string, params?: readonly unknown[]): Promise<number>;
}

/** A write transaction handed to one caller's function by the group committer. */
export interface Tx extends Queryable {
  /**
   * One object for every caller of one transaction (attempt): a key for
   * what may be cached while the transaction lives, such as the shard's
   * routing state read under its lock.
   */
  readonly scope?: object;
  /** Runs after the transaction that holds this caller's writes commits. */
  onCommit(fn: () => void): void;
  /** Runs if this caller's writes are rolled back (in reverse order of registration). */
  onRollback(fn: () => void): void;
  /** Wakes listeners of `channel` on every node once the transaction commits. */
  notify(channel: string): void;
}

/** A connection the group committer holds for one batch. */
export interface WriteConnection extends Queryable {
  exec(sql: string): Promise<void>;
  /** Where the dialect sends several statements in one round trip: runs them, answering the last one's rows. */
  execRows?(sql: string): Promise<Row[]>;
  release(destroy?: boolean): void;
  /**
   * Resolves to the error that left the open transaction unusable, or
   * undefined. PostgreSQL aborts a transaction at a failed statement even when
   * the caller catches the error, and then turns COMMIT into a silent ROLLBACK.
   */
  failure?(): Promise<unknown>;
}

export interface DialectCapabilities {
  /** One writer per shard: `pos` and the hash are set when the row is inserted. */
  readonly sequencesOnInsert: boolean;
  /** Savepoints cost nothing (no round trip); otherwise a failed batch is re-run caller by caller. */
  readonly cheapSavepoints: boolean;
  /** Other nodes share the shard: claims must skip rows locked by them. */
  readonly multiNode: boolean;
  /** Array parameters expand into rows server-side (`unnest(?::text[])`): one statement for many rows (PostgreSQL). */
  readonly bulkArrayParams: boolean;
  /** Declarative table partitioning: tables split by range, partitions attached and dropped (PostgreSQL). */
  readonly tablePartitioning: boolean;
  /**
   * Exactly one connection writes a shard at a time, across all processes, so
   * transactions commit in the order they were submitted (SQLite).
   */
  readonly singleWriter: boolean;
}

export interface SqlFragments {
  /** Appended to a SELECT that claims rows (`FOR UPDATE SKIP LOCKED` or nothing). */
  readonly claimRows: string;
  /** BEGIN statement for write transactions. */
  readonly begin: string;
  /**
   * BEGIN that also takes transaction-scoped exclusive locks on `keys` (32-bit
   * integers, already sorted and distinct) in the order given, in one round
   * trip; null where one writer owns the shard and nothing can interleave
   * (SQLite). The group committer takes the keys its callers declared this
   * way, so writers lock in one global order (see GroupCommitter.submit).
   */
  readonly beginLocked: ((keys: readonly number[]) => string) | null;
  /**
   * A query that takes the same locks as `beginLocked`, in the same order,
   * given as its one parameter (an array), and yields one row `(n)`: the
   * first CTE of a statement that is a whole transaction by itself (sent
   * outside BEGIN, it commits before it answers: one round trip). Null where
   * there are no such locks (SQLite). See GroupCommitter.submitStatement.
   */
  readonly lockingQuery: string | null;
  /**
   * Statement `(channel, payload)` that notifies other nodes when the current
   * transaction commits; null where one process owns the shard.
   */
  readonly notify: string | null;
  /**
   * Statements of role leases (see `RoleLeases`), where holders of exclusive
   * roles live in other processes that can hang; null where one process owns
   * the shard. Times are the database's clock, in milliseconds.
   */
  readonly roles: RoleLeaseSql | null;
}

/** The statements behind role leases (table `role_leases`). */
export interface RoleLeaseSql {
  /**
   * `(role, holder, ttl_ms)`, run on the session that holds the role's lock:
   * records this session as the holder, bumps the epoch, returns `epoch`.
   */
  readonly take: string;
  /**
   * `(ttl_ms, role, epoch)`: extends the lease if `epoch` is still current;
   * changes no row (0) once another holder took the role. Run inside the
   * transaction that does the role's work, it fences that work.
   */
  readonly fence: string;
  /**
   * `(held_roles[], held_epochs[], ttl_ms, wanted_roles[])`: renews the held
   * leases whose epoch is current (skipping rows a transaction has locked),
   * and ends the sessions of holders of wanted roles whose lease has expired
   * (a hung holder keeps its session, and so its lock, open). Rows
   * `{ kind: 'held', role }` for each held role whose epoch is still
   * current, `{ kind: 'ended', role }` for each holder ended.
   */
  readonly tick: string;
}

export type DialectName = 'sqlite' | 'postgres';

export interface Migration {
  /** Stable, ordered id, e.g. `core/0001_log`. */
  readonly id: string;
  readonly sql: Record<DialectName, string>;
}

export interface ShardDriver {
  readonly dialect: DialectName;
  readonly capabilities: DialectCapabilities;
  readonly sql: SqlFragments;
  /** How many write connections the group committer may use at once. */
  readonly writers: number;
  /** Reads outside any write transaction; always sees committed data. */
  readonly reader: Queryable;
  /**
   * Where present (PostgreSQL), single statements each in a transaction of
   * its own, outside group commit, acknowledged once committed but before the
   * commit is on disk (`synchronous_commit = off`): for short-lived claims
   * such as leases, whose loss in a database crash only frees them early.
   * Any later durable commit on the shard makes them durable too (one WAL).
   */
  readonly relaxed?: Queryable;
  acquireWriter(): Promise<WriteConnection>;
  /**
   * Applies the migrations not yet recorded, in order, in one transaction under
   * a migration lock; returns the ids applied (empty when up to date).
   */
  migrate(migrations: readonly Migration[]): Promise<string[]>;
  /** Ids of migrations recorded as applied. */
  appliedMigrations(): Promise<string[]>;
  /** Subscribes to cross-node notifications on `channel` (no-op for single-process dialects). */
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
  /** Sends a notification outside a transaction. */
  notify(channel: string, payload: string): Promise<void>;
  /**
   * Waits for an exclusive, session-scoped lock and resolves to a handle once
   * held. The wait happens on one dedicated session (PostgreSQL: a blocking
   * `pg_advisory_lock` on a connection of its own, so a standby costs one idle
   * backend and opens nothing new while it waits); the lock frees when the
   * holder releases it or its process or connection dies, and the longest
   * waiter gets it then. Rejects if `abort` fires or the waiting session
   * breaks (the caller retries). SQLite: the process is the only user, so
   * waiters queue in memory.
   */
  lock(key: string, abort: AbortSignal): Promise<HeldLock>;

  /**
   * Claims `key` for as long as this driver lives, on a session it keeps
   * anyway (PostgreSQL: a session-level advisory lock on the LISTEN
   * connection, freed when the process ends, however it ends); false if
   * another live process holds it. Absent where one process owns the storage.
   */
  claimSession?(key: string): Promise<boolean>;
  /**
   * Whether some live session (of any process) holds the claim `key` made
   * with `claimSession`: false once that process has ended, however it ended.
   */
  claimHeld?(key: string): Promise<boolean>;

  /** Sessions this driver may open on the server at most, exclusive jobs past the first not counted (absent without a server). */
  readonly sessionBudget?: number;
  /**
   * Present where COMMIT returns before the commit is durable (SQLite: the WAL
   * is fsync'd off the event loop). Resolves once every commit that returned
   * before the call is on disk; the group committer awaits it before it
   * acknowledges a batch.
   */
  sync?(): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface HeldLock {
  /** A connection that lives exactly as long as the lock. */
  readonly conn: WriteConnection;
  /** Resolves/rejects when the lock is lost (the connection broke). */
  readonly lost: Promise<void>;
  release(): Promise<void>;
}
