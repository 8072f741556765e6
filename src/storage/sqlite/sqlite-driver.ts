import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { dirname } from 'node:path';
import type {
  DialectCapabilities,
  HeldLock,
  Migration,
  Queryable,
  ShardDriver,
  SqlFragments,
  WriteConnection,
} from '../port.js';

type Db = Database.Database;
type Stmt = Database.Statement;

/** Statement cache per connection: SQL text is the key. */
class SqliteQueryable implements Queryable {
  private readonly cache = new Map<string, Stmt>();
  constructor(protected readonly db: Db) {}

  protected stmt(sql: string): Stmt {
    let s = this.cache.get(sql);
    if (s === undefined) {
      s = this.db.prepare(sql);
      this.cache.set(sql, s);
    }
    return s;
  }

  all<R>(sql: string, params: readonly unknown[] = []): Promise<R[]> {
    try {
      const s = this.stmt(sql);
      if (!s.reader) {
        s.run(...(params.map(toSqlite) as unknown[]));
        return Promise.resolve([]);
      }
      return Promise.resolve(s.all(...(params.map(toSqlite) as unknown[])) as R[]);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  run(sql: string, params: readonly unknown[] = []): Promise<number> {
    try {
      return Promise.resolve(this.stmt(sql).run(...(params.map(toSqlite) as unknown[])).changes);
    } catch (err) {
      return Promise.reject(err);
    }
  }
}

/** better-sqlite3 binds booleans and undefined badly; normalise them. */
function toSqlite(v: unknown): unknown {
  if (v === undefined) return null;
  if (typeof v === 'boolean') return v ? 1 : 0;
  return v;
}

class SqliteWriteConnection extends SqliteQueryable implements WriteConnection {
  private held = false;
  private waiters: Array<() => void> = [];

  async acquire(): Promise<this> {
    while (this.held) await new Promise<void>((r) => this.waiters.push(r));
    this.held = true;
    return this;
  }

  exec(sql: string): Promise<void> {
    try {
      // Transaction control runs for every caller of a batch: keep it prepared.
      if (sql.includes(';')) this.db.exec(sql);
      else this.stmt(sql).run();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  release(): void {
    this.held = false;
    this.waiters.shift()?.();
  }
}

export interface SqliteDriverOptions {
  path: string;
  /** strict: the WAL is fsync'd after every group commit, before callers are acknowledged. relaxed: no fsync per commit. */
  durability: 'strict' | 'relaxed';
  /** How often the background checkpointer runs (ms); 0 leaves checkpoints to the writer. Default 200. */
  checkpointMs?: number;
}

/**
 * The checkpointer: a worker thread with its own connection that runs a
 * PASSIVE checkpoint (never blocks the writer or readers) every `everyMs`.
 * Plain JavaScript evaluated in the worker, so it needs no build step.
 */
const CHECKPOINTER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.path);
db.pragma('busy_timeout = 1000');
const timer = setInterval(() => {
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch (err) { parentPort.postMessage(String((err && err.message) || err)); }
}, workerData.everyMs);
parentPort.on('message', (m) => {
  if (m !== 'stop') return;
  clearInterval(timer);
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch {}
  db.close();
  parentPort.close();
});
`;

function startCheckpointer(path: string, everyMs: number): Worker {
  const module = createRequire(import.meta.url).resolve('better-sqlite3');
  const w = new Worker(CHECKPOINTER_SOURCE, { eval: true, workerData: { module, path, everyMs } });
  // A failed checkpoint is retried on the next tick; the writer's own threshold bounds the WAL meanwhile.
  w.on('message', () => {});
  w.on('error', () => {});
  w.unref();
  return w;
}

/**
 * SQLite in WAL mode: one writing connection (SQLite has one writer anyway) and
 * one reading connection that always sees the last committed state.
 */
export class SqliteDriver implements ShardDriver {
  readonly dialect = 'sqlite' as const;
  readonly capabilities: DialectCapabilities = {
    sequencesOnInsert: true,
    cheapSavepoints: true,
    multiNode: false,
    bulkArrayParams: false,
    tablePartitioning: false,
    singleWriter: true,
  };
  readonly sql: SqlFragments = {
    claimRows: '',
    beginLocked: null,
    lockingQuery: null,
    begin: 'BEGIN IMMEDIATE',
    notify: null,
    roles: null,
  };
  readonly writers = 1;
  readonly reader: Queryable;
  private readonly writeDb: Db;
  private readonly readDb: Db;
  private readonly writer: SqliteWriteConnection;
  private readonly locks = new Set<string>();
  private readonly lockWaiters = new Map<string, Array<() => void>>();
  private closed = false;
  private readonly walPath: string | null;
  private wal: FileHandle | null = null;
  private syncing: Promise<void> | null = null;
  private syncQueued: Promise<void> | null = null;
  private checkpointer: Worker | null = null;
  sync?: () => Promise<void>;

  constructor(opts: SqliteDriverOptions) {
    if (opts.path !== ':memory:') mkdirSync(dirname(opts.path), { recursive: true });
    this.writeDb = new Database(opts.path);
    this.writeDb.pragma('journal_mode = WAL');
    // Commits never fsync on the event loop. In strict mode the group
    // committer calls sync(), which fsyncs the WAL in the thread pool before
    // callers are acknowledged: as durable as synchronous=FULL, but the loop
    // keeps taking requests while the disk works, so the next batch grows.
    // (With synchronous=NORMAL SQLite still syncs the WAL before each
    // checkpoint and the database after it.)
    this.writeDb.pragma('synchronous = NORMAL');
    this.walPath = opts.path === ':memory:' ? null : `${opts.path}-wal`;
    if (opts.durability === 'strict' && this.walPath !== null) this.sync = () => this.syncWal();
    this.writeDb.pragma('busy_timeout = 5000');
    this.writeDb.pragma('foreign_keys = ON');
    // Checkpoints (copying the WAL into the database file, and its fsync)
    // run on a connection of their own in a worker thread, so a commit never
    // stalls the event loop behind one; the writer checkpoints itself only as
    // a safety net, should the WAL grow past ~400 MB.
    const background = opts.path !== ':memory:' && (opts.checkpointMs ?? 200) > 0;
    this.writeDb.pragma(`wal_autocheckpoint = ${background ? 100_000 : 10_000}`);
    if (background) this.checkpointer = startCheckpointer(opts.path, opts.checkpointMs ?? 200);
    this.readDb = new Database(opts.path, { readonly: false });
    this.readDb.pragma('busy_timeout = 5000');
    this.readDb.pragma('query_only = ON');
    this.reader = new SqliteQueryable(this.readDb);
    this.writer = new SqliteWriteConnection(this.writeDb);
  }

  /**
   * One fsync at a time; callers that arrive while one runs share the next,
   * which starts after it (their commits may postdate the running one).
   */
  private syncWal(): Promise<void> {
    if (this.syncing === null) {
      this.syncing = this.fsyncWal().finally(() => {
        this.syncing = null;
      });
      return this.syncing;
    }
    const next = (): Promise<void> => {
      this.syncQueued = null;
      return this.syncWal();
    };
    // Whether the running sync succeeded or failed, the waiters need one of their own.
    this.syncQueued ??= this.syncing.then(next, next);
    return this.syncQueued;
  }

  private async fsyncWal(): Promise<void> {
    if (this.wal === null) {
      try {
        this.wal = await open(this.walPath!, 'r');
      } catch (err) {
        // No WAL yet: nothing has been committed since it was last checkpointed and removed.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
    }
    await this.wal.datasync();
  }

  acquireWriter(): Promise<WriteConnection> {
    return this.writer.acquire();
  }

  async migrate(migrations: readonly Migration[]): Promise<string[]> {
    const conn = await this.writer.acquire();
    try {
      await conn.exec(
        'CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)',
      );
      await conn.exec('BEGIN IMMEDIATE');
      try {
        const done = new Set((await conn.all<{ id: string }>('SELECT id FROM schema_migrations')).map((r) => r.id));
        const applied: string[] = [];
        for (const m of migrations) {
          if (done.has(m.id)) continue;
          await conn.run('INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)', [m.id, Date.now()]);
          await conn.exec(m.sql.sqlite);
          applied.push(m.id);
        }
        await conn.exec('COMMIT');
        return applied;
      } catch (err) {
        await conn.exec('ROLLBACK');
        throw err;
      }
    } finally {
      conn.release();
    }
  }

  async appliedMigrations(): Promise<string[]> {
    const t = await this.reader.all<{ n: number }>(
      "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
    );
    if (!t[0]?.n) return [];
    return (await this.reader.all<{ id: string }>('SELECT id FROM schema_migrations ORDER BY id')).map((r) => r.id);
  }

  listen(): Promise<() => Promise<void>> {
    // One process owns an SQLite shard: in-process signals are enough.
    return Promise.resolve(async () => {});
  }

  notify(): Promise<void> {
    return Promise.resolve();
  }

  async lock(key: string, abort: AbortSignal): Promise<HeldLock> {
    while (this.locks.has(key)) {
      abort.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const waiters = this.lockWaiters.get(key) ?? [];
        this.lockWaiters.set(key, waiters);
        const onAbort = (): void => {
          const i = waiters.indexOf(wake);
          if (i >= 0) waiters.splice(i, 1);
          reject(abort.reason as Error);
        };
        const wake = (): void => {
          abort.removeEventListener('abort', onAbort);
          resolve();
        };
        waiters.push(wake);
        abort.addEventListener('abort', onAbort, { once: true });
      });
    }
    abort.throwIfAborted();
    this.locks.add(key);
    let release!: () => void;
    const lost = new Promise<void>((r) => (release = r));
    return {
      conn: this.writer,
      lost,
      release: async () => {
        if (!this.locks.delete(key)) return;
        release();
        this.lockWaiters.get(key)?.shift()?.();
      },
    };
  }

  async ping(): Promise<void> {
    await this.reader.all('SELECT 1');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const wal = this.wal;
    this.wal = null;
    // Closing: the WAL reader only reads; a close that fails leaves nothing to undo.
    void wal?.close().catch(() => {});
    const cp = this.checkpointer;
    this.checkpointer = null;
    if (cp !== null) {
      const exited = new Promise<void>((r) => cp.once('exit', () => r()));
      cp.postMessage('stop');
      const timer = setTimeout(() => void cp.terminate(), 2000);
      await exited;
      clearTimeout(timer);
    }
    this.readDb.close();
    this.writeDb.close();
  }
}
