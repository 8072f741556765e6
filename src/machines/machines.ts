import { PAUSED_RECHECK_MS, pausesOf, type Pauses } from '../catalog/pauses.js';
import { MillraceError, badRequest, isMillraceError } from '../core/errors.js';
import type { Principal } from '../core/principal.js';
import { sleep } from '../core/clock.js';
import type { Runtime } from '../runtime.js';
import type { Tx } from '../storage/port.js';
import type { AppendResult } from '../log/log.js';
import type { Shard } from '../storage/storage.js';
import { RetryTimer, type Timer, type TimerContext } from '../scheduler/scheduler.js';
import { namespaceSchema, type HistoryRange, type MachinesConfig, type NamespaceConfig } from './config.js';
import { admission, applyFailure, applyPlan, parseRange, planStep, TAG_MAX, type MachineState, type Plan, type StepInput } from './planner.js';
import { childTraceparent, hasProcessor, ProcessorError, processorClient, type ProcessorClient, type ProcessorFn } from './processor.js';
import { MachineQueues } from './queues.js';
import { frozenEvent, MachineCache, rangeSpan, type MachineEvent } from './history-cache.js';
import { endSpan, SpanKind, startSpan, telemetryEnabled, traceparentOf } from '../core/telemetry.js';
import { decodeCursor, encodeCursor, pageLimit, type Page } from '../core/paging.js';
import { SQL } from './machines-sql.js';
import './errors.js';
import './migrations.js';

export type MachineRef = { id: string } | { tag: string };

export interface RequestOptions {
  /** Absolute deadline, ms since the epoch (default: now + the namespace's default timeout). */
  deadline?: number | undefined;
  traceparent?: string | undefined;
  /** Who asked, as established by the transport (for the record; the transport has already authorized the call). */
  principal?: Principal | undefined;
}

export type { MachineEvent } from './history-cache.js';

/** The GET shape, also what the processor receives as `machine`. */
export interface MachineView {
  ns: string;
  id: string;
  status: 'working' | 'failed';
  reason?: unknown;
  aux_state: unknown;
  timer: { due_at: string; range: HistoryRange | null } | null;
  tags: string[];
  history: MachineEvent[];
  history_range: HistoryRange;
  /** Paused, by itself or with its namespace: timers and notifications wait, calls are refused or queued. */
  paused?: boolean;
}

export const TIMEOUT_KIND = 'machines.timeout';
export const NOTIFY_KIND = 'machines.notify';
export const EVENT_TYPE = 'machine.event';
/** Channel on which a node asks the others for a machine's lease (payload: JSON [ns, id, asking node]). */
export const LEASE_CHANNEL = 'millrace_machine_lease';
/** Fastify refuses path parameters longer than 100 characters, so ids and tags stay within that. */
const ID_MAX = 100;
const PRINTABLE = /^[^\x00-\x1f\x7f]+$/;
/** The history range of a namespace that names none: every event. */
const FULL_RANGE: HistoryRange = { direction: 'forward' };

interface Hooks {
  timer?: { ctx: TimerContext; range: HistoryRange | null };
  notification?: { nid: number; args: unknown };
}

interface StepResult {
  skipped?: boolean;
  response?: unknown;
}

interface Row {
  ns: string;
  id: string;
  gen: number;
  status: string;
  reason: string | null;
  aux_state: string | null;
  last_event: number;
  timer: string | null;
  tags: string;
  version: number;
}


const parseJson = (s: string | null): unknown => (s === null ? null : JSON.parse(s));

function toState(r: Row): MachineState {
  return {
    ns: r.ns,
    id: r.id,
    gen: Number(r.gen),
    status: r.status as MachineState['status'],
    reason: parseJson(r.reason),
    auxState: parseJson(r.aux_state),
    lastEvent: Number(r.last_event),
    timer: parseJson(r.timer) as MachineState['timer'],
    tags: JSON.parse(r.tags) as string[],
    version: Number(r.version),
  };
}

interface ListRow {
  id: string;
  status: string;
  reason: string | null;
  last_event: number;
  timer: string | null;
  tags: string;
  updated_at: number;
}

/** One machine in a namespace list. */
export interface MachineSummary {
  id: string;
  status: 'working' | 'failed';
  /** The failure reason as text (JSON when the processor gave a value). */
  reason?: string;
  updated_at: string;
  /** Events in its history. */
  events: number;
  tags: string[];
  timer?: { at: string };
}

function summaryOf(r: ListRow): MachineSummary {
  const out: MachineSummary = {
    id: r.id,
    status: r.status === 'failed' ? 'failed' : 'working',
    updated_at: new Date(Number(r.updated_at)).toISOString(),
    events: Number(r.last_event),
    tags: JSON.parse(r.tags) as string[],
  };
  if (r.status === 'failed') {
    const reason = parseJson(r.reason);
    out.reason = typeof reason === 'string' ? reason : JSON.stringify(reason ?? null);
  }
  const timer = parseJson(r.timer) as MachineState['timer'];
  if (timer) out.timer = { at: new Date(timer.dueAt).toISOString() };
  return out;
}

const emptyState = (ns: string, id: string): MachineState => ({
  ns,
  id,
  gen: 0,
  status: 'none',
  reason: null,
  auxState: null,
  lastEvent: 0,
  timer: null,
  tags: [],
  version: 0,
});

export const streamOf = (ns: string, id: string, gen: number): string => `m/${ns}/${id}/${gen}`;
const timerOwner = (ns: string, id: string): string => `m:${ns}:${id}`;
const notifyOwner = (ns: string, id: string): string => `mn:${ns}:${id}`;

/** Raised inside a commit transaction to roll it back. */
class Abort extends Error {
  constructor(readonly why: 'conflict' | 'timer_gone' | 'tag_taken' | 'notification_gone') {
    super(why);
  }
}

export interface MachinesOptions {
  /** In-process processors by name (besides the global `registerProcessor` registry). */
  processors?: ReadonlyMap<string, ProcessorFn>;
}

/**
 * The machines face: Machinegun-style automata. One step of one machine at a
 * time: an in-process queue per machine, plus (where nodes share a shard) a
 * lease on the machine row. The processor runs outside any transaction; its
 * result is committed atomically with the row, the events, the timer, the tag
 * and the removal, under an optimistic version check.
 */
export class Machines {
  readonly cfg: MachinesConfig;
  private readonly clients = new Map<string, ProcessorClient>();
  /** Namespaces in effect: the config file's, then runtime ones it does not shadow. */
  private readonly namespaces = new Map<string, NamespaceConfig>();

