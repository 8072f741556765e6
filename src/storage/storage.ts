import type { Config } from '../core/config.js';
import { MillraceError } from '../core/errors.js';
import { sha1, shardKeyText, ShardRouter } from '../core/routing.js';
import { GroupCommitter, type BegunScope, type OneStatement, type SubmitOptions, type TxFn } from './group-commit.js';
import type { Migration, Queryable, ShardDriver, Tx } from './port.js';
import {
  buildTable,
  decodeRanges,
  encodeRanges,
  ownsForWrite,
  readState,
  routeCheckSql,
  ROUTING_CHANNEL,
  STATE_SQL,
  type OwnedRange,
  type ShardState,
} from './routing-state.js';
import { RoleLeases, type RoleLeaseOptions } from './role-leases.js';
import { PostgresDriver } from './postgres/postgres-driver.js';
import { SqliteDriver } from './sqlite/sqlite-driver.js';

/** What a shard was chosen for: the key's hash and the shard's routing epoch then (see Storage.shardFor). */
interface Route {
  hash: bigint;
  /** Further keys of one write (Storage.joined). */
  more?: bigint[];
  epoch: number;
  fenced: boolean;
  storage: Storage;
}

/** A shard's routing row as read in a write transaction; its ranges decoded only when needed. */
interface StoredState {
  epoch: number;
  text: string;
  ranges?: OwnedRange[];
}

interface RouteEntry {
  name: string;
  from: bigint;
  to: bigint;
  shard: Shard;
  fenced: boolean;
}

/** One unit of storage: a database, its hash range, and its group committer. */
export class Shard {
  /** The configured database (SQLite file or PostgreSQL URL). */
  location = '';
  /** Set on the per-key view that Storage.shardFor hands out where ranges can move. */
  declare readonly route?: Route;

  readonly committer: GroupCommitter;
  /** Exclusive roles (sequencer, exclusive cursors) this node holds or waits for on the shard. */
  readonly roles: RoleLeases;

  constructor(
    readonly name: string,
    readonly driver: ShardDriver,
    readonly from: bigint,
    readonly to: bigint,
    maxBatch: number,
    roles: RoleLeaseOptions = { holder: 'local', leaseMs: 5_000 },
  ) {
    // The route check's read of the routing row goes with BEGIN where the dialect allows (one round trip less).
    this.committer = new GroupCommitter(driver, { maxBatch, beginRead: STATE_SQL });
    this.roles = new RoleLeases(driver, roles);
  }

  /**
   * Runs `fn` in a write transaction, group-committed with other callers;
   * `lockKeys` names what it writes that other writers contend for (see
   * GroupCommitter.submit). `fn` may be re-run after a deadlock.
   */
  write<T>(fn: TxFn<T>, opts?: SubmitOptions): Promise<T> {
    const route = this.route;
    if (route === undefined || !route.storage.routeCheck) return this.committer.submit(fn, opts);
    return this.committer.submit(
      async (tx) => {
        await route.storage.checkRoute(tx, this, route);
        return fn(tx);
      },
      { ...opts, beginRead: route.storage.routeCheckAtBegin },
    );
  }

  /** The shard itself, where `this` may be a per-key view of it (compare shards by this or by name). */
  get base(): Shard {
    return this.route === undefined ? this : (Object.getPrototypeOf(this) as Shard);
  }

  /** A write that is one statement, as a transaction by itself in one round trip where the dialect allows (see GroupCommitter.submitStatement). */
  writeStatement<R, T>(stmt: OneStatement<R, T>, opts?: SubmitOptions): Promise<T> {
    const route = this.route;
    if (route === undefined) return this.committer.submitStatement(stmt, opts);
    if (route.fenced) return Promise.reject(route.storage.movedError(this, route));
    if (stmt.routable !== true || this.driver.sql.lockingQuery === null) {
      // Checked as every routed transaction is: first, under the transaction's read of the state.
      return this.write(async (tx) => {
        const rows = await tx.all<R>(stmt.sql(null), stmt.params);
        for (const c of stmt.channels ?? []) tx.notify(c);
        return rows;
      }, opts).then((rows) => stmt.result(rows));
    }
    // The route check is part of the statement: routed by an old table, it writes nothing and says so (no rows).
    const check = routeCheckSql(route.epoch, [route.hash, ...(route.more ?? [])]);
    return this.committer.submitStatement<R, T>(
      {
        sql: (locks) => stmt.sql(locks, check),
        params: stmt.params,
        channels: stmt.channels,
        result: (rows) => {
          if (rows.length === 0) throw route.storage.movedError(this, route);
          return stmt.result(rows);
        },
      },
      opts,
    );
  }

