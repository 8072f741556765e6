import { randomBytes } from 'node:crypto';
import { badRequest, MillraceError } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import { RetryTimer, type Timer, type TimerContext } from '../scheduler/scheduler.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import { kindSchema, type PipeConfig, type PipeKindConfig } from './config.js';
import { deadLetterNotFound, kindNotFound, sessionClosed, sessionNotFound } from './errors.js';
import { decodeCursor, encodeCursor, pageLimit, type Page } from '../core/paging.js';
import './migrations.js';

export type SessionState = 'open' | 'delivering' | 'stored' | 'dead';

export interface SessionInfo {
  id: string;
  kind: string;
  state: SessionState;
  /** How many times the session has been pushed to its handler. */
  repeats: number;
  createdAt: number;
  /** When a stored session comes back (ms since the epoch); null otherwise. */
  dueAt: number | null;
  lastError: string | null;
  records: Buffer[];
}

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

export interface DeadLetter {
  id: string;
  kind: string;
  repeats: number;
  lastError: string | null;
  diedAt: number;
}

/** What a handler receives (and what the pusher POSTs as JSON, records in base64). */
export interface Delivery {
  id: string;
  kind: string;
  repeats: number;
  records: Buffer[];
}

export interface WriteResult {
  /** A record with this `seq` was already written: acknowledged, not written again. */
  duplicate: boolean;
}

export const TIMER_REDELIVER = 'pipe.redeliver';
export const TIMER_LEASE = 'pipe.lease';

const WRITABLE = `state IN ('open', 'delivering')`;
const ID_RE = /^[0-9a-z]{26}$/;
const B32 = '0123456789abcdefghjkmnpqrstvwxyz';

/** 16 bytes: 48-bit millisecond time, then 80 random bits; Crockford base32, 26 characters, sortable by creation time. */
export function newSessionId(now: number): string {
  const b = randomBytes(16);
  b.writeUIntBE(Math.max(0, Math.floor(now)) % 2 ** 48, 0, 6);
  let bits = 0n;
  for (const x of b) bits = (bits << 8n) | BigInt(x);
  let out = '';
  for (let i = 0; i < 26; i++) {
    out = B32[Number(bits & 31n)]! + out;
    bits >>= 5n;
  }
  return out;
}

const timerKey = (id: string): string => `pipe/${id}`;
const idOfTimer = (t: Timer): string => t.owner.slice(5);

interface SessionRow {
  id: string;
  kind: string;
  state: SessionState;
  owner: string | null;
  repeats: number;
  created_at: number;
  touched_at: number;
  due_at: number | null;
  last_error: string | null;
}

/** A FIFO counting semaphore: per-kind push concurrency on this node. */
class Semaphore {
  private active = 0;
  private readonly waiters: Array<() => void> = [];
  constructor(readonly limit: number) {}
  get waiting(): number {
    return this.waiters.length;
  }
  /** Wakes every waiter (each then holds a permit it must release): used on stop so no one waits forever. */
  wakeAll(): void {
    for (const w of this.waiters.splice(0)) {
      this.active++;
      w();
    }
  }
  async acquire(): Promise<() => void> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiters.push(r));
    else this.active++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiters.shift();
      if (next) next();
      else this.active--;
    };
  }
}

type Outcome = 'written' | 'duplicate' | 'refused' | 'done';

/** A client operation on an existing session, queued in its shard's lane. */
type LaneOp = (
  | { type: 'append' | 'replace'; record: Buffer; seq: number | undefined }
  | { type: 'create'; kind: string; owner: string | null }
  | { type: 'store'; due: number; delivery?: number | undefined }
  | { type: 'delete'; delivery?: number | undefined }
) & {
  id: string;
  now: number;
  resolve: (r: Outcome) => void;
  reject: (err: unknown) => void;
};

type WriteOp = Extract<LaneOp, { type: 'append' | 'replace' }>;

/** Order of operation kinds inside a round of a lane job (appends and replaces are one kind: writeIn keeps their order). */
const TYPE_RANK: Record<LaneOp['type'], number> = { create: 0, append: 1, replace: 1, store: 2, delete: 3 };
type StoreOp = Extract<LaneOp, { type: 'store' }>;
type CreateOp = Extract<LaneOp, { type: 'create' }>;
type DeleteOp = Extract<LaneOp, { type: 'delete' }>;

/** A client may finish a writable session; a handler's verdict only the delivery it got (its repeats count). */
function deliveryCond(delivery: number | undefined): [string, number[]] {
  return delivery === undefined ? [WRITABLE, []] : [`state = 'delivering' AND repeats = ?`, [delivery]];
}

/** The same condition in bulk statements (t.delivery: null for a client's own session). */
const DELIVERY_COND = `((t.delivery IS NULL AND p.state IN ('open', 'delivering')) OR (t.delivery IS NOT NULL AND p.state = 'delivering' AND p.repeats = t.delivery))`;

/** A client may also cancel (delete) a session it stored; a handler's verdict still only its own delivery. */
function deleteCond(delivery: number | undefined): [string, number[]] {
  return delivery === undefined ? [`state IN ('open', 'delivering', 'stored')`, []] : deliveryCond(delivery);
}
const DELETE_COND = `((t.delivery IS NULL AND p.state IN ('open', 'delivering', 'stored')) OR (t.delivery IS NOT NULL AND p.state = 'delivering' AND p.repeats = t.delivery))`;

/** true at the first operation on each session: a later one in the same run finds it already stored or gone. */
function firstOfEach(ops: ReadonlyArray<{ id: string }>): boolean[] {
  const seen = new Set<string>();
  return ops.map((o) => !seen.has(o.id) && (seen.add(o.id), true));
}