  /** The namespaces in effect (config file and runtime definitions), by name. */
  get namespacesInEffect(): ReadonlyMap<string, NamespaceConfig> {
    return this.namespaces;
  }
  private readonly processors: ReadonlyMap<string, ProcessorFn> | undefined;
  private readonly pauses: Pauses;
  /** Calls waiting for their paused namespace or machine to resume, per namespace. */
  private readonly pausedWaiting = new Map<string, number>();
  private readonly queues: MachineQueues;
  private readonly cache: MachineCache;
  private readonly multiNode: boolean;
  private readonly holder: string;
  /** Machines whose lease a committed step already settled (given up or kept by writeRow): no release transaction needed. */
  private readonly leaseCleared = new Set<string>();
  /** Machines whose lease this node keeps after a committed step, with when it stops counting on it (lease_keep_ms). */
  private readonly kept = new Map<string, number>();
  /** Machines another node asked for: the next commit here gives the lease up instead of keeping it. */
  private readonly wanted = new Set<string>();
  private readonly keepMs: number;
  private readonly unlisten: Array<() => Promise<void>> = [];
  private sweep: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Lease counters for metrics: steps on a kept lease (no round trip), leases taken, asks sent to peers, leases given up to one, leases taken from a node that had ended. */
  readonly leaseStats = { kept: 0, taken: 0, asked: 0, givenUp: 0, fromDead: 0 };
  /** History events handed to steps and GETs from the cache, and read from the log. */
  readonly historyStats = { fromMemory: 0, fromLog: 0 };

  /** Machines in the cache, and the estimated bytes of their history windows. */
  get cacheStats(): { machines: number; bytes: number } {
    return { machines: this.cache.size, bytes: this.cache.bytes };
  }

  constructor(
    readonly rt: Runtime,
    opts: MachinesOptions = {},
  ) {
    this.cfg = rt.config.machines;
    this.processors = opts.processors;
    this.pauses = pausesOf(rt.catalog);
    this.refreshNamespaces();
    rt.catalog.on('machines.namespace', () => this.refreshNamespaces());
    this.queues = new MachineQueues({ queueLimit: this.cfg.queue_limit, maxActive: this.cfg.max_active_machines, memoryLimitMb: this.cfg.memory_limit_mb });
    this.cache = new MachineCache(this.cfg.cache_size, this.cfg.history_cache_mb * 1024 * 1024);
    this.multiNode = rt.storage.shards.some((s) => s.driver.capabilities.multiNode);
    this.holder = rt.config.node_id;
    this.keepMs = this.multiNode ? this.cfg.lease_keep_ms : 0;
  }

  /** Listens for other nodes asking for machines whose lease this node keeps. */
  async open(): Promise<void> {
    if (this.keepMs === 0) return;
    // Forget kept leases that ran out (the rows need nothing: an expired lease is free).
    this.sweep = setInterval(() => {
      const now = this.rt.clock.now();
      for (const [k, until] of this.kept) if (until < now && !this.queues.busy(k)) this.kept.delete(k);
    }, Math.max(1000, this.keepMs));
    this.sweep.unref();
    for (const shard of this.rt.storage.shards) {
      if (!shard.driver.capabilities.multiNode) continue;
      this.unlisten.push(
        await shard.driver.listen(LEASE_CHANNEL, (payload) => {
          try {
            const [ns, id, asker] = JSON.parse(payload) as [string, string, string];
            // Every node hears every ask, its own too.
            if (typeof ns === 'string' && typeof id === 'string' && asker !== this.holder) this.onLeaseWanted(ns, id);
          } catch {
            // Not ours to read.
          }
        }),
      );
    }
  }

  /**
   * Another node wants the machine: a lease kept here after a commit is given
   * up in the machine's turn (so no local step starts half-way through); a
   * running step's commit gives it up instead of keeping it.
   */
  private onLeaseWanted(ns: string, id: string): void {
    const k = key(ns, id);
    const busy = this.queues.busy(k);
    if (!busy && !this.kept.has(k)) return;
    this.wanted.add(k);
    if (busy) return;
    void this.queues
      .run(k, async () => {
        this.wanted.delete(k);
        // A step queued before this turn may have given it up already (or it ran out).
        if (!this.kept.delete(k)) return;
        this.leaseStats.givenUp++;
        await this.releaseLease(ns, id);
      })
      .catch(() => this.wanted.delete(k));
  }

  /**
   * Rebuilds the namespaces in effect. A deleted runtime namespace answers
   * namespace_not_found; its machines keep their rows and history (defining
   * it again brings them back), and their due timers are dropped.
   */
  private refreshNamespaces(): void {
    const next = new Map<string, NamespaceConfig>(Object.entries(this.cfg.namespaces));
    for (const d of this.rt.catalog.list('machines.namespace')) {
      if (next.has(d.name)) continue;
      const parsed = namespaceSchema.safeParse(d.definition);
      if (parsed.success) next.set(d.name, parsed.data);
    }
    for (const ns of [...this.namespaces.keys()]) if (!next.has(ns)) this.namespaces.delete(ns);
    for (const [ns, c] of next) {
      if (this.namespaces.has(ns) && JSON.stringify(this.namespaces.get(ns)) === JSON.stringify(c)) continue;
      this.namespaces.set(ns, c);
      this.clients.set(ns, processorClient(ns, c, this.processors, this.rt.signer));
    }
    for (const ns of [...this.clients.keys()]) if (!next.has(ns)) this.clients.delete(ns);
  }

  /** Whether `processor: {in_process: name}` would find a processor on this node. */
  hasInProcess(name: string): boolean {
    return this.processors?.has(name) === true || hasProcessor(name);
  }

  /** Whether a namespace comes from the config file, was defined at runtime, or does not exist. */
  namespaceSource(ns: string): 'config' | 'runtime' | null {
    if (Object.hasOwn(this.cfg.namespaces, ns)) return 'config';
    return this.namespaces.has(ns) ? 'runtime' : null;
  }

  /** Machines of a namespace in total and failed (console overview). */
  async counts(ns: string): Promise<{ total: number; failed: number }> {
    let total = 0;
    let failed = 0;
    for (const shard of this.rt.storage.shards) {
      const rows = await shard.reader.all<{ status: string; n: number | string }>(SQL.countByStatus, [ns]);
      for (const r of rows) {
        total += Number(r.n);
        if (r.status === 'failed') failed += Number(r.n);
      }
    }
    return { total, failed };
  }

  registerTimers(): void {
    this.rt.scheduler.register(TIMEOUT_KIND, (t, ctx) => this.onTimeout(t, ctx));
    this.rt.scheduler.register(NOTIFY_KIND, (t, ctx) => this.onNotify(t, ctx));
  }