  /**
   * Reads. On a per-key view (ranges can move), a read also learns the
   * shard's routing epoch and answers `shard_moved` rather than rows of a key
   * the shard gave away since this node routed it (see Storage.readRouted).
   */
  get reader(): Queryable {
    const route = this.route;
    if (route === undefined) return this.driver.reader;
    return {
      all: <R>(sql: string, params?: readonly unknown[]) => route.storage.readRouted<R>(this, route, sql, params ?? []),
      run: (sql, params) => this.driver.reader.run(sql, params),
    };
  }
}

/** The column a routed read adds to carry the shard's routing epoch, read in the same statement. */
const EPOCH_COLUMN = 'mr_route_epoch';
const EPOCH_SQL = 'SELECT epoch FROM shard_state WHERE id = 1';
/** A plain read that can be wrapped as a subquery (not one that locks rows). */
const WRAPPABLE = /^\s*(SELECT|WITH)\b/i;
const LOCKING = /\bFOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b/i;
/** Reads of a key whose shard's ranges changed meanwhile, re-run on that shard before `shard_moved` is answered. */
const READ_ATTEMPTS = 3;

export class Storage {
  readonly shards: readonly Shard[];
  private readonly byName: Map<string, Shard>;
  private router: ShardRouter<RouteEntry>;
  /** Each shard's owned ranges and epoch as last read (empty until loadRouting). */
  readonly states = new Map<string, ShardState>();
  /**
   * Ranges can move (more than one shard is configured): writes check, in
   * their transaction, that the shard still owns their key. One shard alone
   * owns everything and never checks.
   */
  readonly guarded: boolean;
  /**
   * Internal, for benchmarks only (bench/route-check.ts measures what the
   * check costs): false skips the in-transaction check of guarded writes.
   * Never off in a node: a write could then land on a shard that gave its
   * key away.
   */
  routeCheck = true;
  /** Internal, for benchmarks only: false reads the routing row by a query of its own instead of with BEGIN (the earlier way). */
  routeCheckAtBegin = true;
  private refreshing: Promise<void> | undefined;
  private again: Promise<void> | undefined;
  private readonly unlisten: Array<() => Promise<void>> = [];
  private pollTimer: NodeJS.Timeout | undefined;
  /** Called with a problem text when the stored ranges do not tile the hash space (the previous table is kept). */
  onRoutingProblem: (problem: string) => void = () => {};

  constructor(shards: Shard[]) {
    this.shards = shards;
    this.byName = new Map(shards.map((s) => [s.name, s]));
    this.router = new ShardRouter(
      shards
        .filter((s) => s.to > s.from)
        .map((s) => ({ name: s.name, from: s.from, to: s.to, shard: s, fenced: false })),
    );
    this.guarded = shards.length > 1;
  }

  /**
   * Reads every shard's stored ranges (storing the configured ones where a
   * shard has none yet: its first start) and routes by them; after a split
   * they differ from the configuration, and the stored ones win. Then keeps
   * them current: on a notice from a shard (PostgreSQL), every `pollMs`, and
   * whenever a write finds its shard no longer owns its key.
   */
  async loadRouting(pollMs: number): Promise<void> {
    for (const s of this.shards) {
      if ((await readState(s.reader)) !== undefined) continue;
      const ranges = s.to > s.from ? [{ from: s.from, to: s.to, fenced: false }] : [];
      await s.write((tx) =>
        tx.run(
          'INSERT INTO shard_state (id, epoch, ranges, updated_at) VALUES (1, 1, ?, ?) ON CONFLICT (id) DO NOTHING',
          [encodeRanges(ranges), Date.now()],
        ),
      );
    }
    await this.refreshRouting();
    if (this.guarded) {
      for (const s of this.shards)
        this.unlisten.push(await s.driver.listen(ROUTING_CHANNEL, () => void this.refreshRouting()));
      this.pollTimer = setInterval(() => void this.refreshRouting(), pollMs);
      this.pollTimer.unref();
    }
  }

