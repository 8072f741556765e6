import { readFileSync } from 'node:fs';
import { requestSigner, type RequestSigner } from './core/request-signing.js';
import type { Logger } from 'pino';
import { Registry, collectDefaultMetrics, Gauge, Counter } from 'prom-client';
import type { Config } from './core/config.js';
import type { Clock } from './core/clock.js';
import { sleep, systemClock } from './core/clock.js';
import { codeSpec, isErrorCode, MillraceError } from './core/errors.js';
import { silentLogger } from './core/logger.js';
import { CursorEngine } from './log/cursor.js';
import { Log } from './log/log.js';
import { Sequencer } from './log/sequencer.js';
import { Pruner } from './log/pruner.js';
import { Scheduler } from './scheduler/scheduler.js';
import { CORE_MIGRATIONS } from './storage/migrations.js';
import type { Migration } from './storage/port.js';
import { Storage } from './storage/storage.js';
import { Catalog, CATALOG_MIGRATIONS } from './catalog/catalog.js';
import { TOKEN_MIGRATIONS } from './auth/tokens.js';
import type { FaceSpec } from './face-spec.js';
import { BUILT_IN_FACE_SPECS } from './face-specs.js';
import { Activity, Series } from './core/activity.js';
import { Splitter } from './storage/split.js';
import { AUDIT_SPLIT_MOVER } from './auth/audit.js';

/** The signer of `auth.signing_key_file` (an ed25519 private key, PEM); `config_invalid` when unreadable or not ed25519. */
function loadSigner(file: string | undefined): RequestSigner | null {
  if (file === undefined) return null;
  try {
    return requestSigner(readFileSync(file));
  } catch (err) {
    throw new MillraceError('config_invalid', `auth.signing_key_file: ${file}: ${(err as Error).message}`);
  }
}

export interface RuntimeOptions {
  logger?: Logger;
  clock?: Clock;
  /** Start background loops (sequencers, scheduler). Default true. */
  background?: boolean;
  /** Apply migrations on open. Default true. */
  migrate?: boolean;
  /**
   * The faces this runtime serves, as they declare themselves: their
   * migrations are applied (after the core's: log, timers, leases, API
   * tokens, runtime definitions), and their error codes must be mapped.
   * Default: every face of this build (`BUILT_IN_FACE_SPECS`).
   */
  faces?: readonly FaceSpec[];
}

/**
 * The migrations of a node serving `faces`: the core's, then each face's in
 * order. Refuses (config_invalid) a face given twice, a migration id two
 * faces share, and a face whose error codes `core/errors.ts` does not map
 * with the statuses it declares.
 */
export function nodeMigrations(faces: readonly FaceSpec[]): Migration[] {
  const names = new Set<string>();
  for (const f of faces) {
    if (names.has(f.name))
      throw new MillraceError('config_invalid', `face ${f.name} is given twice`, { details: { face: f.name } });
    names.add(f.name);
    const unmapped = Object.entries(f.errors)
      .filter(([code, s]) => !isErrorCode(code) || codeSpec(code).http !== s.http || codeSpec(code).grpc !== s.grpc)
      .map(([code]) => code);
    if (unmapped.length > 0) {
      throw new MillraceError(
        'config_invalid',
        `face ${f.name} declares error codes that core/errors.ts does not map with their statuses: ${unmapped.join(', ')}`,
        {
          details: { face: f.name, codes: unmapped },
        },
      );
    }
  }
  const out: Migration[] = [...CORE_MIGRATIONS, ...TOKEN_MIGRATIONS, ...CATALOG_MIGRATIONS];
  const ids = new Set(out.map((m) => m.id));
  for (const f of faces) {
    for (const m of f.migrations) {
      if (ids.has(m.id))
        throw new MillraceError('config_invalid', `migration ${m.id} of face ${f.name} is declared twice`, {
          details: { face: f.name, migration: m.id },
        });
      ids.add(m.id);
      out.push(m);
    }
  }
  return out;
}

/**
 * The storage core of one node: shards, the log and its sequencers, the cursor
 * engine and the scheduler. Faces are built over a Runtime; transports over
 * faces.
 */
/** PostgreSQL sessions of one node on one shard, by use. */
export interface NodeSessions {
  pool: number;
  relaxed: number;
  listen: number;
  lock: number;
}

