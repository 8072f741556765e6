import pg from 'pg';
import { createHash } from 'node:crypto';
import type {
  DialectCapabilities,
  HeldLock,
  Migration,
  Queryable,
  RoleLeaseSql,
  Row,
  ShardDriver,
  SqlFragments,
  WriteConnection,
} from '../port.js';

const INT8_OID = 20;
/** First key of the transaction-scoped advisory locks of group-committed writers ('mrwl'). */
const WRITE_LOCK_SPACE = 0x6d72776c;
const NUMERIC_OID = 1700;

/** Positions and timestamps are int8; they fit in a double exactly. Numerics stay strings (exact). */
const types = {
  getTypeParser: ((oid: number, format?: string) => {
    if (oid === INT8_OID) return (v: string) => Number(v);
    if (oid === NUMERIC_OID) return (v: string) => v;
    return pg.types.getTypeParser(oid, format as 'text') as (v: string) => unknown;
  }) as typeof pg.types.getTypeParser,
};

const placeholderCache = new Map<string, string>();

/** Rewrites `?` placeholders to `$1, $2, …` (our SQL never has `?` inside literals). */
export function numberPlaceholders(sql: string): string {
  let out = placeholderCache.get(sql);
  if (out === undefined) {
    let n = 0;
    out = sql.replace(/\?/g, () => `$${++n}`);
    if (placeholderCache.size < 10_000) placeholderCache.set(sql, out);
  }
  return out;
}

const statementNames = new Map<string, string>();
/** Statements with more parameters than this (built for a list's length) stay unnamed. */
const NAMED_MAX_PARAMS = 40;
const NAMED_MAX = 2000;

/**
 * The query for a statement: a named (prepared) one for the fixed statements
 * of the hot paths, so each connection parses and plans it once instead of on
 * every execution; a statement built for a list's length, or past the first
 * NAMED_MAX distinct texts, stays unnamed.
 */
function queryConfig(sql: string, params: readonly unknown[]): { text: string; values: unknown[]; name?: string } {
  const text = numberPlaceholders(sql);
  if (params.length > NAMED_MAX_PARAMS) return { text, values: params as unknown[] };
  let name = statementNames.get(text);
  if (name === undefined) {
    if (statementNames.size >= NAMED_MAX) return { text, values: params as unknown[] };
    name = `mr${statementNames.size + 1}`;
    statementNames.set(text, name);
  }
  return { name, text, values: params as unknown[] };
}

interface PgRunner {
  query(config: { text: string; values: unknown[]; name?: string }): Promise<pg.QueryResult>;
}

class PgQueryable implements Queryable {
  constructor(protected readonly runner: PgRunner) {}

  async all<R>(sql: string, params: readonly unknown[] = []): Promise<R[]> {
    const res = await this.runner.query(queryConfig(sql, params));
    return res.rows as R[];
  }

  async run(sql: string, params: readonly unknown[] = []): Promise<number> {
    const res = await this.runner.query(queryConfig(sql, params));
    return res.rowCount ?? 0;
  }
}

class PgWriteConnection extends PgQueryable implements WriteConnection {
  /** A statement that failed since the last exec (BEGIN, SAVEPOINT, COMMIT, …). */
  private failed: unknown;

  constructor(
    private readonly client: pg.PoolClient | pg.Client,
    private readonly onRelease: (destroy: boolean) => void,
  ) {
    super(client);
  }

  override async all<R>(sql: string, params?: readonly unknown[]): Promise<R[]> {
    try {
      return await super.all<R>(sql, params);
    } catch (err) {
      this.failed ??= err;
      throw err;
    }
  }

  override async run(sql: string, params?: readonly unknown[]): Promise<number> {
    try {
      return await super.run(sql, params);
    } catch (err) {
      this.failed ??= err;
      throw err;
    }
  }

