import type { Config } from '../core/config.js';
import { MillraceError } from '../core/errors.js';
import { ShardRouter } from '../core/routing.js';
import { GroupCommitter, type OneStatement, type SubmitOptions, type TxFn } from './group-commit.js';
import type { Migration, Queryable, ShardDriver } from './port.js';
import { RoleLeases, type RoleLeaseOptions } from './role-leases.js';
import { PostgresDriver } from './postgres/postgres-driver.js';
import { SqliteDriver } from './sqlite/sqlite-driver.js';

/** One unit of storage: a database, its hash range, and its group committer. */
export class Shard {
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
    this.committer = new GroupCommitter(driver, { maxBatch });
    this.roles = new RoleLeases(driver, roles);
  }

  /**
   * Runs `fn` in a write transaction, group-committed with other callers;
   * `lockKeys` names what it writes that other writers contend for (see
   * GroupCommitter.submit). `fn` may be re-run after a deadlock.
   */
  write<T>(fn: TxFn<T>, opts?: SubmitOptions): Promise<T> {
    return this.committer.submit(fn, opts);
  }

  /** A write that is one statement, as a transaction by itself in one round trip where the dialect allows (see GroupCommitter.submitStatement). */
  writeStatement<R, T>(stmt: OneStatement<R, T>, opts?: SubmitOptions): Promise<T> {
    return this.committer.submitStatement(stmt, opts);
  }

  get reader(): Queryable {
    return this.driver.reader;
  }
}

export class Storage {
  readonly shards: readonly Shard[];
  private readonly byName: Map<string, Shard>;
  private readonly router: ShardRouter<Shard>;

  constructor(shards: Shard[]) {
    this.shards = shards;
    this.byName = new Map(shards.map((s) => [s.name, s]));
    this.router = new ShardRouter(shards);
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
      return new Shard(s.name, driver, s.from, s.to, st.group_commit.max_batch, { holder: config.node_id, leaseMs: config.cluster.role_lease_ms });
    });
    return new Storage(shards);
  }

  get dialect(): ShardDriver['dialect'] {
    return this.shards[0]!.driver.dialect;
  }

  shard(name: string): Shard {
    const s = this.byName.get(name);
    if (s === undefined) throw new MillraceError('shard_not_found', `no shard named "${name}"`, { details: { shard: name } });
    return s;
  }

  /** The shard that owns an entity, by SHA-1 of its shard key (seed 002 routing). */
  shardFor(key: readonly string[] | string): Shard {
    return this.router.shardFor(key);
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
    for (const s of this.shards) s.roles.close();
    for (const s of this.shards) await s.committer.close();
    for (const s of this.shards) await s.driver.close();
  }
}