/** A node seen on the storage: its id, whether it is this one, and its sessions per shard. */
export interface NodeInfo {
  node_id: string;
  self: boolean;
  sessions: Record<string, NodeSessions>;
}

export class Runtime {
  readonly metrics = new Registry();
  /** What the faces do, counted for the console's charts (`series` samples it for the last hour). */
  readonly activity = new Activity();
  readonly series: Series;
  /** Signs requests to processors and pipe handlers (auth.signing_key_file); null when none is configured. */
  signer: RequestSigner | null = null;
  readonly sequencers: Sequencer[] = [];
  /** The pruning job; faces register what may be removed (retention sources). */
  readonly pruner: Pruner;
  /** Shard splits this node runs or resumes (docs/operations.md, growing). */
  readonly splitter: Splitter;
  private started = false;
  private closed = false;

  private constructor(
    /** The migrations of this node's faces (see `nodeMigrations`). */
    readonly migrations: readonly Migration[],
    readonly config: Config,
    readonly logger: Logger,
    readonly clock: Clock,
    readonly storage: Storage,
    readonly log: Log,
    readonly cursors: CursorEngine,
    readonly scheduler: Scheduler,
    readonly catalog: Catalog,
  ) {
    this.series = new Series(this.activity, {
      onError: (err, gauge) => logger.debug({ err, gauge }, 'series: a gauge could not be read'),
    });
    // Every face of the build moves its rows in a split, served here or not: no face's rows of the moved range may stay behind.
    const movers = [
      AUDIT_SPLIT_MOVER,
      ...BUILT_IN_FACE_SPECS.flatMap((f: FaceSpec) =>
        f.splitMover === undefined
          ? []
          : [f.splitMover.configured?.(config[f.config.key as keyof Config]) ?? f.splitMover],
      ),
    ];
    this.splitter = new Splitter(storage, log, {
      logger,
      now: () => clock.now(),
      graceMs: 2 * Math.max(config.log.poll_ms, 1000),
      movers,
    });
    this.pruner = new Pruner(storage, {
      intervalMs: config.retention.interval_ms,
      batch: config.retention.batch,
      logger,
      now: () => clock.now(),
    });
  }

  static async open(config: Config, opts: RuntimeOptions = {}): Promise<Runtime> {
    const logger = opts.logger ?? silentLogger;
    const clock = opts.clock ?? systemClock;
    const signer = loadSigner(config.auth.signing_key_file);
    const migrations = nodeMigrations(opts.faces ?? BUILT_IN_FACE_SPECS);
    const storage = Storage.open(config);
    for (const s of storage.shards) s.roles.setLogger(logger);
    try {
      if (opts.migrate !== false) {
        const applied = await storage.migrate(migrations);
        for (const [shard, ids] of Object.entries(applied))
          if (ids.length) logger.info({ shard, migrations: ids }, 'applied migrations');
      }
      storage.onRoutingProblem = (problem) =>
        logger.error({ problem }, "the shards' stored hash ranges do not tile the hash space; routing stays as it was");
      if (
        opts.migrate !== false ||
        (await storage.shards[0]!.driver.appliedMigrations()).includes('core/0006_shard_routing')
      ) {
        await storage.loadRouting(Math.max(config.log.poll_ms, 1000));
      }
      const log = new Log(storage, clock, config.cluster.publish_deadline_ms);
      await log.open();
      const cursors = new CursorEngine(log, { chunk: config.cursors.chunk, pollMs: config.log.poll_ms, logger, clock });
      const scheduler = new Scheduler(storage, {
        nodeId: config.node_id,
        pollMs: config.scheduler.poll_ms,
        leaseMs: config.scheduler.lease_ms ?? config.cluster.role_lease_ms,
        batch: config.scheduler.batch,
        retryBaseMs: config.scheduler.retry_base_ms,
        retryMaxMs: config.scheduler.retry_max_ms,
        logger,
        clock,
      });
      const catalog = new Catalog(storage.shards[0]!, {
        pollMs: Math.max(config.log.poll_ms, 1000),
        now: () => clock.now(),
        logger,
      });
      const rt = new Runtime(migrations, config, logger, clock, storage, log, cursors, scheduler, catalog);
      rt.signer = signer;
      if (
        opts.migrate !== false ||
        (await storage.shards[0]!.driver.appliedMigrations()).includes('catalog/0001_definitions')
      )
        await catalog.start();
      rt.registerMetrics();
      if (opts.background !== false) {
        try {
          await rt.start();
        } catch (err) {
          // The start failed with the error rethrown below; closing what did open is best effort.
          await rt.close().catch(() => {});
          throw err;
        }
      }
      return rt;
    } catch (err) {
      // The open failed with the error rethrown below; closing the storage is best effort.
      await storage.close().catch(() => {});
      throw err;
    }
  }