  /** Refuses new steps and gives up the leases kept for machines that are idle here. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweep);
    for (const u of this.unlisten.splice(0)) await u().catch(() => {});
    const idle = [...this.kept.keys()].filter((k) => !this.queues.busy(k));
    for (const k of idle) this.kept.delete(k);
    await Promise.all(
      idle.map((k) => {
        const [ns, id] = unkey(k);
        return this.releaseLease(ns, id).catch(() => {});
      }),
    );
  }

  // ---- public operations ----

  async start(ns: string, id: string, args: unknown, opts: RequestOptions = {}): Promise<{ response: unknown }> {
    const c = this.nsConfig(ns);
    checkId(id);
    const ctx = this.ctx(c, opts);
    await this.admit(ns, id, c, ctx.deadline);
    const r = await this.run(ns, id, { kind: 'signal', signal: { type: 'init', args: args ?? null } }, ctx);
    return { response: r.response ?? null };
  }

  async call(ns: string, ref: MachineRef, args: unknown, opts: RequestOptions = {}): Promise<{ response: unknown }> {
    const c = this.nsConfig(ns);
    const ctx = this.ctx(c, opts);
    const id = await this.resolve(ns, ref);
    await this.admit(ns, id, c, ctx.deadline);
    const r = await this.run(ns, id, { kind: 'call', args: args ?? null }, ctx);
    return { response: r.response ?? null };
  }

  async repair(ns: string, ref: MachineRef, args: unknown, opts: RequestOptions = {}): Promise<{ response: unknown }> {
    const c = this.nsConfig(ns);
    const ctx = this.ctx(c, opts);
    const id = await this.resolve(ns, ref);
    await this.admit(ns, id, c, ctx.deadline);
    const r = await this.run(ns, id, { kind: 'repair', args: args ?? null }, ctx);
    return { response: r.response ?? null };
  }

  /** A failed machine becomes working without asking the processor; its timer resumes. */
  async simpleRepair(ns: string, ref: MachineRef, opts: RequestOptions = {}): Promise<void> {
    const c = this.nsConfig(ns);
    const ctx = this.ctx(c, opts);
    const id = await this.resolve(ns, ref);
    await this.exclusive(ns, id, ctx.deadline, async (state) => {
      const refusal = admission(state, { kind: 'repair', args: null });
      if (refusal !== null) throw this.refusal(refusal, state);
      await this.commit(state, { kind: 'repair', args: null }, { kind: 'commit', events: [], auxState: undefined, timer: 'keep', tag: undefined, remove: false, response: null }, {});
      return {};
    });
  }

  async remove(ns: string, ref: MachineRef, opts: RequestOptions = {}): Promise<void> {
    const c = this.nsConfig(ns);
    const ctx = this.ctx(c, opts);
    const id = await this.resolve(ns, ref);
    await this.exclusive(ns, id, ctx.deadline, async (state) => {
      if (state.status === 'none') throw this.refusal('machine_not_found', state);
      await this.commit(state, { kind: 'call', args: null }, { kind: 'commit', events: [], auxState: undefined, timer: 'unset', tag: undefined, remove: true, response: null }, {});
      return {};
    });
  }

  /**
   * A namespace's machines, failed first (with their reason), then working;
   * by id within each status, across every shard, paged.
   */
  async list(ns: string, opts: { status?: string | undefined; limit?: number | undefined; cursor?: string | undefined } = {}): Promise<Page<MachineSummary>> {
    this.nsConfig(ns);
    const limit = pageLimit(opts.limit);
    if (opts.status !== undefined && opts.status !== 'failed' && opts.status !== 'working') throw badRequest('status must be failed or working');
    const statuses = opts.status === undefined ? ['failed', 'working'] : [opts.status];
    const at = decodeCursor(opts.cursor, (v): v is { p: number; id: string } => {
      const c = v as { p?: unknown; id?: unknown } | null;
      return typeof c === 'object' && c !== null && Number.isInteger(c.p) && (c.p as number) >= 0 && (c.p as number) < statuses.length && typeof c.id === 'string';
    }) ?? { p: 0, id: '' };
    const items: MachineSummary[] = [];
    for (let p = at.p; p < statuses.length; p++) {
      const need = limit - items.length;
      const rows: ListRow[] = [];
      for (const shard of this.rt.storage.shards) {
        rows.push(
          ...(await shard.reader.all<ListRow>(
            SQL.listByStatus,
            [ns, statuses[p], p === at.p ? at.id : '', need + 1],
          )),
        );
      }
      rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      for (const r of rows.slice(0, need)) items.push(summaryOf(r));
      if (rows.length > need) return { items, next_cursor: encodeCursor({ p, id: items[items.length - 1]!.id }) };
      if (items.length === limit && p + 1 < statuses.length) return { items, next_cursor: encodeCursor({ p: p + 1, id: '' }) };
    }
    return { items, next_cursor: null };
  }

  /** Stores a notification for later, ordered delivery as a `notification` signal. */
  async notify(ns: string, ref: MachineRef, args: unknown, opts: { key?: string } = {}): Promise<{ id: number; duplicate?: boolean }> {
    this.nsConfig(ns);
    const id = await this.resolve(ns, ref);
    const shard = this.shardOf(ns, id);
    const argsText = JSON.stringify(args ?? null);
    let duplicate = false;
    const nid = await shard.write(async (tx) => {
      if (opts.key !== undefined) {
        // A key names one notification: given again, the first one's id is the answer and nothing is stored.
        // The key is claimed first, so a concurrent notify with the same key waits for this one and then finds it.
        const claimed = await tx.run('INSERT INTO machine_notification_keys (ns, id, key, nid, created_at) VALUES (?, ?, ?, 0, ?) ON CONFLICT (ns, id, key) DO NOTHING', [
          ns,
          id,
          opts.key,
          this.rt.clock.now(),
        ]);
        if (claimed === 0) {
          const seen = await tx.all<{ nid: number }>('SELECT nid FROM machine_notification_keys WHERE ns = ? AND id = ? AND key = ?', [ns, id, opts.key]);
          tx.onCommit(() => (duplicate = true));
          return Number(seen[0]!.nid);
        }
      }
      const rows = await tx.all<{ gen: number; status: string }>(SQL.genStatus, [ns, id]);
      const m = rows[0];
      if (m === undefined || m.status === 'none') throw new MillraceError('machine_not_found', `no machine ${id} in namespace ${ns}`);
      const ins = await tx.all<{ nid: number }>(SQL.insertNotification, [
        ns,
        id,
        m.gen,
        argsText,
        this.rt.clock.now(),
      ]);
      if (m.status === 'working') await this.rt.scheduler.scheduleIn(tx, notifyOwner(ns, id), NOTIFY_KIND, this.rt.clock.now(), { ns, id });
      if (opts.key !== undefined) await tx.run('UPDATE machine_notification_keys SET nid = ? WHERE ns = ? AND id = ? AND key = ?', [Number(ins[0]!.nid), ns, id, opts.key]);
      return Number(ins[0]!.nid);
    });
    return duplicate ? { id: nid, duplicate } : { id: nid };
  }