  async failure(): Promise<unknown> {
    if (this.failed === undefined) return undefined;
    // pg reports a statement's error before the server says whether the
    // transaction survived it, so ask: an aborted transaction refuses this.
    try {
      await this.client.query('SELECT 1');
    } catch {
      return this.failed;
    }
    // Still usable (the caller rolled back to a savepoint of its own).
    this.failed = undefined;
    return undefined;
  }

  async exec(sql: string): Promise<void> {
    this.failed = undefined;
    await this.client.query(sql);
  }

  async execRows(sql: string): Promise<Row[]> {
    this.failed = undefined;
    // Several statements in one simple query: pg answers one result each.
    const res = (await this.client.query(sql)) as unknown as pg.QueryResult | pg.QueryResult[];
    const last = Array.isArray(res) ? res[res.length - 1] : res;
    return (last?.rows ?? []) as Row[];
  }

  release(destroy = false): void {
    this.onRelease(destroy);
  }
}

/** The database clock in milliseconds: every node compares lease ends against the same clock. */
const DB_NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::bigint';

const ROLE_SQL: RoleLeaseSql = {
  take: `INSERT INTO role_leases (role, holder, epoch, expires_at, pid, session_start)
         SELECT ?::text, ?::text, 1, ${DB_NOW_MS} + ?::bigint, a.pid, a.backend_start FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()
         ON CONFLICT (role) DO UPDATE SET holder = EXCLUDED.holder, epoch = role_leases.epoch + 1, expires_at = EXCLUDED.expires_at,
                                          pid = EXCLUDED.pid, session_start = EXCLUDED.session_start
         RETURNING epoch`,
  fence: `UPDATE role_leases SET expires_at = ${DB_NOW_MS} + ?::bigint WHERE role = ?::text AND epoch = ?::bigint`,
  tick: `WITH mine AS (SELECT h.role, h.epoch FROM unnest(?::text[], ?::bigint[]) AS h(role, epoch)),
         renewed AS (
           -- Rows a transaction has locked (a fence in flight, which renews them itself) are skipped, not waited for.
           UPDATE role_leases l SET expires_at = ${DB_NOW_MS} + ?::bigint
            WHERE l.role IN (SELECT r.role FROM role_leases r JOIN mine m ON m.role = r.role AND m.epoch = r.epoch
                              ORDER BY r.role FOR UPDATE OF r SKIP LOCKED)
           RETURNING l.role),
         ended AS (
           SELECT l.role, pg_terminate_backend(a.pid) AS ok
             FROM role_leases l JOIN pg_stat_activity a ON a.pid = l.pid AND a.backend_start = l.session_start
            WHERE l.role = ANY(?::text[]) AND l.expires_at < ${DB_NOW_MS} AND a.pid <> pg_backend_pid())
         SELECT 'held' AS kind, r.role FROM role_leases r JOIN mine m ON m.role = r.role AND m.epoch = r.epoch
         UNION ALL SELECT 'ended' AS kind, role FROM ended WHERE ok`,
};

export interface PostgresDriverOptions {
  url: string;
  durability: 'strict' | 'relaxed';
  poolSize: number;
  writers: number;
  /** Name used in pg_stat_activity. */
  applicationName?: string;
  /**
   * Server-side bound on a transaction left open and idle (a frozen node's
   * would otherwise keep its row locks for as long as it stays frozen):
   * PostgreSQL ends such a session after this long. Unset: no bound.
   */
  idleInTransactionMs?: number;
}

/** 64-bit advisory lock key from a text key (first 8 bytes of its SHA-1, signed). */
export function advisoryKey(key: string): string {
  return createHash('sha1').update(key).digest().readBigInt64BE(0).toString();
}