  /** Starts sequencers (where the dialect needs them) and the scheduler loop. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.claimNodeId();
    await this.checkConnectionBudget();
    for (const shard of this.storage.shards) {
      if (shard.driver.capabilities.sequencesOnInsert) continue;
      const seq = new Sequencer(this.log, shard, {
        batch: this.config.log.sequencer_batch,
        pollMs: this.config.log.poll_ms,
        logger: this.logger,
      });
      seq.start();
      this.sequencers.push(seq);
    }
    await this.scheduler.recover();
    this.scheduler.start();
    if (this.config.retention.enabled) this.pruner.start();
    this.series.start();
    await this.splitter.resumeAll();
    if (this.storage.guarded && this.storage.shards[0]!.driver.capabilities.multiNode) this.splitter.watch(5_000);
  }

  /**
   * Where nodes share storage, two running nodes with one node_id would take
   * each other's leases for their own: refuse to start the second. The claim
   * lives on a session the node keeps anyway and ends with its process (a
   * killed node's is freed by the server); a restarting node waits a moment
   * for its predecessor's session to end.
   */
  private async claimNodeId(): Promise<void> {
    const driver = this.storage.shards[0]!.driver;
    if (!driver.capabilities.multiNode || driver.claimSession === undefined) return;
    // Wall time, not the runtime's clock (which a test may hold still).
    const deadline = Date.now() + 5_000;
    for (;;) {
      if (await driver.claimSession(`millrace:node:${this.config.node_id}`)) return;
      if (Date.now() >= deadline) {
        throw new MillraceError(
          'config_invalid',
          `node_id "${this.config.node_id}" is in use by another running node on this storage; give each node its own node_id`,
          {
            details: { node_id: this.config.node_id },
          },
        );
      }
      await sleep(250);
    }
  }

  private readonly liveness = new Map<string, { at: number; alive: Promise<boolean | undefined> }>();

  /**
   * Whether the node `nodeId` runs (its node claim is held by a live
   * session): false once its process has ended, however it ended (a killed
   * node's session ends with it); undefined where the storage cannot tell
   * (one process owns it). Answers are reused for half a second.
   */
  nodeAlive(nodeId: string): Promise<boolean | undefined> {
    const driver = this.storage.shards[0]!.driver;
    if (driver.claimHeld === undefined) return Promise.resolve(undefined);
    if (nodeId === this.config.node_id) return Promise.resolve(true);
    const now = Date.now();
    const hit = this.liveness.get(nodeId);
    if (hit !== undefined && now - hit.at < 500) return hit.alive;
    // A storage that cannot answer now cannot tell: undefined, as documented above.
    const alive = driver.claimHeld(`millrace:node:${nodeId}`).catch(() => undefined);
    if (this.liveness.size > 1000) this.liveness.clear();
    this.liveness.set(nodeId, { at: now, alive });
    return alive;
  }

  /**
   * Warns when this node's sessions, on top of those already open, could
   * exceed the server's max_connections (less its reserved slots): the next
   * node to start, or this one under load, would then be refused.
   */
  private async checkConnectionBudget(): Promise<void> {
    for (const shard of this.storage.shards) {
      const budget = shard.driver.sessionBudget;
      if (!shard.driver.capabilities.multiNode || budget === undefined) continue;
      try {
        const [r] = await shard.reader.all<{ max: number; reserved: number; open: number; mine: number }>(
          `SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int AS reserved,
                  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS open,
                  (SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE ?)::int AS mine`,
          [`millrace:${this.config.node_id}:%`],
        );
        if (r === undefined) continue;
        const available = r.max - r.reserved;
        const others = r.open - r.mine;
        if (others + budget > available) {
          this.logger.warn(
            {
              shard: shard.name,
              max_connections: r.max,
              reserved: r.reserved,
              open_by_others: others,
              this_node_up_to: budget,
            },
            'PostgreSQL may run out of connections: this node can open up to %d sessions on this server, which has %d slots and %d in use by others; lower storage.pool_size or raise max_connections',
            budget,
            available,
            others,
          );
        }
      } catch (err) {
        this.logger.debug({ err, shard: shard.name }, 'could not read the connection limits');
      }
    }
  }