  async get(ns: string, ref: MachineRef, range: unknown = {}): Promise<MachineView> {
    this.nsConfig(ns);
    const r = parseRange(range ?? {});
    if (typeof r === 'string') throw badRequest(`history range: ${r}`);
    const id = await this.resolve(ns, ref);
    const k = key(ns, id);
    const state = (this.multiNode ? undefined : this.cache.state(k)) ?? (await this.load(ns, id));
    if (state.status === 'none') throw this.refusal('machine_not_found', state);
    if (r.after !== undefined && r.after > state.lastEvent) {
      throw new MillraceError('event_not_found', `machine ${id} has no event ${r.after}`, { details: { event_id: r.after } });
    }
    return { ...(await this.view(state, r, k, false)), paused: this.pauses.machinePaused(ns, id) };
  }

  /** Whether the namespace is paused. */
  namespacePaused(ns: string): boolean {
    return this.pauses.paused('namespace', ns);
  }

  /** Whether the machine (or its namespace) is paused. */
  paused(ns: string, id: string): boolean {
    return this.pauses.machinePaused(ns, id);
  }

  /**
   * A call to a paused machine (or namespace) is refused with `paused`, or,
   * where the namespace says `pause.calls: queue`, waits for the resume (up
   * to `queue_limit` waiting per namespace on this node, and its deadline).
   */
  private async admit(ns: string, id: string, c: NamespaceConfig, deadline: number): Promise<void> {
    if (!this.pauses.machinePaused(ns, id)) return;
    const what = this.pauses.paused('namespace', ns) ? { kind: 'namespace', name: ns } : { kind: 'machine', name: `${ns}/${id}` };
    if (c.pause.calls === 'refuse') throw new MillraceError('paused', `${what.kind} ${what.name} is paused`, { details: what, retryAfterS: 1 });
    const waiting = this.pausedWaiting.get(ns) ?? 0;
    if (waiting >= c.pause.queue_limit) {
      throw new MillraceError('paused_queue_full', `${what.kind} ${what.name} is paused and ${waiting} calls already wait for it`, { details: { ...what, waiting }, retryAfterS: 1 });
    }
    this.pausedWaiting.set(ns, waiting + 1);
    try {
      while (this.pauses.machinePaused(ns, id)) {
        const left = deadline - this.rt.clock.now();
        if (left <= 0) throw new MillraceError('deadline_exceeded', `${what.kind} ${what.name} stayed paused until the request deadline`, { details: what });
        await this.pauses.changed(Math.min(left, PAUSED_RECHECK_MS));
      }
    } finally {
      const n = (this.pausedWaiting.get(ns) ?? 1) - 1;
      if (n <= 0) this.pausedWaiting.delete(ns);
      else this.pausedWaiting.set(ns, n);
    }
  }

  // ---- steps ----

  private ctx(c: NamespaceConfig, opts: RequestOptions): { deadline: number; traceparent: string } {
    // Traced: the processor call's span is the child (and its traceparent is what the processor gets).
    const traceparent = telemetryEnabled() && opts.traceparent !== undefined ? opts.traceparent : childTraceparent(opts.traceparent);
    return { deadline: opts.deadline ?? this.rt.clock.now() + c.default_timeout_ms, traceparent };
  }

  nsConfig(ns: string): NamespaceConfig {
    const c = this.namespaces.get(ns);
    if (c === undefined) throw new MillraceError('namespace_not_found', `no namespace "${ns}"`, { details: { ns } });
    return c;
  }

  shardOf(ns: string, id: string): Shard {
    return this.rt.storage.shardFor([ns, id]);
  }

  private tagShard(ns: string, tag: string): Shard {
    return this.rt.storage.shardFor([ns, 'tag', tag]);
  }

  /** Runs one processor step for the machine, in its turn. */
  private run(ns: string, id: string, input: StepInput, ctx: { deadline: number; traceparent: string }, hooks: Hooks = {}): Promise<StepResult> {
    return this.exclusive(ns, id, ctx.deadline, (state) => this.step(state, input, ctx, hooks), input.kind === 'signal' && input.signal.type === 'init');
  }

  /** Runs `fn` on the machine's state while holding its queue turn (and, across nodes, its lease). */
  private exclusive<T>(ns: string, id: string, deadline: number, fn: (state: MachineState) => Promise<T>, starting = false): Promise<T> {
    if (this.stopped) return Promise.reject(new MillraceError('shutting_down', 'the node is stopping', { retryAfterS: 1 }));
    const k = key(ns, id);
    const waitMs = deadline - this.rt.clock.now();
    return this.queues.run(k, async () => {
      if (this.rt.clock.now() >= deadline) throw new MillraceError('deadline_exceeded', 'the request deadline passed before the machine could be processed');
      const state = await this.acquire(ns, id, deadline, starting);
      if (!this.multiNode) return fn(state);
      this.leaseCleared.delete(k);
      // The lease of a running step reaches at most one role lease (plus the margin) ahead, so a node
      // that freezes mid-step holds the machine that long, not until the request's deadline; while
      // the step runs, it is extended every half role lease (a lease kept from the last commit too).
      const renew = setInterval(() => {
        const shard = this.shardOf(ns, id);
        const params = [this.stepLeaseEnd(deadline), ns, id, this.holder];
        void (shard.driver.relaxed ? shard.driver.relaxed.run(SQL.renewLease, params) : shard.write((tx) => tx.run(SQL.renewLease, params))).catch(() => {});
      }, Math.max(50, Math.min(this.rt.config.cluster.role_lease_ms / 2, Math.max(0, (this.kept.get(k) ?? Infinity) - this.rt.clock.now() - 100))));
      try {
        return await fn(state);
      } finally {
        clearInterval(renew);
        // A step that committed settled the lease in its own transaction; otherwise give it up here.
        if (!this.leaseCleared.delete(k)) {
          this.kept.delete(k);
          this.wanted.delete(k);
          await this.releaseLease(ns, id).catch(() => {});
        } else if (this.wanted.has(k) && this.kept.has(k)) {
          // Asked for after this step's commit had kept the lease: give it up before the next turn.
          this.wanted.delete(k);
          this.kept.delete(k);
          this.leaseStats.givenUp++;
          await this.releaseLease(ns, id).catch(() => {});
        }
      }
    }, waitMs);
  }