export class PostgresDriver implements ShardDriver {
  readonly dialect = 'postgres' as const;
  readonly capabilities: DialectCapabilities = {
    sequencesOnInsert: false,
    cheapSavepoints: false,
    multiNode: true,
    bulkArrayParams: true,
    tablePartitioning: true,
    singleWriter: false,
  };
  readonly sql: SqlFragments = {
    claimRows: ' FOR UPDATE SKIP LOCKED',
    begin: 'BEGIN',
    // The two-key form of advisory locks keeps these apart from the one-key
    // session locks (sequencer, exclusive roles). unnest yields the array in
    // order, so the locks are taken in that order.
    beginLocked: (keys) =>
      `BEGIN; SELECT count(pg_advisory_xact_lock(${WRITE_LOCK_SPACE}, k)) FROM unnest('{${keys.map((k) => String(k | 0)).join(',')}}'::int4[]) AS k`,
    lockingQuery: `SELECT count(pg_advisory_xact_lock(${WRITE_LOCK_SPACE}, k)) AS n FROM unnest(?::int4[]) AS k`,
    notify: 'SELECT pg_notify(?, ?)',
    roles: ROLE_SQL,
  };
  readonly writers: number;
  readonly reader: Queryable;
  private readonly pool: pg.Pool;
  private relaxedPool: pg.Pool | undefined;
  private relaxedQueryable: Queryable | undefined;
  private listener: pg.Client | undefined;
  private listenerReady: Promise<pg.Client> | undefined;
  private readonly channels = new Map<string, Set<(payload: string) => void>>();
  /** Keys claimed on the LISTEN session (claimed again if it reconnects). */
  private readonly claims = new Set<string>();
  private closed = false;

  /** Connections of the lease pool (`relaxed`). */
  private get relaxedSize(): number {
    return Math.max(1, Math.min(4, this.opts.poolSize));
  }

  /** The pool, the lease pool, the LISTEN session and one lock session (the sequencer's; each other exclusive job adds one). */
  get sessionBudget(): number {
    return this.opts.poolSize + this.relaxedSize + 1 + 1;
  }

  /** Settings of this driver's sessions (`-c name=value`), passed at connect. */
  private sessionOptions(synchronousCommitOff: boolean): string | undefined {
    const o: string[] = [];
    if (synchronousCommitOff) o.push('-c synchronous_commit=off');
    if (this.opts.idleInTransactionMs !== undefined)
      o.push(`-c idle_in_transaction_session_timeout=${Math.floor(this.opts.idleInTransactionMs)}`);
    return o.length ? o.join(' ') : undefined;
  }

  constructor(private readonly opts: PostgresDriverOptions) {
    this.writers = opts.writers;
    this.pool = new pg.Pool({
      connectionString: opts.url,
      max: opts.poolSize,
      types,
      application_name: opts.applicationName ?? 'millrace',
      connectionTimeoutMillis: 10_000,
      options: this.sessionOptions(opts.durability === 'relaxed'),
    });
    // An idle client that loses its connection must not crash the process; nor must one that
    // reports its end after a query saw the failure (the pool stops listening once it released it).
    this.pool.on('error', () => {});
    this.pool.on('connect', (c) => c.on('error', () => {}));
    this.reader = new PgQueryable(this.pool);
  }

  get relaxed(): Queryable {
    if (this.relaxedQueryable === undefined) {
      // A few connections of their own (made on first use, kept while idle), whose commits do not wait for the WAL flush.
      this.relaxedPool = new pg.Pool({
        connectionString: this.opts.url,
        max: this.relaxedSize,
        idleTimeoutMillis: 0,
        types,
        application_name: `${this.opts.applicationName ?? 'millrace'}-relaxed`,
        connectionTimeoutMillis: 10_000,
        options: this.sessionOptions(true),
      });
      this.relaxedPool.on('error', () => {});
      this.relaxedPool.on('connect', (c) => c.on('error', () => {}));
      this.relaxedQueryable = new PgQueryable(this.relaxedPool);
    }
    return this.relaxedQueryable;
  }