  /**
   * Re-reads every shard's ranges. A call made while a read is under way
   * gets one that starts after it (the running one may have read too early);
   * calls made meanwhile share that one.
   */
  refreshRouting(): Promise<void> {
    if (this.refreshing !== undefined) {
      this.again ??= this.refreshing.then(() => {
        this.again = undefined;
        return this.refreshRouting();
      });
      return this.again;
    }
    this.refreshing = (async () => {
      try {
        const next = new Map<string, ShardState>();
        for (const s of this.shards) {
          const st = await readState(s.reader);
          if (st !== undefined) next.set(s.name, st);
        }
        if (next.size !== this.shards.length) return;
        const table = buildTable(next);
        if (typeof table === 'string') {
          this.onRoutingProblem(table);
          return;
        }
        for (const [k, v] of next) this.states.set(k, v);
        this.router = new ShardRouter(
          table.map((e) => ({ name: e.shard, from: e.from, to: e.to, shard: this.shard(e.shard), fenced: e.fenced })),
        );
      } catch (err) {
        this.onRoutingProblem(`routing not re-read: ${(err as Error).message}`);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /**
   * In a write transaction on `shard`: refuses (retryable `shard_moved`)
   * a write whose key the shard no longer owns, or owns fenced. The state is
   * read under the transaction's lock on it (PostgreSQL: a cut-over takes
   * the table exclusively, so it waits for writers that read it and they
   * for it); once per transaction.
   */
  async checkRoute(tx: Tx, shard: Shard, route: Route): Promise<void> {
    if (route.fenced) throw this.movedError(shard, route);
    const scope = tx.scope as ({ shardState?: StoredState } & BegunScope) | undefined;
    let stored = scope?.shardState;
    if (stored === undefined) {
      // Read with BEGIN where the dialect sends statements together (see Shard.write), else here.
      const row =
        scope?.beginRow !== undefined ? scope.beginRow : (await tx.all<Record<string, unknown>>(STATE_SQL))[0];
      if (row === undefined || row === null) return;
      stored = { epoch: Number(row.epoch), text: String(row.ranges) };
      if (scope !== undefined) scope.shardState = stored;
    }
    // The common case: nothing moved since the node routed the write; the ranges need no decoding.
    if (stored.epoch === route.epoch) return;
    const state: ShardState = { epoch: stored.epoch, ranges: (stored.ranges ??= decodeRanges(stored.text)) };
    if (ownsForWrite(state, route.hash) && (route.more ?? []).every((h) => ownsForWrite(state, h))) return;
    throw this.movedError(shard, route);
  }

  /**
   * A read through a per-key view. The shard's routing epoch comes with the
   * rows, in the same statement (so in the same snapshot, and no extra round
   * trip): the read is wrapped as `SELECT q.*, (epoch) FROM (read) q` and the
   * column taken off the rows again. Only a read that finds nothing (or that
   * cannot be wrapped) reads the epoch by a second statement, after it; as
   * epochs only grow, an epoch equal to the route's then was equal during
   * the read. An epoch equal to the one the node routed by: the shard's
   * ranges are what the node thought, the rows answer. Otherwise the node
   * re-reads routing; if the shard still owns the key (another range of it
   * moved, or this one is fenced: a fenced source still answers reads, its
   * writes being refused) the read runs again, else it answers `shard_moved`
   * (retryable; the node now routes by the new table), never rows the
   * source kept after it gave the key away.
   */
  async readRouted<R>(shard: Shard, route: Route, sql: string, params: readonly unknown[]): Promise<R[]> {
    const reader = shard.driver.reader;
    let epoch = route.epoch;
    for (let attempt = 0; ; attempt++) {
      let rows: Array<Record<string, unknown>>;
      let seen: number | undefined;
      if (WRAPPABLE.test(sql) && !LOCKING.test(sql)) {
        rows = await reader.all(`SELECT q.*, (${EPOCH_SQL}) AS ${EPOCH_COLUMN} FROM (\n${sql}\n) q`, params);
        if (rows.length > 0) {
          seen = Number(rows[0]![EPOCH_COLUMN]);
          for (const r of rows) delete r[EPOCH_COLUMN];
        }
      } else {
        rows = await reader.all(sql, params);
      }
      if (seen === undefined) {
        const e = await reader.all<{ epoch: number | string }>(EPOCH_SQL);
        // No routing row: a shard whose routing was never stored owns what it was configured with.
        if (e[0] === undefined) return rows as R[];
        seen = Number(e[0].epoch);
      }
      if (seen === epoch) return rows as R[];
      await this.refreshRouting();
      const keys = [route.hash, ...(route.more ?? [])];
      if (attempt + 1 >= READ_ATTEMPTS || keys.some((h) => this.router.shardForHash(h).name !== shard.name))
        throw this.movedError(shard, { ...route, fenced: false });
      epoch = this.states.get(shard.name)?.epoch ?? epoch;
    }
  }

  /** The retryable refusal of a write routed by a table older than the shard's (and a re-read of the table). */
  movedError(shard: Shard, route: Route): MillraceError {
    void this.refreshRouting();
    return new MillraceError(
      'shard_moved',
      `shard ${shard.name} ${route.fenced ? 'is cutting over' : 'no longer owns'} this key's hash range; retry`,
      {
        retryAfterS: 1,
        details: { shard: shard.name },
      },
    );
  }

  static open(config: Config): Storage {
    const st = config.storage;
    const shards = st.shards.map((s) => {
      const driver: ShardDriver =
        st.dialect === 'sqlite'
          ? new SqliteDriver({ path: s.location, durability: st.durability })
          : new PostgresDriver({
              url: s.location,
              durability: st.durability,
              poolSize: st.pool_size,
              writers: st.group_commit.writers,
              applicationName: `millrace:${config.node_id}:${s.name}`,
              idleInTransactionMs: config.cluster.role_lease_ms,
            });
      const shard = new Shard(s.name, driver, s.from, s.to, st.group_commit.max_batch, {
        holder: config.node_id,
        leaseMs: config.cluster.role_lease_ms,
      });
      shard.location = s.location;
      return shard;
    });
    return new Storage(shards);
  }

  get dialect(): ShardDriver['dialect'] {
    return this.shards[0]!.driver.dialect;
  }

  shard(name: string): Shard {
    const s = this.byName.get(name);
    if (s === undefined)
      throw new MillraceError('shard_not_found', `no shard named "${name}"`, { details: { shard: name } });
    return s;
  }

  /** The shard that owns an entity, by SHA-1 of its shard key (seed 002 routing). */
  shardFor(key: readonly string[] | string): Shard {
    if (!this.guarded) return this.router.shardFor(key).shard;
    const hash = sha1(shardKeyText(key));
    const entry = this.router.shardForHash(hash);
    const view = Object.create(entry.shard) as Shard;
    const route: Route = { hash, epoch: this.states.get(entry.name)?.epoch ?? 0, fenced: entry.fenced, storage: this };
    Object.defineProperty(view, 'route', { value: route });
    return view;
  }

  /**
   * One view of `shard` for a write of several keys routed to it (each of
   * `views` from shardFor): the write checks every key.
   */
  joined(shard: Shard, views: readonly Shard[]): Shard {
    const base = shard.base;
    const routes = views.map((v) => v.route).filter((r): r is Route => r !== undefined);
    if (routes.length === 0) return base;
    const view = Object.create(base) as Shard;
    const route: Route = {
      hash: routes[0]!.hash,
      more: routes.slice(1).map((r) => r.hash),
      epoch: Math.min(...routes.map((r) => r.epoch)),
      fenced: routes.some((r) => r.fenced),
      storage: this,
    };
    Object.defineProperty(view, 'route', { value: route });
    return view;
  }

  /** The shard whose range holds `hash` now, and whether the range is fenced (a split cutting over). */
  ownerOf(hash: bigint): { shard: Shard; fenced: boolean } {
    const e = this.router.shardForHash(hash);
    return { shard: e.shard, fenced: e.fenced };
  }

  async migrate(migrations: readonly Migration[]): Promise<Record<string, string[]>> {
    const out: Record<string, string[]> = {};
    for (const s of this.shards) out[s.name] = await s.driver.migrate(migrations);
    return out;
  }

  /** Migrations known to this build that a shard has not applied. */
  async pendingMigrations(migrations: readonly Migration[]): Promise<Record<string, string[]>> {
    const out: Record<string, string[]> = {};
    for (const s of this.shards) {
      const applied = new Set(await s.driver.appliedMigrations());
      out[s.name] = migrations.filter((m) => !applied.has(m.id)).map((m) => m.id);
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.pollTimer !== undefined) clearInterval(this.pollTimer);
    for (const u of this.unlisten.splice(0)) {
      // Closing anyway: a listener that cannot be removed ends with its driver below.
      await u().catch(() => undefined);
    }
    for (const s of this.shards) s.roles.close();
    for (const s of this.shards) await s.committer.close();
    for (const s of this.shards) await s.driver.close();
  }
}