  private async step(state: MachineState, input: StepInput, ctx: { deadline: number; traceparent: string }, hooks: Hooks): Promise<StepResult> {
    const refusal = admission(state, input);
    if (refusal === 'skip') return { skipped: true };
    if (refusal !== null) throw this.refusal(refusal, state);
    if (hooks.timer && state.timer === null) return { skipped: true };
    const c = this.nsConfig(state.ns);
    const range = hooks.timer?.range ?? c.history_range ?? { direction: 'forward' as const };
    const starting = input.kind === 'signal' && input.signal.type === 'init';
    const machine = starting
      ? { ...(await this.view({ ...state, status: 'working', lastEvent: 0, auxState: null, timer: null, tags: [] }, range, undefined, false)), id: state.id }
      : await this.view(state, range, key(state.ns, state.id), true);
    const request = { ...input, machine } as Parameters<ProcessorClient['process']>[0];
    let result: unknown;
    try {
      result = await this.callProcessor(state.ns, request, ctx, c);
    } catch (err) {
      if (err instanceof ProcessorError && !err.transient) {
        if (input.kind === 'repair') throw new MillraceError('repair_failed', `the repair failed: ${err.message}`, { details: { reason: err.reason } });
        await this.commitFailure(state, input, err.reason, hooks);
        throw this.failedError(state.id, err.reason);
      }
      throw err;
    }
    const base = hooks.timer ? { ...state, timer: null } : state;
    const plan = planStep(base, input, result, this.rt.clock.now());
    if (plan.kind === 'repair_failed') throw new MillraceError('repair_failed', 'the processor refused the repair', { details: { reason: plan.reason } });
    if (plan.kind === 'fail') {
      if (input.kind === 'repair') throw new MillraceError('repair_failed', 'the repair answered a bad result', { details: { reason: plan.reason } });
      await this.commitFailure(state, input, plan.reason, hooks);
      throw this.failedError(state.id, plan.reason);
    }
    try {
      await this.commit(base, input, plan, hooks);
    } catch (err) {
      if (err instanceof Abort && err.why === 'tag_taken') {
        const reason = { code: 'tag_already_taken', tag: plan.tag };
        if (input.kind === 'repair') throw new MillraceError('repair_failed', 'the repair asked for a tag another machine holds', { details: { reason } });
        await this.commitFailure(state, input, reason, hooks);
        throw this.failedError(state.id, reason);
      }
      throw err;
    }
    return { response: plan.response };
  }

  private failedError(id: string, reason: unknown): MillraceError {
    return new MillraceError('machine_failed', `machine ${id} failed`, { details: { reason } });
  }

  private refusal(code: string, state: MachineState): MillraceError {
    switch (code) {
      case 'machine_not_found':
        return new MillraceError(code, `no machine ${state.id} in namespace ${state.ns}`);
      case 'machine_already_exists':
        return new MillraceError(code, `machine ${state.id} already exists in namespace ${state.ns}`);
      case 'machine_failed':
        return new MillraceError(code, `machine ${state.id} is failed; repair it first`, { details: { reason: state.reason } });
      case 'machine_already_working':
        return new MillraceError(code, `machine ${state.id} is working; only a failed machine can be repaired`);
      default:
        return new MillraceError('internal', code);
    }
  }

  /** Asks the processor, retrying transient failures with backoff inside the deadline. */
  private async callProcessor(ns: string, request: Parameters<ProcessorClient['process']>[0], ctx: { deadline: number; traceparent: string }, c: NamespaceConfig): Promise<unknown> {
    const client = this.clients.get(ns)!;
    let attempt = 0;
    let lastTransient: { err: ProcessorError; delay: number } | undefined;
    for (;;) {
      const left = ctx.deadline - this.rt.clock.now();
      if (left <= 0) {
        // After a transient failure the cause is the processor, even when the back-off sleep ran late past the deadline.
        if (lastTransient !== undefined) throw this.processorUnavailable(lastTransient.err, lastTransient.delay);
        throw new MillraceError('deadline_exceeded', 'the request deadline passed before the processor answered');
      }
      try {
        // The abort signal (a timer) is made only if the processor asks for it: in-process processors mostly do not.
        let signal: AbortSignal | undefined;
        const clock = this.rt.clock;
        const span = startSpan('millrace.processor.call', ctx.traceparent, SpanKind.CLIENT, { 'millrace.namespace': ns, 'millrace.attempt': attempt + 1 });
        const pctx = {
          deadline: ctx.deadline,
          traceparent: span === undefined ? ctx.traceparent : traceparentOf(span),
          get signal(): AbortSignal {
            return (signal ??= AbortSignal.timeout(Math.max(0, ctx.deadline - clock.now())));
          },
        };
        try {
          const r = await client.process(request, pctx);
          endSpan(span);
          return r;
        } catch (err) {
          endSpan(span, err);
          throw err;
        }
      } catch (err) {
        if (!(err instanceof ProcessorError) || !err.transient) throw err;
        const delay = Math.min(c.retry.max_ms, c.retry.base_ms * 2 ** Math.min(attempt++, 20));
        const after = ctx.deadline - this.rt.clock.now();
        if (err.timedOut || after <= 0) throw new MillraceError('deadline_exceeded', `the processor did not answer before the deadline (${err.message})`, { details: { reason: err.reason } });
        if (delay >= after || this.stopped) throw this.processorUnavailable(err, delay);
        lastTransient = { err, delay };
        await sleep(delay);
      }
    }
  }

  private processorUnavailable(err: ProcessorError, delay: number): MillraceError {
    return new MillraceError('unavailable', `the processor is unavailable: ${err.message}`, { details: { reason: err.reason }, retryAfterS: Math.max(1, Math.ceil(delay / 1000)) });
  }

  // ---- state, lease and cache ----

  private async load(ns: string, id: string): Promise<MachineState> {
    const rows = await this.shardOf(ns, id).reader.all<Row>(SQL.getRow, [ns, id]);
    return rows[0] ? toState(rows[0]) : emptyState(ns, id);
  }

