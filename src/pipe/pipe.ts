import { pausesOf, type Pauses } from '../catalog/pauses.js';
import { randomBytes } from 'node:crypto';
import { badRequest, MillraceError } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { Shard } from '../storage/storage.js';
import { kindSchema, type PipeConfig, type PipeKindConfig } from './config.js';
import { decodeCursor, encodeCursor, pageLimit, type Page } from '../core/paging.js';
import { DeadLetters } from './dead-letters.js';
import { kindNotFound, sessionNotFound } from './errors.js';
import { Lane, type LaneOp, type Outcome } from './lane.js';
import { routedHere, shardMoved, untilRouted, writableIn } from './moves.js';
import { SQL } from './pipe-sql.js';
import { readSession, refusal } from './read-session.js';
import { Redelivery } from './redelivery.js';
import { Semaphore } from './semaphore.js';
import { checkId, newSessionId } from './session-id.js';
import { SessionWrites } from './session-writes.js';
import type { DeadLetter, Delivery, Pusher, PushVerdict, SessionInfo, SessionRow, WriteResult } from './types.js';

export { newSessionId, TIMER_LEASE, TIMER_REDELIVER } from './session-id.js';
export type { DeadLetter, Delivery, Pusher, PushVerdict, SessionInfo, SessionState, WriteResult } from './types.js';

const SESSION_STATES: readonly string[] = ['open', 'delivering', 'stored', 'dead'];

/** One session in a list. */
export interface SessionSummary {
  id: string;
  kind: string;
  state: string;
  records: number;
  updated_at: string;
  due_at?: string;
}

/**
 * The pipe: sessions of records with an owner, stored for later, and pushed
 * back to the handler of their kind when they come back. Transports (HTTP,
 * gRPC) call this class; it never calls them. A façade over the lane of
 * client operations (lane.ts), the session writes (session-writes.ts),
 * redelivery (redelivery.ts) and dead letters (dead-letters.ts).
 *
 * Every state change is one group-committed transaction on the session's
 * shard, together with the session's single timer (`pipe/<id>`): a lease
 * timer while the session is open or being delivered, a redelivery timer
 * while it is stored. Expected refusals are returned from the transaction,
 * not thrown in it, so they never make the group committer re-run a batch.
 */
export class Pipe {
  private readonly kindsByName = new Map<string, { name: string; cfg: PipeKindConfig }>();
  private readonly semaphores = new Map<string, Semaphore>();
  /** Streaming connections of this node that own sessions, with the shards they have an owner row on. */
  private readonly owners = new Map<string, Set<string>>();
  /** Per shard and writer connection, the ordered lane of client operations (see enqueue). */
  private readonly lanes = new Map<string, Lane<LaneOp, Outcome>>();
  private readonly writes: SessionWrites;
  private readonly redelivery: Redelivery;
  private readonly dead: DeadLetters;
  private readonly pauses: Pauses;
  private heartbeat: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Session id -> kind; a session's kind never changes, so entries never go stale. */
  private readonly kindOf = new Map<string, string>();
  readonly stats = { pushes: 0, pushFailures: 0 };

  constructor(
    private readonly rt: Runtime,
    readonly config: PipeConfig,
    private readonly pusher: Pusher,
  ) {
    this.refreshKinds();
    rt.catalog.on('pipe.kind', () => {
      this.refreshKinds();
      if (!this.stopped)
        void this.unpark().catch((err: unknown) =>
          this.rt.logger.warn({ err }, 'pipe: un-parking sessions of changed kinds failed'),
        );
    });
    this.pauses = pausesOf(rt.catalog);
    const kindConfig = (name: string): PipeKindConfig | undefined => this.kindConfig(name);
    this.writes = new SessionWrites(rt, config, kindConfig);
    this.redelivery = new Redelivery({
      rt,
      config,
      pusher,
      kindConfig,
      semaphores: this.semaphores,
      owners: this.owners,
      writes: this.writes,
      verdict: (d, v) => this.applyVerdict(d, v),
      stats: this.stats,
      paused: (kind) => this.pauses.paused('pipe_kind', kind),
    });
    this.dead = new DeadLetters(rt, this.writes);
  }