/** Per shard: the operations waiting for the next job, and whether a job is in flight. */
interface Lane {
  queue: LaneOp[];
  busy: boolean;
}

/** What a handler may answer to finish the session in the same step (instead of calling the API). */
export type PushVerdict = { action: 'delete' } | { action: 'store'; timeoutS: number };

/** Delivers to a handler; resolves to its verdict, if it gave one; rejects if the push failed. */
export type Pusher = (handler: string, kind: PipeKindConfig, d: Delivery) => Promise<PushVerdict | undefined>;

/**
 * The pipe: sessions of records with an owner, stored for later, and pushed
 * back to the handler of their kind when they come back. Transports (HTTP,
 * gRPC) call this class; it never calls them.
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
  private readonly inFlight = new Set<Promise<void>>();
  /** Per shard and writer connection, the ordered lane of client operations (see enqueue). */
  private readonly lanes = new Map<string, Lane>();
  private heartbeat: NodeJS.Timeout | undefined;
  private stopped = false;
  readonly stats = { pushes: 0, pushFailures: 0 };

  constructor(
    private readonly rt: Runtime,
    readonly config: PipeConfig,
    private readonly pusher: Pusher,
  ) {
    this.refreshKinds();
    rt.catalog.on('pipe.kind', () => {
      this.refreshKinds();
      if (!this.stopped) void this.unpark().catch((err: unknown) => this.rt.logger.warn({ err }, 'pipe: un-parking sessions of changed kinds failed'));
    });
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
      if (!parsed.success || next.has(d.name) || (parsed.data.code !== undefined && next.has(String(parsed.data.code)))) continue;
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
    if ((typeof kind !== 'string' || kind.length === 0) && !(typeof kind === 'number' && Number.isInteger(kind) && kind >= 0)) {
      throw badRequest('kind must be a non-empty string or a non-negative integer');
    }
    const k = this.kindsByName.get(String(kind));
    if (k === undefined) throw kindNotFound(kind);
    return k.name;
  }

  private kindConfig(name: string): PipeKindConfig | undefined {
    const k = this.kindsByName.get(name);
    return k && k.name === name ? k.cfg : undefined;
  }

  /** Registers the timer handlers; un-parks stored sessions of kinds that now have a handler. */
  async start(): Promise<void> {
    this.rt.scheduler.register(TIMER_REDELIVER, (t, ctx) => this.onRedeliver(t, ctx));
    this.rt.scheduler.register(TIMER_LEASE, (t, ctx) => this.onLease(t, ctx));
    await this.unpark();
    const every = Math.max(10, this.ttlMs / 3);
    this.heartbeat = setInterval(() => void this.beat().catch((err: unknown) => this.rt.logger.warn({ err }, 'pipe: owner heartbeat failed')), every);
    this.heartbeat.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.heartbeat);
    for (const sem of this.semaphores.values()) sem.wakeAll();
    await Promise.allSettled([...this.inFlight]);
  }

  // ---- client operations ----

  /** Opens a session of `kind`; `owner` is a streaming connection (null: kept alive by writes). */
  async create(kind: unknown, owner: string | null = null): Promise<string> {
    const name = this.resolveKind(kind);
    const now = this.now;
    const id = newSessionId(now);
    const shard = this.shardOf(id);
    const ownerShards = owner === null ? undefined : this.owners.get(owner);
    if (owner !== null && ownerShards === undefined) throw new MillraceError('unavailable', 'the connection that would own this session has closed', { retryAfterS: 1 });
    if (owner === null || ownerShards!.has(shard.name)) {
      // The usual case: through the session's lane, gathered with other operations.
      await this.enqueue(id, { type: 'create', kind: name, owner });
      return id;
    }
    // The first session of a streaming connection on this shard: its owner row commits with it (other nodes read it).
    await shard.write(async (tx) => {
      await tx.run(
        'INSERT INTO pipe_owners (owner, alive_until) VALUES (?, ?) ON CONFLICT (owner) DO UPDATE SET alive_until = excluded.alive_until',
        [owner, now + this.ttlMs],
      );
      tx.onCommit(() => ownerShards!.add(shard.name));
      await this.insertSessionIn(tx, id, name, owner, now);
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
      throw new MillraceError('payload_too_large', `record is ${record.length} bytes; at most ${this.config.max_record_bytes} are allowed`, { details: { bytes: record.length, max_record_bytes: this.config.max_record_bytes } });
    }
    if (seq !== undefined && (!Number.isSafeInteger(seq) || seq < 0)) throw badRequest('seq must be a non-negative integer');
    const r = await this.enqueue(id, { type: replace ? 'replace' : 'append', record, seq });
    if (r === 'refused') throw await this.refusal(id);
    return { duplicate: r === 'duplicate' };
  }

  /**
   * Client operations on existing sessions (append, replace, store, delete)
   * go through a lane of their shard (one per writer connection; a session
   * always maps to the same lane): one job in flight per lane, which takes every
   * operation queued by the time the group committer runs it and applies
   * them in arrival order. So a busy shard writes thousands of records per
   * transaction (one statement per session and one per record; on
   * PostgreSQL one statement for a run of appends) with no savepoint per
   * caller, and operations keep their order even where PostgreSQL runs
   * several writer connections: a client that pipelines "append, store,
   * append" sees exactly the last append refused.
   */
  private enqueue(id: string, op: DistributiveOmit<LaneOp, 'id' | 'now' | 'resolve' | 'reject'>): Promise<Outcome> {
    const shard = this.shardOf(id);
    // One lane per writer connection of the shard; a session always uses the same one (ids end in random base32).
    const key = shard.driver.writers === 1 ? shard.name : `${shard.name}/${id.charCodeAt(id.length - 1) % shard.driver.writers}`;
    let lane = this.lanes.get(key);
    if (lane === undefined) {
      lane = { queue: [], busy: false };
      this.lanes.set(key, lane);
    }
    const l = lane;
    const full = op as LaneOp;
    full.id = id;
    full.now = this.now;
    return new Promise<Outcome>((resolve, reject) => {
      full.resolve = resolve;
      full.reject = reject;
      l.queue.push(full);
      if (!l.busy) this.runLane(shard, l);
    });
  }

  private runLane(shard: Shard, lane: Lane): void {
    lane.busy = true;
    let ops: LaneOp[] | null = null;
    const take = (): LaneOp[] => {
      if (ops === null) {
        ops = lane.queue;
        lane.queue = [];
      }
      return ops;
    };
    shard
      .write((tx) => this.applyIn(tx, shard, take()))
      .then(
        (out) => {
          const taken = take();
          for (let i = 0; i < taken.length; i++) taken[i]!.resolve(out[i]!);
        },
        (err: unknown) => {
          for (const o of take()) o.reject(err);
        },
      )
      .finally(() => {
        lane.busy = false;
        if (lane.queue.length > 0) this.runLane(shard, lane);
      });
  }

  /** Applies a lane job's operations, each session's in arrival order; one outcome per operation. Safe to run again after a rollback. */
  private async applyIn(tx: Tx, shard: Shard, ops: readonly LaneOp[]): Promise<Outcome[]> {
    // Operations on different sessions commute, so the job regroups them for bulk statements: round r
    // holds each session's r-th stretch of same-kind operations (so a session's order holds), and
    // within a round creates go first, then writes, stores and deletes, each kept in arrival order.
    const last = new Map<string, { rank: number; round: number }>();
    const rounds: number[][] = [];
    for (let i = 0; i < ops.length; i++) {
      const o = ops[i]!;
      const rank = TYPE_RANK[o.type];
      const l = last.get(o.id);
      const round = l === undefined ? 0 : l.rank === rank ? l.round : l.round + 1;
      last.set(o.id, { rank, round });
      (rounds[round] ??= []).push(i);
    }
    if (rounds.length === 1 && ops.every((o, i) => i === 0 || TYPE_RANK[ops[i - 1]!.type] <= TYPE_RANK[o.type])) return this.applyRun(tx, shard, ops);
    const out = new Array<Outcome>(ops.length);
    for (const round of rounds) {
      const order = round.sort((a, b) => TYPE_RANK[ops[a]!.type] - TYPE_RANK[ops[b]!.type] || a - b);
      const res = await this.applyRun(tx, shard, order.map((i) => ops[i]!));
      for (let k = 0; k < order.length; k++) out[order[k]!] = res[k]!;
    }
    return out;
  }

  /** Applies operations in the order given: runs of one kind together. */
  private async applyRun(tx: Tx, shard: Shard, ops: readonly LaneOp[]): Promise<Outcome[]> {
    const out: Outcome[] = [];
    const bulk = shard.driver.dialect === 'postgres';
    let i = 0;
    while (i < ops.length) {
      const o = ops[i]!;
      if (o.type === 'create') {
        let j = i;
        while (j < ops.length && ops[j]!.type === 'create') j++;
        await this.createManyIn(tx, ops.slice(i, j) as CreateOp[], bulk);
        for (let k = i; k < j; k++) out.push('done');
        i = j;
      } else if (bulk && (o.type === 'store' || o.type === 'delete')) {
        // PostgreSQL: a run of stores (or of deletes) in a few statements, not a few per session.
        let j = i;
        while (j < ops.length && ops[j]!.type === o.type) j++;
        const run = ops.slice(i, j);
        out.push(...(o.type === 'store' ? await this.storeManyIn(tx, run as StoreOp[]) : await this.deleteManyIn(tx, run as DeleteOp[])));
        i = j;
      } else if (o.type === 'store') {
        out.push((await this.storeIn(tx, o.id, o.due, o.now, o.delivery)) ? 'done' : 'refused');
        i++;
      } else if (o.type === 'delete') {
        out.push((await this.deleteIn(tx, o.id, o.delivery)) ? 'done' : 'refused');
        i++;
      } else {
        let j = i;
        while (j < ops.length && (ops[j]!.type === 'append' || ops[j]!.type === 'replace')) j++;
        out.push(...(await this.writeIn(tx, shard, ops.slice(i, j) as WriteOp[], bulk)));
        i = j;
      }
    }
    return out;
  }

  /** Runs a batch of writes in order; one outcome per write. Safe to run again after a rollback. */
  private async writeIn(tx: Tx, shard: Shard, ops: readonly WriteOp[], bulk: boolean): Promise<Outcome[]> {
    // Every session written in the batch: still writable? (and its lease clock moves).
    const sessions = new Map<string, { now: number; ok: boolean; seqs: Set<number> }>();
    for (const o of ops) {
      const s = sessions.get(o.id);
      if (s === undefined) sessions.set(o.id, { now: o.now, ok: false, seqs: new Set() });
      else if (o.now > s.now) s.now = o.now;
    }
    if (bulk && !ops.some((o) => o.type === 'replace')) return this.writeInBulk(tx, ops, sessions);
    // Sorted, so that two batches on two PostgreSQL connections lock sessions in one order.
    const oneWriter = !shard.driver.capabilities.multiNode;
    for (const id of [...sessions.keys()].sort()) {
      const s = sessions.get(id)!;
      if (oneWriter) {
        // One writer: a read is enough to know the session is writable, and only
        // sessions kept alive by writes (no owner) need touched_at moved.
        const r = await tx.all<{ free: number }>(`SELECT CASE WHEN owner IS NULL THEN 1 ELSE 0 END AS free FROM pipe_sessions WHERE id = ? AND ${WRITABLE}`, [id]);
        s.ok = r.length === 1;
        if (s.ok && Number(r[0]!.free) === 1) await tx.run('UPDATE pipe_sessions SET touched_at = ? WHERE id = ?', [s.now, id]);
      } else {
        // Several writers: the UPDATE's row lock orders this write against a concurrent close of the session.
        s.ok = (await tx.run(`UPDATE pipe_sessions SET touched_at = ? WHERE id = ? AND ${WRITABLE}`, [s.now, id])) === 1;
      }
    }
    const out: Outcome[] = [];
    for (const o of ops) {
      if (!sessions.get(o.id)!.ok) {
        out.push('refused');
        continue;
      }
      if (o.type === 'replace') {
        if (o.seq !== undefined && (await tx.all('SELECT 1 AS x FROM pipe_records WHERE session_id = ? AND seq = ?', [o.id, o.seq])).length > 0) {
          out.push('duplicate');
          continue;
        }
        await tx.run('DELETE FROM pipe_records WHERE session_id = ?', [o.id]);
      }
      // The unique (session_id, seq) index turns a repeated seq into no row written.
      const n = await tx.run('INSERT INTO pipe_records (session_id, seq, data) VALUES (?, ?, ?) ON CONFLICT DO NOTHING', [o.id, o.seq ?? null, o.record]);
      out.push(n === 0 ? 'duplicate' : 'written');
    }
    return out;
  }

  /**
   * PostgreSQL, appends only: the whole batch in one statement (one round
   * trip instead of two per record). A seq repeated inside the batch is
   * settled here: only its first write is sent.
   */
  private async writeInBulk(tx: Tx, ops: readonly WriteOp[], sessions: Map<string, { now: number; ok: boolean; seqs: Set<number> }>): Promise<Outcome[]> {
    const out: Outcome[] = new Array<Outcome>(ops.length);
    const ids: string[] = [];
    const seqs: Array<number | null> = [];
    const data: Buffer[] = [];
    const idxOf: number[] = [];
    for (let i = 0; i < ops.length; i++) {
      const o = ops[i]!;
      if (o.seq !== undefined) {
        const seen = sessions.get(o.id)!.seqs;
        if (seen.has(o.seq)) {
          out[i] = 'duplicate';
          continue;
        }
        seen.add(o.seq);
      }
      ids.push(o.id);
      seqs.push(o.seq ?? null);
      data.push(o.record);
      idxOf.push(i);
    }
    const touched = [...sessions.keys()].sort();
    const rows = await tx.all<{ ok: string[] | null; written: string[] | null }>(
      `WITH u AS (
         UPDATE pipe_sessions p SET touched_at = t.now FROM unnest(?::text[], ?::bigint[]) AS t(id, now)
          WHERE p.id = t.id AND p.${WRITABLE} RETURNING p.id
       ), v AS (
         SELECT * FROM unnest(?::text[], ?::bigint[], ?::bytea[]) WITH ORDINALITY AS v(session_id, seq, data, ord)
       ), ins AS (
         INSERT INTO pipe_records (session_id, seq, data)
         SELECT v.session_id, v.seq, v.data FROM v JOIN u ON u.id = v.session_id ORDER BY v.ord
         ON CONFLICT DO NOTHING RETURNING session_id, seq
       )
       SELECT (SELECT array_agg(id) FROM u) AS ok,
              (SELECT array_agg(session_id || ':' || seq) FROM ins WHERE seq IS NOT NULL) AS written`,
      [touched, touched.map((id) => sessions.get(id)!.now), ids, seqs, data],
    );
    const ok = new Set(rows[0]?.ok ?? []);
    const written = new Set(rows[0]?.written ?? []);
    for (let j = 0; j < idxOf.length; j++) {
      const i = idxOf[j]!;
      const o = ops[i]!;
      out[i] = !ok.has(o.id) ? 'refused' : o.seq === undefined || written.has(`${o.id}:${o.seq}`) ? 'written' : 'duplicate';
    }
    for (let i = 0; i < ops.length; i++) if (out[i] === 'duplicate' && !ok.has(ops[i]!.id)) out[i] = 'refused';
    return out;
  }

  /** Closes writing; the session comes back after `timeoutS` seconds plus a small jitter. Resolves to the due time. */
  async store(id: string, timeoutS: number): Promise<number> {
    checkId(id);
    if (typeof timeoutS !== 'number' || !Number.isFinite(timeoutS) || timeoutS < 0 || timeoutS > 365 * 24 * 3600) {
      throw badRequest('timeout_s must be a number of seconds between 0 and one year');
    }
    const due = this.dueAfter(timeoutS);
    if ((await this.enqueue(id, { type: 'store', due })) === 'refused') throw await this.refusal(id);
    return due;
  }

  /** `timeoutS` from now, plus a small jitter (at most store_jitter_s and 10% of the timeout). */
  private dueAfter(timeoutS: number): number {
    const jitter = Math.random() * Math.min(this.config.store_jitter_s, timeoutS * 0.1) * 1000;
    return Math.floor(this.now + timeoutS * 1000 + jitter);
  }

  /** One new open session with its lease timer. */
  private async insertSessionIn(tx: Tx, id: string, kind: string, owner: string | null, now: number): Promise<void> {
    await tx.run(`INSERT INTO pipe_sessions (id, kind, state, owner, created_at, touched_at) VALUES (?, ?, 'open', ?, ?, ?)`, [id, kind, owner, now, now]);
    await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_LEASE, now + this.ttlMs);
  }

  /** New sessions: one multi-row INSERT per 200 where round trips cost (PostgreSQL), else one each. */
  private async createManyIn(tx: Tx, ops: readonly CreateOp[], bulk: boolean): Promise<void> {
    const ttl = this.ttlMs;
    if (!bulk) {
      for (const o of ops) await this.insertSessionIn(tx, o.id, o.kind, o.owner, o.now);
      return;
    }
    for (let off = 0; off < ops.length; off += 200) {
      const chunk = ops.slice(off, off + 200);
      await tx.run(
        `INSERT INTO pipe_sessions (id, kind, state, owner, created_at, touched_at) VALUES ${chunk.map(() => `(?, ?, 'open', ?, ?, ?)`).join(', ')}`,
        chunk.flatMap((o) => [o.id, o.kind, o.owner, o.now, o.now]),
      );
    }
    await this.rt.scheduler.scheduleManyIn(tx, ops.map((o) => ({ owner: timerKey(o.id), kind: TIMER_LEASE, dueAt: o.now + ttl })));
  }

  /** PostgreSQL: stores a run of sessions with one UPDATE and one statement each for timers. */
  private async storeManyIn(tx: Tx, ops: readonly StoreOp[]): Promise<Outcome[]> {
    const first = firstOfEach(ops);
    const sent = ops.filter((_, k) => first[k]);
    const rows = await tx.all<{ id: string; kind: string }>(
      `UPDATE pipe_sessions p SET state = 'stored', owner = NULL, due_at = t.due, touched_at = t.now, parked = 0
         FROM unnest(?::text[], ?::bigint[], ?::bigint[], ?::int[]) AS t(id, due, now, delivery)
        WHERE p.id = t.id AND ${DELIVERY_COND}
        RETURNING p.id, p.kind`,
      [sent.map((o) => o.id), sent.map((o) => o.due), sent.map((o) => o.now), sent.map((o) => o.delivery ?? null)],
    );
    const kinds = new Map(rows.map((r) => [r.id, r.kind]));
    const timers: Array<{ owner: string; kind: string; dueAt: number; payload: string }> = [];
    const parked: string[] = [];
    for (const o of sent) {
      const kind = kinds.get(o.id);
      if (kind === undefined) continue;
      if (this.kindConfig(kind)?.handler === undefined) parked.push(o.id);
      else timers.push({ owner: timerKey(o.id), kind: TIMER_REDELIVER, dueAt: o.due, payload: kind });
    }
    // Cancel first so the new timers get new ids: ties in due time go in the order sessions were stored.
    await this.rt.scheduler.cancelManyIn(tx, [...kinds.keys()].map(timerKey));
    if (parked.length > 0) await tx.run('UPDATE pipe_sessions SET parked = 1 WHERE id = ANY(?::text[])', [parked]);
    await this.rt.scheduler.scheduleManyIn(tx, timers);
    return ops.map((o, k) => (first[k] && kinds.has(o.id) ? 'done' : 'refused'));
  }

  /** PostgreSQL: deletes a run of sessions, their records and timers, in three statements. */
  private async deleteManyIn(tx: Tx, ops: readonly DeleteOp[]): Promise<Outcome[]> {
    const first = firstOfEach(ops);
    const sent = ops.filter((_, k) => first[k]);
    const rows = await tx.all<{ id: string }>(
      `DELETE FROM pipe_sessions p USING unnest(?::text[], ?::int[]) AS t(id, delivery) WHERE p.id = t.id AND ${DELETE_COND} RETURNING p.id`,
      [sent.map((o) => o.id), sent.map((o) => o.delivery ?? null)],
    );
    const gone = new Set(rows.map((r) => r.id));
    if (gone.size > 0) {
      await tx.run('DELETE FROM pipe_records WHERE session_id = ANY(?::text[])', [[...gone]]);
      await this.rt.scheduler.cancelManyIn(tx, [...gone].map(timerKey));
    }
    return ops.map((o, k) => (first[k] && gone.has(o.id) ? 'done' : 'refused'));
  }

  /** `delivery`: only while that delivery (its repeats count) is the current one. */
  private async storeIn(tx: Tx, id: string, due: number, now: number, delivery?: number): Promise<boolean> {
    const [cond, extra] = deliveryCond(delivery);
    const rows = await tx.all<{ kind: string }>(
      `UPDATE pipe_sessions SET state = 'stored', owner = NULL, due_at = ?, touched_at = ?, parked = 0 WHERE id = ? AND ${cond} RETURNING kind`,
      [due, now, id, ...extra],
    );
    if (!rows[0]) return false;
    await this.comeBackIn(tx, id, rows[0].kind, due, true);
    return true;
  }

  /** Finishes the session: it and its records are gone. */
  async delete(id: string): Promise<void> {
    checkId(id);
    if ((await this.enqueue(id, { type: 'delete' })) === 'refused') throw await this.refusal(id);
  }

  private async deleteIn(tx: Tx, id: string, delivery?: number): Promise<boolean> {
    const [cond, extra] = deleteCond(delivery);
    if ((await tx.run(`DELETE FROM pipe_sessions WHERE id = ? AND ${cond}`, [id, ...extra])) === 0) return false;
    await tx.run('DELETE FROM pipe_records WHERE session_id = ?', [id]);
    await this.rt.scheduler.cancelIn(tx, timerKey(id));
    return true;
  }

  async get(id: string): Promise<SessionInfo> {
    checkId(id);
    const s = await this.readSession(id);
    if (s === null) throw sessionNotFound(id);
    return s;
  }

  private async readSession(id: string): Promise<SessionInfo | null> {
    const reader = this.shardOf(id).reader;
    const rows = await reader.all<SessionRow>('SELECT id, kind, state, owner, repeats, created_at, touched_at, due_at, last_error FROM pipe_sessions WHERE id = ?', [id]);
    const s = rows[0];
    if (!s) return null;
    const recs = await reader.all<{ data: Buffer }>('SELECT data FROM pipe_records WHERE session_id = ? ORDER BY id', [id]);
    return {
      id: s.id,
      kind: s.kind,
      state: s.state,
      repeats: Number(s.repeats),
      createdAt: Number(s.created_at),
      dueAt: s.state === 'stored' && s.due_at !== null ? Number(s.due_at) : null,
      lastError: s.last_error,
      records: recs.map((r) => r.data),
    };
  }

  /** Why a write was refused: unknown or closed. */
  private async refusal(id: string): Promise<MillraceError> {
    const rows = await this.shardOf(id).reader.all<{ state: string }>('SELECT state FROM pipe_sessions WHERE id = ?', [id]);
    return rows[0] ? sessionClosed(id, rows[0].state) : sessionNotFound(id);
  }

  // ---- lists ----

  /**
   * Sessions by id across every shard, optionally of one kind (a kind no
   * longer defined still lists its sessions) and in one state, paged.
   */
  async listSessions(opts: { kind?: string | undefined; state?: string | undefined; limit?: number | undefined; cursor?: string | undefined } = {}): Promise<Page<SessionSummary>> {
    const limit = pageLimit(opts.limit);
    if (opts.kind !== undefined && (typeof opts.kind !== 'string' || opts.kind.length === 0)) throw badRequest('kind must be a non-empty string');
    if (opts.state !== undefined && !SESSION_STATES.includes(opts.state)) throw badRequest(`state must be one of ${SESSION_STATES.join(', ')}`);
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
      rows.push(
        ...(await shard.reader.all<SessionRow & { records: number }>(
          `SELECT s.id, s.kind, s.state, s.touched_at, s.due_at, (SELECT count(*) FROM pipe_records r WHERE r.session_id = s.id) AS records
           FROM pipe_sessions s WHERE ${where.map((w) => `s.${w}`).join(' AND ')} ORDER BY s.id LIMIT ?`,
          [...params, limit + 1],
        )),
      );
    }
    rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const items = rows.slice(0, limit).map((r): SessionSummary => {
      const out: SessionSummary = { id: r.id, kind: r.kind, state: r.state, records: Number(r.records), updated_at: new Date(Number(r.touched_at)).toISOString() };
      if (r.state === 'stored' && r.due_at !== null && r.due_at !== undefined) out.due_at = new Date(Number(r.due_at)).toISOString();
      return out;
    });
    return { items, next_cursor: rows.length > limit ? encodeCursor(items[items.length - 1]!.id) : null };
  }

  // ---- dead letters ----

  async listDead(opts: { kind?: string | undefined; after?: string | undefined; limit?: number | undefined } = {}): Promise<DeadLetter[]> {
    const limit = opts.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw badRequest('limit must be an integer from 1 to 1000');
    const kind = opts.kind === undefined ? undefined : this.resolveKind(opts.kind);
    const out: DeadLetter[] = [];
    for (const shard of this.rt.storage.shards) {
      const rows = await shard.reader.all<SessionRow>(
        `SELECT id, kind, repeats, last_error, touched_at FROM pipe_sessions WHERE state = 'dead' AND id > ?${kind === undefined ? '' : ' AND kind = ?'} ORDER BY id LIMIT ?`,
        kind === undefined ? [opts.after ?? '', limit] : [opts.after ?? '', kind, limit],
      );
      for (const r of rows) out.push({ id: r.id, kind: r.kind, repeats: Number(r.repeats), lastError: r.last_error, diedAt: Number(r.touched_at) });
    }
    out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return out.slice(0, limit);
  }

  async getDead(id: string): Promise<SessionInfo> {
    checkId(id, deadLetterNotFound);
    const s = await this.readSession(id);
    if (s === null || s.state !== 'dead') throw deadLetterNotFound(id);
    return s;
  }

  /** Puts a dead session back: stored, due now, with a fresh count of repeats. */
  async redrive(id: string): Promise<void> {
    checkId(id, deadLetterNotFound);
    const now = this.now;
    const ok = await this.shardOf(id).write(async (tx) => {
      const rows = await tx.all<{ kind: string }>(
        `UPDATE pipe_sessions SET state = 'stored', repeats = 0, due_at = ?, touched_at = ? WHERE id = ? AND state = 'dead' RETURNING kind`,
        [now, now, id],
      );
      if (!rows[0]) return false;
      await this.comeBackIn(tx, id, rows[0].kind, now);
      return true;
    });
    if (!ok) throw deadLetterNotFound(id);
  }

  async deleteDead(id: string): Promise<void> {
    checkId(id, deadLetterNotFound);
    const ok = await this.shardOf(id).write(async (tx) => {
      if ((await tx.run(`DELETE FROM pipe_sessions WHERE id = ? AND state = 'dead'`, [id])) === 0) return false;
      await tx.run('DELETE FROM pipe_records WHERE session_id = ?', [id]);
      return true;
    });
    if (!ok) throw deadLetterNotFound(id);
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
    for (const name of shards) {
      const shard = this.rt.storage.shard(name);
      await shard.write(async (tx) => {
        const rows = await tx.all<{ id: string; kind: string }>(`SELECT id, kind FROM pipe_sessions WHERE owner = ? AND state = 'open'`, [owner]);
        for (const r of rows) await this.unfinishedIn(tx, r.id, r.kind, now, { owner });
        await tx.run('DELETE FROM pipe_owners WHERE owner = ?', [owner]);
      });
    }
  }

  private async beat(): Promise<void> {
    const byShard = new Map<string, string[]>();
    for (const [owner, shards] of this.owners) for (const s of shards) byShard.set(s, [...(byShard.get(s) ?? []), owner]);
    const until = this.now + this.ttlMs;
    for (const [name, owners] of byShard) {
      await this.rt.storage.shard(name).write(async (tx) => {
        for (const o of owners) await tx.run('UPDATE pipe_owners SET alive_until = ? WHERE owner = ?', [until, o]);
      });
    }
  }

  // ---- coming back ----

  /** Sets the session's timer to bring it back at `due` (or parks it if its kind has no handler). */
  private async comeBackIn(tx: Tx, id: string, kind: string, due: number, parkedCleared = false): Promise<void> {
    // Cancel first so the new timer gets a new id: ties in due time go in the order sessions were stored.
    await this.rt.scheduler.cancelIn(tx, timerKey(id));
    if (this.kindConfig(kind)?.handler === undefined) {
      await tx.run('UPDATE pipe_sessions SET parked = 1 WHERE id = ?', [id]);
      return;
    }
    if (!parkedCleared) await tx.run('UPDATE pipe_sessions SET parked = 0 WHERE id = ? AND parked = 1', [id]);
    await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_REDELIVER, due, kind);
  }

  /** An open session's owner went away: stored, due after the kind's default delay. Conditional on what was read. */
  private async unfinishedIn(tx: Tx, id: string, kind: string, now: number, cond: { owner?: string; touchedAt?: number }): Promise<boolean> {
    const delay = (this.kindConfig(kind)?.default_delay_s ?? 10) * 1000;
    const due = Math.floor(now + delay);
    const n = await tx.run(
      `UPDATE pipe_sessions SET state = 'stored', owner = NULL, due_at = ?, touched_at = ? WHERE id = ? AND state = 'open'${cond.owner !== undefined ? ' AND owner = ?' : ''}${cond.touchedAt !== undefined ? ' AND touched_at = ?' : ''}`,
      [due, now, id, ...(cond.owner !== undefined ? [cond.owner] : []), ...(cond.touchedAt !== undefined ? [cond.touchedAt] : [])],
    );
    if (n === 0) return false;
    await this.comeBackIn(tx, id, kind, due);
    return true;
  }

  /** A push failed or its lease ran out: back off, or dead-letter after max_repeats. Conditional on the delivery still being current. */
  private async failedIn(tx: Tx, id: string, kind: string, repeats: number, error: string, now: number, touchedAt?: number): Promise<boolean> {
    const cfg = this.kindConfig(kind);
    const touched = touchedAt === undefined ? '' : ' AND touched_at = ?';
    const extra = touchedAt === undefined ? [] : [touchedAt];
    if (cfg === undefined || repeats >= cfg.max_repeats) {
      const n = await tx.run(
        `UPDATE pipe_sessions SET state = 'dead', owner = NULL, due_at = NULL, last_error = ?, touched_at = ? WHERE id = ? AND state = 'delivering' AND repeats = ?${touched}`,
        [error.slice(0, 2000), now, id, repeats, ...extra],
      );
      if (n > 0) await this.rt.scheduler.cancelIn(tx, timerKey(id));
      return n > 0;
    }
    const backoff = Math.min(cfg.retry_max_s, cfg.retry_base_s * 2 ** Math.min(40, repeats - 1)) * 1000;
    const due = Math.floor(now + backoff);
    const n = await tx.run(
      `UPDATE pipe_sessions SET state = 'stored', owner = NULL, due_at = ?, last_error = ?, touched_at = ? WHERE id = ? AND state = 'delivering' AND repeats = ?${touched}`,
      [due, error.slice(0, 2000), now, id, repeats, ...extra],
    );
    if (n > 0) await this.comeBackIn(tx, id, kind, due);
    return n > 0;
  }

  /** Stored sessions parked for want of a handler get their timers once their kind has one. */
  private async unpark(): Promise<void> {
    const handled = [...this.kindsByName.values()].filter((k) => k.cfg.handler !== undefined && this.kindConfig(k.name) === k.cfg).map((k) => k.name);
    for (const shard of this.rt.storage.shards) {
      for (const kind of handled) {
        for (;;) {
          const rows = await shard.reader.all<{ id: string; due_at: number }>(
            `SELECT id, due_at FROM pipe_sessions WHERE state = 'stored' AND parked = 1 AND kind = ? ORDER BY due_at, id LIMIT 500`,
            [kind],
          );
          if (rows.length === 0) break;
          await shard.write(async (tx) => {
            for (const r of rows) {
              if ((await tx.run(`UPDATE pipe_sessions SET parked = 0 WHERE id = ? AND state = 'stored' AND parked = 1`, [r.id])) === 0) continue;
              await this.rt.scheduler.scheduleIn(tx, timerKey(r.id), TIMER_REDELIVER, Number(r.due_at), kind);
            }
          });
        }
      }
    }
  }

  /** A stored session is due: mark it delivering (with a lease) and push it to its kind's handler. */
  private async onRedeliver(timer: Timer, ctx: TimerContext): Promise<void> {
    const id = idOfTimer(timer);
    const shard = this.shardOf(id);
    // The kind rides in the timer, so the push waits in its kind's line before any I/O: due order is kept.
    const kind = typeof timer.payload === 'string' ? timer.payload : '';
    const cfg = this.kindConfig(kind);
    if (cfg?.handler === undefined) {
      await shard.write(async (tx) => {
        if (await ctx.completeIn(tx)) await tx.run(`UPDATE pipe_sessions SET parked = 1 WHERE id = ? AND state = 'stored'`, [id]);
      });
      return;
    }
    if (this.stopped) throw new RetryTimer(0);
    const sem = this.semaphores.get(kind)!;
    // Wait in line unless the line is long: then leave the scheduler's slots to other kinds.
    if (sem.waiting >= Math.max(64, cfg.concurrency * 4)) throw new RetryTimer(Math.min(1000, this.rt.config.scheduler.poll_ms));
    const release = await sem.acquire();
    if (this.stopped) {
      release();
      throw new RetryTimer(0);
    }
    let delivery: Delivery | null;
    try {
      const now = this.now;
      delivery = await shard.write(async (tx) => {
        // The redelivery timer becomes the delivery's lease timer (one statement; false if this version is gone).
        if (!(await ctx.rescheduleIn(tx, TIMER_LEASE, now + this.ttlMs))) return null;
        const upd = await tx.all<{ repeats: number; kind: string }>(
          `UPDATE pipe_sessions SET state = 'delivering', repeats = repeats + 1, touched_at = ?, due_at = NULL WHERE id = ? AND state = 'stored' RETURNING repeats, kind`,
          [now, id],
        );
        if (!upd[0]) {
          // Not stored (any more): no lease timer may stay behind for it.
          await this.rt.scheduler.cancelIn(tx, timerKey(id));
          return null;
        }
        const recs = await tx.all<{ data: Buffer }>('SELECT data FROM pipe_records WHERE session_id = ? ORDER BY id', [id]);
        return { id, kind: upd[0].kind, repeats: Number(upd[0].repeats), records: recs.map((r) => r.data) };
      });
    } catch (err) {
      release();
      throw err;
    }
    if (delivery === null) {
      release();
      return;
    }
    const d = delivery;
    // The kind's slot is the handler's: it frees once the handler has answered, before the outcome is written.
    const p = this.push(cfg, d, release).finally(() => {
      release();
      this.inFlight.delete(p);
    });
    this.inFlight.add(p);
  }

  private async push(cfg: PipeKindConfig, d: Delivery, answered: () => void): Promise<void> {
    this.stats.pushes++;
    let verdict: PushVerdict | undefined;
    try {
      verdict = await this.pusher(cfg.handler!, cfg, d);
      answered();
    } catch (err) {
      answered();
      this.stats.pushFailures++;
      const message = err instanceof Error ? err.message : String(err);
      this.rt.logger.debug({ session: d.id, kind: d.kind, repeats: d.repeats, err: message }, 'pipe: push failed');
      try {
        await this.shardOf(d.id).write((tx) => this.failedIn(tx, d.id, d.kind, d.repeats, `push failed: ${message}`, this.now));
      } catch (e) {
        // The lease timer brings the session back anyway.
        this.rt.logger.warn({ err: e, session: d.id }, 'pipe: could not record a failed push');
      }
      return;
    }
    if (verdict === undefined) return;
    // The handler finished the session in its answer: one write instead of a call back, and only for this delivery.
    try {
      const op = verdict.action === 'delete' ? { type: 'delete' as const, delivery: d.repeats } : { type: 'store' as const, due: this.dueAfter(verdict.timeoutS), delivery: d.repeats };
      if ((await this.enqueue(d.id, op)) === 'refused') this.rt.logger.debug({ session: d.id, repeats: d.repeats }, 'pipe: handler verdict on a delivery that is no longer current');
    } catch (e) {
      this.rt.logger.warn({ err: e, session: d.id }, 'pipe: could not apply the handler verdict; the lease brings the session back');
    }
  }

  /** The lease of an open or delivering session is up: extend it if its owner is alive, else the session is unfinished. */
  private async onLease(timer: Timer, ctx: TimerContext): Promise<void> {
    const id = idOfTimer(timer);
    const shard = this.shardOf(id);
    await shard.write(async (tx) => {
      if (!(await ctx.completeIn(tx))) return;
      const rows = await tx.all<SessionRow>('SELECT id, kind, state, owner, repeats, touched_at FROM pipe_sessions WHERE id = ?', [id]);
      const s = rows[0];
      if (!s || (s.state !== 'open' && s.state !== 'delivering')) return;
      const now = this.now;
      const touched = Number(s.touched_at);
      if (s.owner !== null) {
        let alive = this.owners.has(s.owner);
        if (!alive) {
          const o = await tx.all<{ alive_until: number }>('SELECT alive_until FROM pipe_owners WHERE owner = ?', [s.owner]);
          alive = o[0] !== undefined && Number(o[0].alive_until) > now;
        }
        if (alive) {
          await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_LEASE, now + this.ttlMs);
          return;
        }
      } else if (touched + this.ttlMs > now) {
        await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_LEASE, touched + this.ttlMs);
        return;
      }
      const done =
        s.state === 'open'
          ? await this.unfinishedIn(tx, id, s.kind, now, s.owner !== null ? { owner: s.owner } : { touchedAt: touched })
          : await this.failedIn(tx, id, s.kind, Number(s.repeats), 'lease expired before the handler finished the session', now, touched);
      // Written to meanwhile: look again after a lease.
      if (!done) await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_LEASE, now + this.ttlMs);
    });
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function checkId(id: string, notFound: (id: string) => MillraceError = sessionNotFound): void {
  if (typeof id !== 'string' || !ID_RE.test(id)) throw notFound(String(id));
}