  /** The machine's state for a step: from the cache on a single node, or with the lease across nodes. */
  private async acquire(ns: string, id: string, deadline: number, starting: boolean): Promise<MachineState> {
    const k = key(ns, id);
    if (!this.multiNode) {
      const hit = this.cache.state(k);
      if (hit) return hit;
      const state = await this.load(ns, id);
      this.cache.put(k, state);
      return state;
    }
    const kept = this.kept.get(k);
    if (kept !== undefined) {
      // Still ours for a while (kept at the last commit, nobody asked for it): no round trip.
      const hit = this.cache.state(k);
      if (hit && !this.wanted.has(k) && kept - this.rt.clock.now() >= this.keepMs / 2) {
        this.leaseStats.kept++;
        return hit;
      }
      this.kept.delete(k);
    }
    const shard = this.shardOf(ns, id);
    let attempt = 0;
    for (;;) {
      const now = this.rt.clock.now();
      const sql = SQL.takeLease;
      const params = [this.holder, this.stepLeaseEnd(deadline), ns, id, now, this.holder];
      // The lease need not wait for a group commit's flush: lost in a database
      // crash, it only frees early, and the step's commit checks the version.
      const relaxed = shard.driver.relaxed;
      let rows = relaxed ? await relaxed.all<Row>(sql, params) : await shard.write((tx) => tx.all<Row>(sql, params));
      if (!rows[0] && attempt % 6 === 1) rows = await this.takeFromDeadNode(shard, ns, id, deadline);
      if (rows[0]) {
        this.leaseStats.taken++;
        const state = toState(rows[0]);
        // The row the lease returns is the truth: a cached window survives only if it belongs to the same
        // generation and ends at or before its last event (events another node committed since are read).
        this.cache.put(k, state);
        return state;
      }
      const exists = await shard.reader.all<{ n: number }>(SQL.exists, [ns, id]);
      if (exists.length === 0) {
        if (!starting) return emptyState(ns, id);
        await shard.write((tx) =>
          tx.run(
            SQL.insertEmpty,
            [ns, id, now],
          ),
        );
        continue;
      }
      // Held by another node: ask it to give the lease up (it may only be keeping it), then again now and then.
      if (attempt % 6 === 0) {
        this.leaseStats.asked++;
        void shard.driver.notify(LEASE_CHANNEL, JSON.stringify([ns, id, this.holder])).catch(() => {});
      }
      const delay = Math.min(500, 5 * 2 ** Math.min(attempt++, 10));
      if (this.rt.clock.now() + delay >= deadline) throw new MillraceError('unavailable', `machine ${id} is being processed by another node`, { retryAfterS: 1 });
      await sleep(delay);
    }
  }

  /** When the lease of a step that runs now ends: one role lease ahead at most, never past the deadline, plus the margin. */
  private stepLeaseEnd(deadline: number): number {
    return Math.min(deadline, this.rt.clock.now() + this.rt.config.cluster.role_lease_ms) + this.cfg.lease_margin_ms;
  }

  /**
   * The lease is held by another node: if that node's process has ended (a
   * killed node's node claim is gone with its session), take the lease now
   * instead of waiting out its keep and margin. Safe even if the node were
   * only cut off: a step commits only against the version it read.
   */
  private async takeFromDeadNode(shard: Shard, ns: string, id: string, deadline: number): Promise<Row[]> {
    const [row] = await shard.reader.all<{ lease_holder: string | null }>(SQL.leaseHolder, [ns, id]);
    const holder = row?.lease_holder;
    if (holder === null || holder === undefined || holder === this.holder) return [];
    if ((await this.rt.nodeAlive(holder)) !== false) return [];
    const params = [this.holder, this.stepLeaseEnd(deadline), ns, id, holder];
    const relaxed = shard.driver.relaxed;
    const rows = relaxed ? await relaxed.all<Row>(SQL.takeDeadLease, params) : await shard.write((tx) => tx.all<Row>(SQL.takeDeadLease, params));
    if (rows[0]) this.leaseStats.fromDead++;
    return rows;
  }

  private async releaseLease(ns: string, id: string): Promise<void> {
    const shard = this.shardOf(ns, id);
    const sql = SQL.releaseLease;
    const params = [ns, id, this.holder];
    if (shard.driver.relaxed) await shard.driver.relaxed.run(sql, params);
    else await shard.write((tx) => tx.run(sql, params));
  }

  // ---- commit ----

  private async commitFailure(state: MachineState, input: StepInput, reason: unknown, hooks: Hooks): Promise<void> {
    const starting = input.kind === 'signal' && input.signal.type === 'init';
    const next = applyFailure(state, reason, { starting });
    const shard = this.shardOf(state.ns, state.id);
    try {
      await shard.write(async (tx) => {
        if (hooks.timer && !(await hooks.timer.ctx.completeIn(tx))) throw new Abort('timer_gone');
        await this.writeRow(tx, state, next);
        await this.rt.scheduler.cancelIn(tx, timerOwner(state.ns, state.id));
        await this.rt.scheduler.cancelIn(tx, notifyOwner(state.ns, state.id));
      });
    } catch (err) {
      throw this.commitError(err, state);
    }
    // A new generation (a start that failed) leaves the old window behind.
    this.cache.put(key(state.ns, state.id), next);
  }

  private commitError(err: unknown, state: MachineState): unknown {
    this.cache.delete(key(state.ns, state.id));
    if (err instanceof Abort) {
      if (err.why === 'tag_taken') return err;
      return new MillraceError('unavailable', `machine ${state.id} changed while it was processed (${err.why}); retry`, { retryAfterS: 1 });
    }
    if (isMillraceError(err, 'stream_conflict')) return new MillraceError('unavailable', `machine ${state.id} changed while it was processed; retry`, { retryAfterS: 1 });
    return err;
  }

  private async writeRow(tx: Tx, prev: MachineState, next: MachineState): Promise<void> {
    const update = await this.rowUpdate(tx, prev, next);
    if ((await tx.run(update.sql, update.params)) !== 1) throw new Abort('conflict');
    update.settle();
  }

  /**
   * The statement that writes a step's row (inserting the empty row first
   * for a new machine), and what to do once it changed the row: across
   * nodes, note that the lease is settled (given up, or kept for
   * lease_keep_ms unless another node asked for the machine).
   */
  private async rowUpdate(tx: Tx, prev: MachineState, next: MachineState): Promise<{ sql: string; params: unknown[]; settle: () => void }> {
    const now = this.rt.clock.now();
    if (prev.version === 0) await tx.run(SQL.insertEmpty, [prev.ns, prev.id, now]);
    const k = key(prev.ns, prev.id);
    const keep = this.keepMs > 0 && !this.stopped && !this.wanted.has(k);
    const params = [
      next.gen,
      next.status,
      next.reason === null || next.reason === undefined ? null : JSON.stringify(next.reason),
      next.auxState === undefined ? null : JSON.stringify(next.auxState),
      next.lastEvent,
      next.timer === null ? null : JSON.stringify(next.timer),
      JSON.stringify(next.tags),
      next.version,
      keep ? this.holder : null,
      keep ? now + this.keepMs + this.cfg.lease_margin_ms : null,
      now,
      prev.ns,
      prev.id,
      prev.version,
    ];
    const settle = (): void => {
      if (!this.multiNode) return;
      tx.onCommit(() => {
        this.leaseCleared.add(k);
        if (keep) this.kept.set(k, now + this.keepMs);
        else {
          this.kept.delete(k);
          if (this.wanted.delete(k)) this.leaseStats.givenUp++;
        }
      });
    };
    return { sql: SQL.updateRow, params, settle };
  }