  private registerMetrics(): void {
    collectDefaultMetrics({ register: this.metrics, prefix: 'millrace_' });
    const shards = this.storage.shards;
    new Gauge({
      name: 'millrace_log_head_position',
      help: 'Highest readable log position per shard, as known to this node',
      labelNames: ['shard'],
      registers: [this.metrics],
      collect() {
        for (const s of shards) this.set({ shard: s.name }, log.shardLog(s.name).signal.head);
      },
    });
    const log = this.log;
    new Counter({
      name: 'millrace_group_commit_jobs_total',
      help: 'Writes committed through group commit',
      labelNames: ['shard'],
      registers: [this.metrics],
      collect() {
        this.reset();
        for (const s of shards) this.inc({ shard: s.name }, s.committer.stats.jobs);
      },
    });
    new Counter({
      name: 'millrace_group_commit_batches_total',
      help: 'Transactions committed by group commit',
      labelNames: ['shard'],
      registers: [this.metrics],
      collect() {
        this.reset();
        for (const s of shards) this.inc({ shard: s.name }, s.committer.stats.batches);
      },
    });
    const scheduler = this.scheduler;
    new Counter({
      name: 'millrace_timers_fired_total',
      help: 'Timer handlers that completed',
      registers: [this.metrics],
      collect() {
        this.reset();
        this.inc(scheduler.stats.fired);
      },
    });
  }

  /**
   * The nodes using this storage, as the database sees them: each node names
   * its sessions `millrace:<node_id>:<shard>` (pool), `…-relaxed` (leases),
   * `…-listen` and `…-lock`. Embedded (SQLite), only this node.
   */
  async nodes(): Promise<NodeInfo[]> {
    const byId = new Map<string, NodeInfo>();
    const get = (id: string): NodeInfo => {
      let n = byId.get(id);
      if (n === undefined) byId.set(id, (n = { node_id: id, self: id === this.config.node_id, sessions: {} }));
      return n;
    };
    get(this.config.node_id);
    for (const shard of this.storage.shards) {
      if (!shard.driver.capabilities.multiNode) continue;
      const rows = await shard.reader.all<{ a: string; n: number }>(
        "SELECT application_name AS a, count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'millrace:%' GROUP BY application_name",
      );
      for (const r of rows) {
        const m = /^millrace:(.+):([^:]+?)(?:-(relaxed|listen|lock))?$/.exec(r.a);
        if (!m || m[2] !== shard.name) continue;
        const role = (m[3] ?? 'pool') as keyof NodeSessions;
        const s = (get(m[1]!).sessions[shard.name] ??= { pool: 0, relaxed: 0, listen: 0, lock: 0 });
        s[role] += Number(r.n);
      }
    }
    return [...byId.values()].sort((x, y) =>
      x.self === y.self ? x.node_id.localeCompare(y.node_id) : x.self ? -1 : 1,
    );
  }

  /** Storage reachable and every known migration applied. */
  async ready(): Promise<{ ok: boolean; problems: string[] }> {
    const problems: string[] = [];
    for (const s of this.storage.shards) {
      try {
        await s.driver.ping();
      } catch (err) {
        problems.push(`shard ${s.name} unreachable: ${(err as Error).message}`);
      }
    }
    if (problems.length === 0) {
      const pending = await this.storage.pendingMigrations(this.migrations);
      for (const [shard, ids] of Object.entries(pending))
        if (ids.length) problems.push(`shard ${shard} misses migrations ${ids.join(', ')}`);
    }
    return { ok: problems.length === 0, problems };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.series.stop();
    await this.catalog.stop();
    await this.splitter.close();
    await this.pruner.stop();
    await this.scheduler.stop();
    for (const s of this.sequencers) await s.stop();
    await this.log.close();
    await this.storage.close();
  }
}