  async acquireWriter(): Promise<WriteConnection> {
    const client = await this.pool.connect();
    // A checked-out client whose session ends between statements (terminated, network cut) emits
    // 'error' outside any query: without a listener that would crash the process. The next
    // statement fails anyway; the connection is destroyed when released.
    let lost = false;
    const onError = (): void => {
      lost = true;
    };
    client.on('error', onError);
    return new PgWriteConnection(client, (destroy) => {
      // A destroyed client may still report its end: it keeps the listener.
      if (destroy || lost) client.release(true);
      else {
        client.off('error', onError);
        client.release();
      }
    });
  }

  async migrate(migrations: readonly Migration[]): Promise<string[]> {
    const client = await this.pool.connect();
    let broken = false;
    try {
      await client.query('BEGIN');
      try {
        // Two nodes starting together: the second waits here, then finds nothing to do.
        await client.query('SELECT pg_advisory_xact_lock($1)', [advisoryKey('millrace:migrate')]);
        await client.query(
          'CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)',
        );
        const done = new Set(
          (await client.query<{ id: string }>('SELECT id FROM schema_migrations')).rows.map((r) => r.id),
        );
        const applied: string[] = [];
        for (const m of migrations) {
          if (done.has(m.id)) continue;
          await client.query('INSERT INTO schema_migrations (id, applied_at) VALUES ($1, $2)', [m.id, Date.now()]);
          await client.query(m.sql.postgres);
          applied.push(m.id);
        }
        await client.query('COMMIT');
        return applied;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => (broken = true));
        throw err;
      }
    } finally {
      client.release(broken ? true : undefined);
    }
  }

  async appliedMigrations(): Promise<string[]> {
    const t = await this.reader.all<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t");
    if (!t[0]?.t) return [];
    return (await this.reader.all<{ id: string }>('SELECT id FROM schema_migrations ORDER BY id')).map((r) => r.id);
  }

  private async listenerClient(): Promise<pg.Client> {
    if (this.listenerReady === undefined) {
      this.listenerReady = (async () => {
        const c = new pg.Client({
          connectionString: this.opts.url,
          types,
          application_name: `${this.opts.applicationName ?? 'millrace'}-listen`,
        });
        c.on('notification', (msg) => {
          for (const fn of this.channels.get(msg.channel) ?? []) fn(msg.payload ?? '');
        });
        c.on('error', () => {
          // Reconnect lazily and re-listen; a poll covers the gap meanwhile.
          this.listener = undefined;
          this.listenerReady = undefined;
          if (!this.closed) setTimeout(() => void this.relisten(), 500).unref();
        });
        await c.connect();
        this.listener = c;
        return c;
      })();
    }
    return this.listenerReady;
  }

  private async relisten(): Promise<void> {
    try {
      const c = await this.listenerClient();
      for (const ch of this.channels.keys()) await c.query(`LISTEN ${quoteIdent(ch)}`);
      // A claim lapsed with the old session; another process may have taken it since, and then it stays lost.
      for (const k of this.claims) await c.query('SELECT pg_try_advisory_lock($1)', [advisoryKey(k)]);
    } catch {
      this.listenerReady = undefined;
      if (!this.closed) setTimeout(() => void this.relisten(), 1000).unref();
    }
  }

  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    let set = this.channels.get(channel);
    if (set === undefined) {
      set = new Set();
      this.channels.set(channel, set);
      const c = await this.listenerClient();
      await c.query(`LISTEN ${quoteIdent(channel)}`);
    }
    set.add(onPayload);
    return async () => {
      set.delete(onPayload);
      // The last listener gone: stop the server sending what nobody reads (a
      // standby sequencer would otherwise take every append notice).
      if (set.size > 0 || this.channels.get(channel) !== set) return;
      this.channels.delete(channel);
      // A listener connection on which UNLISTEN fails is broken, and listens no more.
      await this.listener?.query(`UNLISTEN ${quoteIdent(channel)}`).catch(() => {});
    };
  }

  /** Channels the LISTEN session listens on, as the server has them (diagnostics). */
  async listeningChannels(): Promise<string[]> {
    if (this.listenerReady === undefined) return [];
    const c = await this.listenerReady;
    return (await c.query<{ ch: string }>('SELECT pg_listening_channels() AS ch')).rows.map((r) => r.ch).sort();
  }

  async claimSession(key: string): Promise<boolean> {
    const c = await this.listenerClient();
    const r = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [advisoryKey(key)]);
    if (r.rows[0]?.ok === true) this.claims.add(key);
    return r.rows[0]?.ok === true;
  }

  async claimHeld(key: string): Promise<boolean> {
    // A bigint advisory lock shows in pg_locks as its high and low 32 bits (classid, objid) with objsubid 1.
    const k = BigInt.asUintN(64, BigInt(advisoryKey(key)));
    const hi = Number(k >> 32n);
    const lo = Number(k & 0xffffffffn);
    const r = await this.pool.query<{ held: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::bigint::oid AND objid = $2::bigint::oid
                        AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS held`,
      [hi, lo],
    );
    return r.rows[0]?.held === true;
  }

  async notify(channel: string, payload: string): Promise<void> {
    await this.pool.query('SELECT pg_notify($1, $2)', [channel, payload]);
  }

  async lock(key: string, abort: AbortSignal): Promise<HeldLock> {
    abort.throwIfAborted();
    // One session of its own, kept for as long as it waits and then holds:
    // the wait is a blocking pg_advisory_lock, which the server grants when
    // the holder unlocks or its session ends (a killed node's does).
    const client = new pg.Client({
      connectionString: this.opts.url,
      types,
      application_name: `${this.opts.applicationName ?? 'millrace'}-lock`,
      keepAlive: true,
      options: this.sessionOptions(false),
    });
    let lostResolve!: () => void;
    const lost = new Promise<void>((r) => (lostResolve = r));
    client.on('error', () => lostResolve());
    client.on('end', () => lostResolve());
    // A backend waiting for a lock reads nothing from its socket, so closing
    // ours would not end the wait: cancel the statement from the pool.
    let waiting = false;
    const onAbort = (): void => {
      // If the cancel fails, the wait ends when the lock comes or the connection is ended below.
      if (waiting)
        void this.pool
          .query('SELECT pg_cancel_backend($1)', [(client as unknown as { processID: number }).processID])
          .catch(() => {});
    };
    abort.addEventListener('abort', onAbort, { once: true });
    const k = advisoryKey(key);
    try {
      await client.connect();
      abort.throwIfAborted();
      waiting = true;
      await client.query('SELECT pg_advisory_lock($1)', [k]);
    } catch (err) {
      // The caller gets the error below; a connection that fails to end is broken, and the server drops it with its locks.
      await client.end().catch(() => {});
      throw abort.aborted ? (abort.reason as Error) : err;
    } finally {
      abort.removeEventListener('abort', onAbort);
    }
    if (abort.aborted) {
      // The caller gets the abort reason below; a connection that fails to end is broken, and the server drops it with its locks.
      await client.end().catch(() => {});
      throw abort.reason as Error;
    }
    const conn = new PgWriteConnection(client, () => {});
    return {
      conn,
      lost,
      release: async () => {
        // Ending the session below releases its advisory locks anyway; a connection that fails to end is broken, and the server drops it with its locks.
        await client.query('SELECT pg_advisory_unlock($1)', [k]).catch(() => {});
        // A connection that fails to end is broken, and the server drops it with its locks.
        await client.end().catch(() => {});
      },
    };
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Closing: a listener or pool that fails to end is already broken; the pool below is what the close waits for.
    await this.listener?.end().catch(() => {});
    // Likewise for the relaxed pool.
    await this.relaxedPool?.end().catch(() => {});
    await this.pool.end();
  }
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