  /** Commits a plan: row, events, timer, tag, removal and notification bookkeeping in one transaction. */
  private async commit(state: MachineState, input: StepInput, plan: Extract<Plan, { kind: 'commit' }>, hooks: Hooks): Promise<void> {
    const { ns, id } = state;
    const starting = input.kind === 'signal' && input.signal.type === 'init';
    const next = applyPlan(state, plan, { starting });
    const shard = this.shardOf(ns, id);
    const tagShard = plan.tag === undefined ? undefined : this.tagShard(ns, plan.tag);
    if (plan.tag !== undefined && tagShard!.base !== shard.base) {
      // Tags of another shard are reserved first; a reservation whose step did not commit is recognised as stale.
      if (!(await tagShard!.write((tx) => this.claimTagIn(tx, ns, plan.tag!, id, next.gen, shard)))) throw new Abort('tag_taken');
    }
    const resumed = state.status === 'failed' && next.status === 'working';
    let createdAt = this.rt.clock.now();
    let appended: AppendResult | undefined;
    try {
      await shard.write(async (tx) => {
        if (hooks.timer && !(await hooks.timer.ctx.completeIn(tx))) throw new Abort('timer_gone');
        if (hooks.notification) {
          const n = await tx.run(SQL.deleteNotification, [hooks.notification.nid]);
          if (n !== 1) throw new Abort('notification_gone');
        }
        if (plan.events.length > 0) {
          // The row and the events in one statement where the dialect allows it.
          const update = await this.rowUpdate(tx, state, next);
          const r = await this.rt.log.appendGuarded(
            tx,
            shard,
            streamOf(ns, id, next.gen),
            plan.events.map((data) => ({ type: EVENT_TYPE, data, meta: { ns, id, gen: next.gen } })),
            update,
            { expectedSeq: starting ? 0 : state.lastEvent },
          );
          if (r === null) throw new Abort('conflict');
          update.settle();
          createdAt = r.createdAt;
          appended = r;
        } else await this.writeRow(tx, state, next);
        if (plan.tag !== undefined && tagShard!.base === shard.base && !(await this.claimTagIn(tx, ns, plan.tag, id, next.gen, shard))) throw new Abort('tag_taken');
        if (plan.remove) {
          await this.rt.scheduler.cancelIn(tx, timerOwner(ns, id));
          await this.rt.scheduler.cancelIn(tx, notifyOwner(ns, id));
          await tx.run(SQL.deleteNotifications, [ns, id]);
          for (const t of state.tags) if (this.tagShard(ns, t).base === shard.base) await tx.run(SQL.deleteTag, [ns, t, id]);
          return;
        }
        if (plan.timer !== 'keep' || resumed || starting || hooks.timer) {
          if (next.timer) await this.rt.scheduler.scheduleIn(tx, timerOwner(ns, id), TIMEOUT_KIND, next.timer.dueAt, { ns, id, gen: next.gen, range: next.timer.range });
          else if (!hooks.timer) await this.rt.scheduler.cancelIn(tx, timerOwner(ns, id));
        }
        if (resumed) {
          const pending = await tx.all<{ nid: number }>(SQL.firstNotificationNid, [ns, id]);
          if (pending.length > 0) await this.rt.scheduler.scheduleIn(tx, notifyOwner(ns, id), NOTIFY_KIND, this.rt.clock.now(), { ns, id });
        }
      });
    } catch (err) {
      throw this.commitError(err, state);
    }
    // The sink sees the events before the caller gets its answer (PostgreSQL numbers them after commit).
    if (appended && this.nsConfig(ns).sink !== undefined) await this.rt.log.positions(appended).catch(() => {});
    if (plan.remove) {
      for (const t of state.tags) {
        const ts = this.tagShard(ns, t);
        if (ts.base !== shard.base) await ts.write((tx) => tx.run(SQL.deleteTag, [ns, t, id])).catch(() => {});
      }
    }
    // The cache follows the commit only once it is durable (a failed commit dropped the machine's entry above).
    const k = key(ns, id);
    this.cache.put(k, next);
    if (this.cache.keepsEvents && plan.events.length > 0 && !plan.remove) {
      // The events as a read gives them back: their stored JSON text, parsed.
      const at = new Date(createdAt).toISOString();
      const first = (starting ? 0 : state.lastEvent) + 1;
      const events: MachineEvent[] = [];
      const sizes: number[] = [];
      for (let i = 0; i < plan.events.length; i++) {
        const data = plan.events[i];
        const f = frozenEvent(first + i, at, data === undefined ? 'null' : JSON.stringify(data));
        events.push(f.event);
        sizes.push(f.bytes);
      }
      this.cache.add(k, next, first, events, sizes);
    }
    // Keep what the namespace's next step asks for (nothing if the namespace was deleted meanwhile).
    const nsc = this.namespaces.get(ns);
    this.cache.retain(k, nsc === undefined ? null : rangeSpan(next.lastEvent, nsc.history_range ?? FULL_RANGE));
  }

  /** Claims a tag for (id, gen) on the tag's shard; false if a live machine holds it. */
  private async claimTagIn(tx: Tx, ns: string, tag: string, id: string, gen: number, machineShard: Shard): Promise<boolean> {
    await tx.run(SQL.insertTag, [ns, tag, id, gen]);
    const rows = await tx.all<{ id: string; gen: number }>(SQL.getTag, [ns, tag]);
    const holder = rows[0]!;
    if (holder.id === id && Number(holder.gen) === gen) return true;
    if (holder.id !== id) {
      const hs = this.shardOf(ns, holder.id);
      const q = hs.base === machineShard.base ? tx : hs.reader;
      const h = await q.all<{ gen: number; status: string; tags: string }>(SQL.holderOfTag, [ns, holder.id]);
      const live = h[0] && h[0].status !== 'none' && Number(h[0].gen) === Number(holder.gen) && (JSON.parse(h[0].tags) as string[]).includes(tag);
      if (live) return false;
    }
    await tx.run(SQL.moveTag, [id, gen, ns, tag]);
    return true;
  }

  /** The machine id a reference names. */
  async resolve(ns: string, ref: MachineRef): Promise<string> {
    if ('id' in ref) {
      checkId(ref.id);
      return ref.id;
    }
    const tag = ref.tag;
    if (typeof tag !== 'string' || tag.length === 0 || tag.length > TAG_MAX || !PRINTABLE.test(tag)) throw badRequest(`tag must be 1-${TAG_MAX} printable characters`);
    const rows = await this.tagShard(ns, tag).reader.all<{ id: string; gen: number }>(SQL.getTag, [ns, tag]);
    const holder = rows[0];
    if (holder) {
      const state = await this.load(ns, holder.id);
      if (state.status !== 'none' && state.gen === Number(holder.gen) && state.tags.includes(tag)) return holder.id;
    }
    throw new MillraceError('machine_not_found', `no machine holds tag "${tag}" in namespace ${ns}`, { details: { tag } });
  }