  /**
   * Kinds from the config file, then runtime kinds whose name and code are
   * free (the file wins on conflict). A deleted runtime kind refuses new
   * sessions with kind_not_found; its stored sessions stay and can be listed.
   */
  private refreshKinds(): void {
    const next = new Map<string, { name: string; cfg: PipeKindConfig }>();
    const add = (name: string, cfg: PipeKindConfig) => {
      next.set(name, { name, cfg });
      if (cfg.code !== undefined) next.set(String(cfg.code), { name, cfg });
      const sem = this.semaphores.get(name);
      if (sem === undefined || sem.limit !== cfg.concurrency) this.semaphores.set(name, new Semaphore(cfg.concurrency));
    };
    for (const [name, cfg] of Object.entries(this.config.kinds)) add(name, cfg);
    for (const d of this.rt.catalog.list('pipe.kind')) {
      const parsed = kindSchema.safeParse(d.definition);
      if (!parsed.success || next.has(d.name) || (parsed.data.code !== undefined && next.has(String(parsed.data.code))))
        continue;
      add(d.name, parsed.data);
    }
    this.kindsByName.clear();
    for (const [k, v] of next) this.kindsByName.set(k, v);
  }

  /** Whether a kind (by name) comes from the config file. */
  kindSource(name: string): 'config' | 'runtime' | null {
    if (Object.hasOwn(this.config.kinds, name)) return 'config';
    return this.kindConfig(name) !== undefined ? 'runtime' : null;
  }

  /** The name or code is taken by a kind of the config file (or by another kind's code). */
  kindClash(name: string, code: number | undefined): string | null {
    const byName = this.kindsByName.get(name);
    if (byName !== undefined && byName.name !== name) return `"${name}" is the code of kind "${byName.name}"`;
    if (code !== undefined) {
      const byCode = this.kindsByName.get(String(code));
      if (byCode !== undefined && byCode.name !== name) return `code ${code} belongs to kind "${byCode.name}"`;
    }
    return null;
  }

  get catalog(): Runtime['catalog'] {
    return this.rt.catalog;
  }

  private get now(): number {
    return this.rt.clock.now();
  }

  private get ttlMs(): number {
    return this.config.session_ttl_s * 1000;
  }

  private shardOf(id: string): Shard {
    return this.rt.storage.shardFor(id);
  }

  /** The configured name of a kind given by name or code. */
  resolveKind(kind: unknown): string {
    if (
      (typeof kind !== 'string' || kind.length === 0) &&
      !(typeof kind === 'number' && Number.isInteger(kind) && kind >= 0)
    ) {
      throw badRequest('kind must be a non-empty string or a non-negative integer');
    }
    const k = this.kindsByName.get(String(kind));
    if (k === undefined) throw kindNotFound(kind);
    return k.name;
  }

  /** Whether pushes of the kind are paused. */
  kindPaused(kind: string): boolean {
    return this.pauses.paused('pipe_kind', kind);
  }

  /** The name of a kind given by name or code, or null when no such kind is defined. */
  kindName(kind: string): string | null {
    return this.kindsByName.get(kind)?.name ?? null;
  }

  /** The kind of a session in any state (dead ones too), or null when there is none. */
  async sessionKind(id: string): Promise<string | null> {
    const known = this.kindOf.get(id);
    if (known !== undefined) return known;
    try {
      checkId(id);
    } catch {
      return null;
    }
    const [row] = await this.shardOf(id).reader.all<{ kind: string }>(SQL.sessionKind, [id]);
    if (row === undefined) return null;
    this.rememberKind(id, row.kind);
    return row.kind;
  }

  private rememberKind(id: string, kind: string): void {
    if (this.kindOf.size >= 100_000) this.kindOf.clear();
    this.kindOf.set(id, kind);
  }

  private kindConfig(name: string): PipeKindConfig | undefined {
    const k = this.kindsByName.get(name);
    return k && k.name === name ? k.cfg : undefined;
  }

  /** Registers the timer handlers; un-parks stored sessions of kinds that now have a handler. */
  async start(): Promise<void> {
    this.redelivery.register();
    await this.unpark();
    const every = Math.max(10, this.ttlMs / 3);
    this.heartbeat = setInterval(
      () => void this.beat().catch((err: unknown) => this.rt.logger.warn({ err }, 'pipe: owner heartbeat failed')),
      every,
    );
    this.heartbeat.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.heartbeat);
    await this.redelivery.stop();
  }

  // ---- client operations ----

  /** Opens a session of `kind`; `owner` is a streaming connection (null: kept alive by writes). */
  async create(kind: unknown, owner: string | null = null): Promise<string> {
    const name = this.resolveKind(kind);
    const now = this.now;
    const id = newSessionId(now);
    this.rememberKind(id, name);
    const shard = this.shardOf(id);
    const ownerShards = owner === null ? undefined : this.owners.get(owner);
    if (owner !== null && ownerShards === undefined)
      throw new MillraceError('unavailable', 'the connection that would own this session has closed', {
        retryAfterS: 1,
      });
    if (owner === null || ownerShards!.has(shard.name)) {
      // The usual case: through the session's lane, gathered with other operations.
      if ((await this.enqueue(id, { type: 'create', kind: name, owner })) === 'moved') throw shardMoved(shard.name);
      return id;
    }
    // The first session of a streaming connection on this shard: its owner row commits with it (other nodes read it).
    await shard.write(async (tx) => {
      await tx.run(SQL.upsertOwner, [owner, now + this.ttlMs]);
      tx.onCommit(() => ownerShards!.add(shard.name));
      await this.writes.insertSessionIn(tx, id, name, owner, now);
    });
    return id;
  }

  append(id: string, record: Buffer, seq?: number): Promise<WriteResult> {
    return this.write(id, record, seq, false);
  }

  /** Clears the session's records and adds this one, atomically. */
  replace(id: string, record: Buffer, seq?: number): Promise<WriteResult> {
    return this.write(id, record, seq, true);
  }

  private async write(id: string, record: Buffer, seq: number | undefined, replace: boolean): Promise<WriteResult> {
    checkId(id);
    if (!Buffer.isBuffer(record)) throw badRequest('record must be bytes');
    if (record.length > this.config.max_record_bytes) {
      throw new MillraceError(
        'payload_too_large',
        `record is ${record.length} bytes; at most ${this.config.max_record_bytes} are allowed`,
        { details: { bytes: record.length, max_record_bytes: this.config.max_record_bytes } },
      );
    }
    if (seq !== undefined && (!Number.isSafeInteger(seq) || seq < 0))
      throw badRequest('seq must be a non-negative integer');
    const r = await this.enqueue(id, { type: replace ? 'replace' : 'append', record, seq });
    if (r === 'moved') throw shardMoved(this.shardOf(id).name);
    if (r === 'refused') throw await this.refusal(id);
    return { duplicate: r === 'duplicate' };
  }

  /**
   * Client operations on existing sessions (append, replace, store, delete)
   * go through a lane of their shard (one per writer connection; a session
   * always maps to the same lane): one job in flight per lane, which takes every
   * operation queued by the time the group committer runs it and applies
   * them in arrival order. So a busy shard writes thousands of records per
   * transaction (one statement per session and one per record; with bulk
   * array parameters one statement for a run of appends) with no savepoint
   * per caller, and operations keep their order even where the shard runs
   * several writer connections: a client that pipelines "append, store,
   * append" sees exactly the last append refused.
   */
  private enqueue(id: string, op: DistributiveOmit<LaneOp, 'id' | 'now'>): Promise<Outcome> {
    const shard = this.shardOf(id);
    // One lane per writer connection of the shard; a session always uses the same one (ids end in random base32).
    // One lane per writer connection of the shard, so lanes commit in parallel.
    const key =
      shard.driver.writers === 1 ? shard.name : `${shard.name}/${id.charCodeAt(id.length - 1) % shard.driver.writers}`;
    let lane = this.lanes.get(key);
    if (lane === undefined) {
      // The shard itself, not this session's view of it: each operation's key is checked in the job (applyIn).
      const base = shard.base;
      lane = new Lane<LaneOp, Outcome>((take) => base.write((tx) => this.writes.applyIn(tx, base, take())));
      this.lanes.set(key, lane);
    }
    const full = op as LaneOp;
    full.id = id;
    full.now = this.now;
    return lane.push(full);
  }

  /** Closes writing; the session comes back after `timeoutS` seconds plus a small jitter. Resolves to the due time. */
  async store(id: string, timeoutS: number): Promise<number> {
    checkId(id);
    if (typeof timeoutS !== 'number' || !Number.isFinite(timeoutS) || timeoutS < 0 || timeoutS > 365 * 24 * 3600) {
      throw badRequest('timeout_s must be a number of seconds between 0 and one year');
    }
    const due = this.dueAfter(timeoutS);
    const r = await this.enqueue(id, { type: 'store', due });
    if (r === 'moved') throw shardMoved(this.shardOf(id).name);
    if (r === 'refused') throw await this.refusal(id);
    return due;
  }

  /** `timeoutS` from now, plus a small jitter (at most store_jitter_s and 10% of the timeout). */
  private dueAfter(timeoutS: number): number {
    const jitter = Math.random() * Math.min(this.config.store_jitter_s, timeoutS * 0.1) * 1000;
    return Math.floor(this.now + timeoutS * 1000 + jitter);
  }

  /**
   * A handler finished the session in its answer: through the session's
   * lane, only for that delivery. Refused while the session's range moves to
   * another shard, it is applied again by the new routing (not dropped: the
   * lease would push the session a second time).
   */
  private async applyVerdict(d: Delivery, verdict: PushVerdict): Promise<Outcome> {
    const op =
      verdict.action === 'delete'
        ? { type: 'delete' as const, delivery: d.repeats }
        : { type: 'store' as const, due: this.dueAfter(verdict.timeoutS), delivery: d.repeats };
    return untilRouted(
      this.rt,
      this.ttlMs,
      () => this.enqueue(d.id, { ...op }),
      (r) => r === 'moved',
    );
  }

  /** Finishes the session: it and its records are gone. */
  async delete(id: string): Promise<void> {
    checkId(id);
    const r = await this.enqueue(id, { type: 'delete' });
    if (r === 'moved') throw shardMoved(this.shardOf(id).name);
    if (r === 'refused') throw await this.refusal(id);
  }

  async get(id: string): Promise<SessionInfo> {
    checkId(id);
    const s = await this.readSession(id);
    if (s === null) throw sessionNotFound(id);
    return s;
  }

  private readSession(id: string): Promise<SessionInfo | null> {
    return readSession(this.shardOf(id), id);
  }

  /** Why a write was refused: unknown or closed. */
  private refusal(id: string): Promise<MillraceError> {
    return refusal(this.shardOf(id), id);
  }

  // ---- dead letters ----

  /**
   * Sessions by id across every shard, optionally of one kind (a kind no
   * longer defined still lists its sessions) and in one state, paged.
   */
  async listSessions(
    opts: {
      kind?: string | undefined;
      state?: string | undefined;
      limit?: number | undefined;
      cursor?: string | undefined;
    } = {},
  ): Promise<Page<SessionSummary>> {
    const limit = pageLimit(opts.limit);
    if (opts.kind !== undefined && (typeof opts.kind !== 'string' || opts.kind.length === 0))
      throw badRequest('kind must be a non-empty string');
    if (opts.state !== undefined && !SESSION_STATES.includes(opts.state))
      throw badRequest(`state must be one of ${SESSION_STATES.join(', ')}`);
    const kind = opts.kind === undefined ? undefined : (this.kindsByName.get(opts.kind)?.name ?? opts.kind);
    const after = decodeCursor(opts.cursor, (v): v is string => typeof v === 'string') ?? '';
    const where = ['id > ?'];
    const params: unknown[] = [after];
    if (kind !== undefined) {
      where.push('kind = ?');
      params.push(kind);
    }
    if (opts.state !== undefined) {
      where.push('state = ?');
      params.push(opts.state);
    }
    const rows: (SessionRow & { records: number })[] = [];
    for (const shard of this.rt.storage.shards) {
      const page = await shard.reader.all<SessionRow & { records: number }>(SQL.listSessions(where), [
        ...params,
        limit + 1,
      ]);
      // A split's source keeps the moved sessions for a grace period: each session is listed from where routing finds it.
      rows.push(...page.filter((r) => routedHere(this.rt.storage, shard.name, r.id)));
    }
    rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const items = rows.slice(0, limit).map((r): SessionSummary => {
      const out: SessionSummary = {
        id: r.id,
        kind: r.kind,
        state: r.state,
        records: Number(r.records),
        updated_at: new Date(Number(r.touched_at)).toISOString(),
      };
      if (r.state === 'stored' && r.due_at !== null && r.due_at !== undefined)
        out.due_at = new Date(Number(r.due_at)).toISOString();
      return out;
    });
    return { items, next_cursor: rows.length > limit ? encodeCursor(items[items.length - 1]!.id) : null };
  }

  async listDead(
    opts: { kind?: string | undefined; after?: string | undefined; limit?: number | undefined } = {},
  ): Promise<DeadLetter[]> {
    const limit = opts.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw badRequest('limit must be an integer from 1 to 1000');
    const kind = opts.kind === undefined ? undefined : this.resolveKind(opts.kind);
    const out: DeadLetter[] = [];
    for (const shard of this.rt.storage.shards) {
      const rows = await shard.reader.all<SessionRow>(
        SQL.listDead(kind !== undefined),
        kind === undefined ? [opts.after ?? '', limit] : [opts.after ?? '', kind, limit],
      );
      for (const r of rows) {
        if (!routedHere(this.rt.storage, shard.name, r.id)) continue;
        out.push({
          id: r.id,
          kind: r.kind,
          repeats: Number(r.repeats),
          lastError: r.last_error,
          diedAt: Number(r.touched_at),
        });
      }
    }
    out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return out.slice(0, limit);
  }

  getDead(id: string): Promise<SessionInfo> {
    return this.dead.get(id);
  }

  /** Puts a dead session back: stored, due now, with a fresh count of repeats. */
  redrive(id: string): Promise<void> {
    return this.dead.redrive(id);
  }

  deleteDead(id: string): Promise<void> {
    return this.dead.delete(id);
  }

  // ---- owners (streaming connections) ----

  /** A streaming connection that may own sessions. */
  openOwner(): string {
    const owner = `${this.rt.config.node_id}/${randomBytes(8).toString('hex')}`;
    this.owners.set(owner, new Set());
    return owner;
  }

  /** The connection went away: its open sessions become unfinished and come back after their kind's default delay. */
  async closeOwner(owner: string): Promise<void> {
    const shards = this.owners.get(owner);
    if (shards === undefined) return;
    this.owners.delete(owner);
    const now = this.now;
    for (const name of this.ownerShards(shards)) {
      const shard = this.rt.storage.shard(name);
      await shard.write(async (tx) => {
        const rows = await tx.all<{ id: string; kind: string }>(SQL.ownedOpenSessions, [owner]);
        // Only sessions the shard owns now: a split's source keeps moved ones for a while, and may not change them.
        const mine = await writableIn(
          this.rt.storage,
          tx,
          rows.map((r) => r.id),
        );
        for (const r of rows) if (mine.has(r.id)) await this.redelivery.unfinishedIn(tx, r.id, r.kind, now, { owner });
        await tx.run(SQL.deleteOwner, [owner]);
      });
    }
  }

  /**
   * The shards a connection's owner row may be on: those it opened sessions
   * on and, where ranges can move, every shard (a split copies the owner row
   * of moved sessions to the target, which must see the connection alive).
   */
  private ownerShards(opened: ReadonlySet<string>): string[] {
    return this.rt.storage.guarded ? this.rt.storage.shards.map((s) => s.name) : [...opened];
  }

  private async beat(): Promise<void> {
    const byShard = new Map<string, string[]>();
    for (const [owner, shards] of this.owners)
      for (const s of this.ownerShards(shards)) byShard.set(s, [...(byShard.get(s) ?? []), owner]);
    const until = this.now + this.ttlMs;
    for (const [name, owners] of byShard) {
      await this.rt.storage.shard(name).write(async (tx) => {
        for (const o of owners) await tx.run(SQL.beatOwner, [until, o]);
      });
    }
  }

  /** Stored sessions parked for want of a handler get their timers once their kind has one. */
  private async unpark(): Promise<void> {
    const handled = [...this.kindsByName.values()]
      .filter((k) => k.cfg.handler !== undefined && this.kindConfig(k.name) === k.cfg)
      .map((k) => k.name);
    await this.redelivery.unpark(handled);
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