  // ---- views ----

  /**
   * What the processor (or a GET) sees of a machine. The history comes from
   * the cached window where it covers the range, and the log for the rest;
   * a step (`store`, in the machine's turn) keeps what it read.
   */
  private async view(state: MachineState, range: HistoryRange, k: string | undefined, store: boolean): Promise<MachineView> {
    const span = rangeSpan(state.lastEvent, range);
    const history = span === null ? [] : await this.history(state, span, range.direction === 'backward', k, store);
    const v: MachineView = {
      ns: state.ns,
      id: state.id,
      status: state.status === 'failed' ? 'failed' : 'working',
      aux_state: state.auxState ?? null,
      timer: state.timer ? { due_at: new Date(state.timer.dueAt).toISOString(), range: state.timer.range } : null,
      tags: state.tags,
      history,
      history_range: range,
    };
    if (state.status === 'failed') v.reason = state.reason;
    return v;
  }

  private async history(state: MachineState, span: { lo: number; hi: number }, backward: boolean, k: string | undefined, store: boolean): Promise<MachineEvent[]> {
    // Taken at once: commits of other steps change the window, never this slice.
    const hit = k === undefined ? undefined : this.cache.slice(k, state, span.lo, span.hi);
    let events: MachineEvent[];
    if (hit === undefined) events = await this.readEvents(state, span.lo, span.hi, k, store);
    else {
      const to = hit.from + hit.events.length - 1;
      const before = hit.from > span.lo ? await this.readEvents(state, span.lo, hit.from - 1, k, store) : [];
      const after = to < span.hi ? await this.readEvents(state, to + 1, span.hi, k, store) : [];
      events = before.length === 0 && after.length === 0 ? hit.events : before.concat(hit.events, after);
    }
    this.historyStats.fromMemory += hit?.events.length ?? 0;
    if (backward) events.reverse();
    return events;
  }

  /** Events lo..hi of the machine's generation from the log (kept in its window when `store`). */
  private async readEvents(state: MachineState, lo: number, hi: number, k: string | undefined, store: boolean): Promise<MachineEvent[]> {
    const rows = await this.rt.log.read(streamOf(state.ns, state.id, state.gen), { after: lo - 1, limit: hi - lo + 1, direction: 'forward' }, [state.ns, state.id]);
    const events: MachineEvent[] = [];
    const sizes: number[] = [];
    this.historyStats.fromLog += rows.length;
    for (const e of rows) {
      const f = frozenEvent(Number(e.seq), new Date(Number(e.createdAt)).toISOString(), e.data);
      events.push(f.event);
      sizes.push(f.bytes);
    }
    if (store && k !== undefined && this.cache.keepsEvents && rows.length === hi - lo + 1 && Number(rows[0]!.seq) === lo) this.cache.add(k, state, lo, events, sizes);
    return events;
  }

  // ---- timers and notifications ----

  private async onTimeout(timer: Timer, tctx: TimerContext): Promise<void> {
    const p = timer.payload as { ns: string; id: string; gen: number; range: HistoryRange | null };
    const c = this.namespaces.get(p.ns);
    if (c === undefined) return;
    // Paused: the timeout waits (the timer stays, looked at again shortly).
    if (this.pauses.machinePaused(p.ns, p.id)) throw new RetryTimer(PAUSED_RECHECK_MS);
    const ctx = { deadline: this.rt.clock.now() + c.default_timeout_ms, traceparent: childTraceparent(undefined) };
    try {
      await this.run(p.ns, p.id, { kind: 'signal', signal: { type: 'timeout' } }, ctx, { timer: { ctx: tctx, range: p.range } });
    } catch (err) {
      if (!isMillraceError(err) || !err.retryable) return; // machine_failed and the like: already recorded
      if (timer.attempts >= c.retry.timer_max_attempts) {
        const state = await this.load(p.ns, p.id);
        if (state.status !== 'working' || state.gen !== p.gen) return;
        await this.exclusive(p.ns, p.id, this.rt.clock.now() + c.default_timeout_ms, async (s) => {
          if (s.status !== 'working' || s.gen !== p.gen) return;
          await this.commitFailure(s, { kind: 'signal', signal: { type: 'timeout' } }, { code: 'timer_retries_exhausted', message: err.message }, { timer: { ctx: tctx, range: null } });
        }).catch(() => {});
        return;
      }
      throw new RetryTimer(Math.min(c.retry.max_ms, c.retry.base_ms * 2 ** Math.min(timer.attempts, 20)));
    }
  }

  private async onNotify(timer: Timer, _tctx: TimerContext): Promise<void> {
    const p = timer.payload as { ns: string; id: string };
    const c = this.namespaces.get(p.ns);
    if (c === undefined) return;
    // Paused: notifications stay stored and wait.
    if (this.pauses.machinePaused(p.ns, p.id)) throw new RetryTimer(PAUSED_RECHECK_MS);
    const shard = this.shardOf(p.ns, p.id);
    for (;;) {
      if (this.stopped) throw new RetryTimer(100);
      const rows = await shard.reader.all<{ nid: number; gen: number; args: string }>(
        SQL.firstNotification,
        [p.ns, p.id],
      );
      const n = rows[0];
      if (n === undefined) return;
      const args = JSON.parse(n.args) as unknown;
      const ctx = { deadline: this.rt.clock.now() + c.default_timeout_ms, traceparent: childTraceparent(undefined) };
      let r: StepResult;
      try {
        r = await this.run(p.ns, p.id, { kind: 'signal', signal: { type: 'notification', args } }, ctx, { notification: { nid: Number(n.nid), args } });
      } catch (err) {
        if (isMillraceError(err) && err.retryable) {
          throw new RetryTimer(Math.min(this.cfg.notification_retry_max_ms, this.cfg.notification_retry_base_ms * 2 ** Math.min(timer.attempts - 1, 20)));
        }
        return; // the machine failed (or is gone): delivery waits for a repair
      }
      if (r.skipped) {
        const st = await this.load(p.ns, p.id);
        if (st.status === 'none') await shard.write((tx) => tx.run(SQL.deleteNotifications, [p.ns, p.id]));
        return;
      }
    }
  }
}

function key(ns: string, id: string): string {
  return `${ns}\u0000${id}`;
}

function unkey(k: string): [string, string] {
  const at = k.indexOf('\u0000');
  return [k.slice(0, at), k.slice(at + 1)];
}

export function checkId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || id.length === 0 || id.length > ID_MAX || !PRINTABLE.test(id)) throw badRequest(`machine id must be 1-${ID_MAX} printable characters`);
}
