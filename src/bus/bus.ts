import { PAUSED_RECHECK_MS, pausesOf, type Pauses } from '../catalog/pauses.js';
import { randomUUID } from 'node:crypto';
import { MillraceError, badRequest } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { Shard } from '../storage/storage.js';
import type { BusConfig } from './config.js';
import { DeliverySession, type DeliverySink } from './delivery.js';
import { Publisher, topicStream, validateEvents, type Published, type PublishEvent } from './publisher.js';
import {
  buildSubscriptionConfig,
  parseStart,
  SUBSCRIPTION_NAME,
  type GapNotice,
  type StartSpec,
  type SubscriptionConfig,
  type TopicEvent,
} from './subscription.js';
import { decodeCursor, encodeCursor, pageLimit, type Page } from '../core/paging.js';
import { SQL } from './bus-sql.js';
import { importHorizon, readShardGates } from './split-gate.js';

export interface SubscriptionInfo {
  name: string;
  config: SubscriptionConfig;
  /** Acked position per shard. */
  positions: Record<string, number>;
  /** Events of the subscription's own topics per shard between the acked position and the head (filters aside). */
  lag: Record<string, number>;
  /** The sum of `lag` over the shards. */
  lag_total: number;
  connected: boolean;
  /** Paused: no new event is delivered until it resumes; its position is kept. */
  paused: boolean;
  dead_letter_topic: string | null;
  created_at: number;
  updated_at: number;
}

/** How long a connection waits for this node's previous connection of the same subscription to finish closing. */
const RECONNECT_GRACE_MS = 1000;
const PRUNE_TIMER = 'bus.dedupe_prune';

/** A stored event of a topic, as the topic browser shows it. */
export interface BrowsedEvent {
  shard: string;
  pos: number;
  topic: string;
  key: string;
  id: string | null;
  type: string;
  headers: Record<string, string>;
  data: unknown;
  created_at: string;
}

/**
 * The bus face's logic, free of transports: publishing with dedupe, named
 * subscriptions stored in the database (config on a home shard, one cursor
 * per shard), and live delivery sessions guarded by a lease so that one
 * connection per subscription exists cluster-wide.
 */
export class Bus {
  readonly config: BusConfig;
  /** How long a live connection holds its subscription without renewing (bus.lease_ms, else cluster.role_lease_ms). */
  private readonly leaseMs: number;
  /** Topics of the config file and of runtime definitions (updated in place as definitions change). */
  readonly topics: Set<string>;
  readonly publisher: Publisher;
  private readonly sessions = new Map<string, DeliverySession>();
  /** Per subscription with a session on this node: settles once that session has closed and released its lease. */
  private readonly ended = new Map<string, Promise<void>>();
  private stopped = false;

  private readonly pauses: Pauses;

  constructor(readonly rt: Runtime) {
    this.pauses = pausesOf(rt.catalog);
    this.config = rt.config.bus;
    this.leaseMs = this.config.lease_ms ?? rt.config.cluster.role_lease_ms;
    this.topics = new Set(this.config.topics);
    this.refreshTopics();
    rt.catalog.on('bus.topic', () => this.refreshTopics());
    this.publisher = new Publisher(
      rt.log,
      rt.clock,
      this.config.dedupe_window_ms,
      rt.config.cluster.publish_deadline_ms,
    );
  }

  /**
   * Deleting a runtime topic refuses new publishes with topic_not_found;
   * its events and the subscriptions naming it stay.
   */
  /** The bus config with the topics in effect (config and runtime). */
  private get liveConfig(): BusConfig {
    return { ...this.config, topics: [...this.topics] };
  }

  private refreshTopics(): void {
    const next = new Set([...this.config.topics, ...this.rt.catalog.list('bus.topic').map((d) => d.name)]);
    for (const t of [...this.topics]) if (!next.has(t)) this.topics.delete(t);
    for (const t of next) this.topics.add(t);
  }

  async start(): Promise<void> {
    this.stopped = false;
    // Leases left by a previous run of this node (any node, single-process) are stale.
    for (const s of this.rt.storage.shards) {
      if (s.driver.capabilities.multiNode) {
        await s.write((tx) => tx.run(SQL.dropNodeSubLeases, [`${this.rt.config.node_id}/%`]));
      } else await s.write((tx) => tx.run(SQL.dropAllSubLeases));
    }
    await this.rt.scheduler.periodic(PRUNE_TIMER, this.config.dedupe_prune_ms, () =>
      this.publisher.prune(this.rt.storage.shards),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(
      [...this.sessions.values()].map((s) => s.close(new MillraceError('shutting_down', 'the node is shutting down'))),
    );
  }

  /** Validates the whole batch, then publishes it. `internal` skips the configured-topic check (dead letters, ingress). */
  async publish(events: unknown, opts: { internal?: boolean } = {}): Promise<Published[]> {
    return this.publishValid(this.validate(events, opts));
  }

  /** Checks a batch without writing it: the events to hand to `publishValid`, or a typed error. */
  validate(events: unknown, opts: { internal?: boolean } = {}): PublishEvent[] {
    return validateEvents(events, this.topics, opts);
  }

  /** Publishes a batch that `validate` returned. */
  async publishValid(events: PublishEvent[]): Promise<Published[]> {
    const t0 = performance.now();
    const out = await this.publisher.publish(events);
    // One latency sample per batch; the rate counts events.
    this.rt.activity.time('publish', performance.now() - t0);
    this.rt.activity.count('publish', events.length);
    return out;
  }

  /**
   * True when batches published one after another (each call started before
   * the previous one resolved) are committed in that order: one shard with
   * one writer, whose group committer keeps submission order. Then a stream
   * of batches can be pipelined without breaking per-key order; otherwise
   * each batch must wait for the previous one (over several shards, a batch
   * with ids is written only once its ids are claimed on their home shards,
   * so a later batch could overtake it).
   */
  get keepsSubmissionOrder(): boolean {
    const shards = this.rt.storage.shards;
    return shards.length === 1 && shards[0]!.driver.capabilities.singleWriter;
  }

  // ---- subscriptions -------------------------------------------------------

  private home(name: string): Shard {
    return this.rt.storage.shardFor(['bus/sub', name]);
  }

  /**
   * Whether `shard` is the subscription's home now: after a split moved it, the
   * source keeps its row until the split's cleanup, which lists it nowhere.
   */
  private homes(shard: Shard, name: string): boolean {
    return this.home(name).name === shard.name;
  }

  cursorName(name: string): string {
    return `bus/sub/${name}`;
  }

  private checkName(name: string): void {
    if (typeof name !== 'string' || !SUBSCRIPTION_NAME.test(name))
      throw badRequest('subscription name must be 1-150 letters, digits, ".", "_" or "-"');
  }

  private async row(
    name: string,
  ): Promise<{ config: SubscriptionConfig; created_at: number; updated_at: number } | null> {
    const rows = await this.home(name).reader.all<{ config: string; created_at: number; updated_at: number }>(
      SQL.getSubscription,
      [name],
    );
    const r = rows[0];
    return r
      ? {
          config: JSON.parse(r.config) as SubscriptionConfig,
          created_at: Number(r.created_at),
          updated_at: Number(r.updated_at),
        }
      : null;
  }

  /** Creates the subscription, or updates its config (its positions and start stay). */
  async putSubscription(name: string, raw: unknown): Promise<{ created: boolean; config: SubscriptionConfig }> {
    this.checkName(name);
    const config = buildSubscriptionConfig(raw, this.liveConfig);
    const now = this.rt.clock.now();
    const home = this.home(name);
    const existing = await this.row(name);
    if (existing) config.start = existing.config.start;
    const inserted = await home.write(async (tx) => {
      const n = await tx.run(SQL.insertSubscription, [name, JSON.stringify(config), now, now]);
      if (n === 0) await tx.run(SQL.updateSubscription, [JSON.stringify(config), now, name]);
      return n === 1;
    });
    await this.ensureCursors(name, config);
    const live = this.sessions.get(name);
    if (live && !inserted && JSON.stringify(live.config) !== JSON.stringify(config)) {
      await live.close(
        new MillraceError('subscription_busy', 'the subscription config changed; reconnect to apply it'),
      );
    }
    return { created: inserted, config };
  }

  private async ensureCursors(name: string, config: SubscriptionConfig): Promise<Map<string, number>> {
    const spec = parseStart(config.start);
    const out = new Map<string, number>();
    for (const s of this.rt.storage.shards) {
      const existing = await this.rt.cursors.position(s.name, this.cursorName(name));
      // A new cursor inherits no losses of an earlier subscription of the same name.
      if (existing === null || existing === undefined)
        await s.write((tx) => tx.run(SQL.forgetLost, [this.cursorName(name)]));
      out.set(
        s.name,
        existing ?? (await this.rt.cursors.ensure(s.name, this.cursorName(name), await this.resolveStart(s, spec))),
      );
    }
    return out;
  }

  private async resolveStart(shard: Shard, spec: StartSpec): Promise<number> {
    switch (spec.kind) {
      case 'earliest':
        return 0;
      case 'latest':
        return this.rt.log.headPos(shard.name);
      case 'position':
        return spec.pos;
      case 'time': {
        // Creation times follow positions (retention may leave holes; the first event at or after a position stands for it): binary search.
        let lo = 1;
        let hi = (await this.rt.log.headPos(shard.name)) + 1;
        while (lo < hi) {
          const mid = Math.floor((lo + hi) / 2);
          const rows = await shard.reader.all<{ created_at: number }>(SQL.createdAtOf, [mid]);
          if (Number(rows[0]?.created_at ?? Infinity) >= spec.at) hi = mid;
          else lo = mid + 1;
        }
        return lo - 1;
      }
    }
  }

  async getSubscription(name: string): Promise<SubscriptionInfo> {
    this.checkName(name);
    const r = await this.row(name);
    if (!r)
      throw new MillraceError('subscription_not_found', `no subscription "${name}"`, {
        details: { subscription: name },
      });
    const positions: Record<string, number> = {};
    const lag: Record<string, number> = {};
    const live = this.sessions.get(name)?.positions();
    for (const s of this.rt.storage.shards) {
      const pos = live?.[s.name] ?? (await this.rt.cursors.position(s.name, this.cursorName(name))) ?? 0;
      positions[s.name] = pos;
      lag[s.name] = await this.topicLag(s, r.config.topics, pos, await this.rt.log.headPos(s.name));
    }
    const leases = await this.home(name).reader.all<{ expires_at: number }>(SQL.leaseExpiry, [this.cursorName(name)]);
    const connected = leases.some((l) => Number(l.expires_at) > this.rt.clock.now());
    const lagTotal = Object.values(lag).reduce((a, b) => a + b, 0);
    return {
      name,
      config: r.config,
      positions,
      lag,
      lag_total: lagTotal,
      connected,
      paused: this.pauses.paused('subscription', name),
      dead_letter_topic: r.config.dead_letter_topic ?? null,
      created_at: r.created_at,
      updated_at: r.updated_at,
    };
  }

  /**
   * Events of `topics` in positions (after, head] of a shard. The scan walks
   * those positions by the primary key (cost: the shard's backlog behind the
   * subscription) and keeps the events whose stream `t/<topic>/...` is one
   * of its topics ('0' follows '/' in byte order, so each topic is a range).
   */
  private async topicLag(shard: Shard, topics: readonly string[], from: number, head: number): Promise<number> {
    // A split's imports on its target are delivered from the source: no lag here.
    const after = Math.max(from, await importHorizon(shard.reader));
    if (head <= after || topics.length === 0) return 0;
    const ranges = topics.map(() => '(stream >= ? AND stream < ?)').join(' OR ');
    const rows = await shard.reader.all<{ n: number | string }>(SQL.lagCount(ranges), [
      after,
      head,
      ...topics.flatMap((t) => [`t/${t}/`, `t/${t}0`]),
    ]);
    return Number(rows[0]?.n ?? 0);
  }

  /**
   * A topic's stored events, newest first, paged: of one key, of one type,
   * created in [from, to). Shard by shard (each in position order, newest
   * first); the cursor names the shard and the position to continue below.
   */
  async browse(
    topic: string,
    q: {
      key?: string | undefined;
      type?: string | undefined;
      from?: string | undefined;
      to?: string | undefined;
      limit?: number | undefined;
      cursor?: string | undefined;
    },
  ): Promise<Page<BrowsedEvent>> {
    const limit = pageLimit(q.limit);
    const time = (v: string | undefined, what: string): number | undefined => {
      if (v === undefined) return undefined;
      const t = Date.parse(v);
      if (Number.isNaN(t)) throw badRequest(`${what} is not a date-time`, { [what]: v });
      return t;
    };
    const from = time(q.from, 'from');
    const to = time(q.to, 'to');
    if (from !== undefined && to !== undefined && from >= to)
      throw badRequest('from must be before to', { from: q.from, to: q.to });
    const shards = this.rt.storage.shards;
    const cur = decodeCursor(
      q.cursor,
      (v): v is [number, number] =>
        Array.isArray(v) &&
        v.length === 2 &&
        v.every((x) => Number.isInteger(x) && x >= 0) &&
        (v[0] as number) < shards.length,
    );
    if (!this.topics.has(topic))
      throw new MillraceError('topic_not_found', `no topic "${topic}" is configured`, { details: { topic } });
    const where: string[] = ['pos IS NOT NULL', 'pos < ?'];
    const args: unknown[] = [];
    if (q.key !== undefined) {
      where.push('stream = ?');
      args.push(topicStream(topic, q.key));
    } else {
      where.push('stream >= ?', 'stream < ?');
      args.push(`t/${topic}/`, `t/${topic}0`);
    }
    if (q.type !== undefined) {
      where.push('type = ?');
      args.push(q.type);
    }
    if (from !== undefined) {
      where.push('created_at >= ?');
      args.push(from);
    }
    if (to !== undefined) {
      where.push('created_at < ?');
      args.push(to);
    }
    const sql = `SELECT pos, stream, type, data, meta, created_at FROM events WHERE ${where.join(' AND ')} ORDER BY pos DESC LIMIT ?`;
    const items: BrowsedEvent[] = [];
    let next: [number, number] | null = null;
    for (let i = cur?.[0] ?? 0; i < shards.length && items.length < limit; i++) {
      const shard = shards[i]!;
      const before = i === cur?.[0] ? cur[1] : Number.MAX_SAFE_INTEGER;
      const want = limit - items.length;
      const rows = await shard.reader.all<{
        pos: number | string;
        stream: string;
        type: string;
        data: string;
        meta: string | null;
        created_at: number | string;
      }>(sql, [before, ...args, want + 1]);
      for (const r of rows.slice(0, want)) {
        const meta = (r.meta === null ? {} : JSON.parse(r.meta)) as {
          key?: string;
          id?: string;
          headers?: Record<string, string>;
        };
        items.push({
          shard: shard.name,
          pos: Number(r.pos),
          topic,
          key: meta.key ?? r.stream.slice(topic.length + 3),
          id: meta.id ?? null,
          type: r.type,
          headers: meta.headers ?? {},
          data: JSON.parse(r.data) as unknown,
          created_at: new Date(Number(r.created_at)).toISOString(),
        });
      }
      if (rows.length > want) next = [i, Number(rows[want - 1]!.pos)];
      else if (items.length >= limit && i + 1 < shards.length) next = [i + 1, Number.MAX_SAFE_INTEGER];
    }
    return { items, next_cursor: next === null ? null : encodeCursor(next) };
  }

  /** Subscriptions by name with their positions, lag over their own topics, connection and dead-letter topic, paged. */
  async listSubscriptionInfos(
    opts: { limit?: number | undefined; cursor?: string | undefined } = {},
  ): Promise<Page<SubscriptionInfo>> {
    const limit = pageLimit(opts.limit);
    const after = decodeCursor(opts.cursor, (v): v is string => typeof v === 'string') ?? '';
    const names: string[] = [];
    for (const s of this.rt.storage.shards) {
      for (const r of await s.reader.all<{ name: string }>(SQL.listSubscriptionsAfter, [after, limit + 1]))
        if (this.homes(s, r.name)) names.push(r.name);
    }
    names.sort();
    const page = names.slice(0, limit);
    const items: SubscriptionInfo[] = [];
    for (const n of page) {
      try {
        items.push(await this.getSubscription(n));
      } catch (err) {
        if (!(err instanceof MillraceError && err.code === 'subscription_not_found')) throw err;
      }
    }
    return { items, next_cursor: names.length > limit ? encodeCursor(page[page.length - 1]) : null };
  }

  async listSubscriptions(): Promise<string[]> {
    const names: string[] = [];
    for (const s of this.rt.storage.shards) {
      for (const r of await s.reader.all<{ name: string }>(SQL.listSubscriptions))
        if (this.homes(s, r.name)) names.push(r.name);
    }
    return names.sort();
  }

  async deleteSubscription(name: string): Promise<void> {
    this.checkName(name);
    const n = await this.home(name).write((tx) => tx.run(SQL.deleteSubscription, [name]));
    if (n === 0)
      throw new MillraceError('subscription_not_found', `no subscription "${name}"`, {
        details: { subscription: name },
      });
    await this.sessions
      .get(name)
      ?.close(new MillraceError('subscription_not_found', `subscription "${name}" was deleted`));
    for (const s of this.rt.storage.shards) {
      await this.rt.cursors.remove(s.name, this.cursorName(name));
      // After the cursor: the pruning job counts losses only for cursors that exist.
      await s.write((tx) => tx.run(SQL.forgetLost, [this.cursorName(name)]));
    }
  }

  /** The live session of a subscription on this node, for acks that arrive beside the stream (HTTP). */
  session(name: string): DeliverySession {
    const s = this.sessions.get(name);
    if (!s || s.closed)
      throw new MillraceError(
        'subscription_not_connected',
        `subscription "${name}" has no live connection on this node`,
      );
    return s;
  }

  /**
   * Opens the one live connection of a subscription (creating it first when
   * `config` is given and it does not exist). A second connection anywhere
   * in the cluster gets `subscription_busy`.
   */
  async open(name: string, rawConfig: unknown, sink: DeliverySink): Promise<DeliverySession> {
    this.checkName(name);
    if (this.stopped) throw new MillraceError('shutting_down', 'the node is shutting down');
    const holder = `${this.rt.config.node_id}/${randomUUID()}`;
    if (rawConfig !== undefined) buildSubscriptionConfig(rawConfig, this.liveConfig);
    let lease = await this.acquireLease(name, holder);
    const prior = this.ended.get(name);
    if (!lease && prior) {
      // The live connection is on this node: a client reconnecting right after
      // it closed may get here before the close is noticed. Give it a moment.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([prior, new Promise<void>((r) => (timer = setTimeout(r, RECONNECT_GRACE_MS)))]);
      clearTimeout(timer);
      lease = await this.acquireLease(name, holder);
    }
    if (!lease)
      throw new MillraceError('subscription_busy', `subscription "${name}" already has a live connection`, {
        details: { subscription: name },
      });
    let r: Awaited<ReturnType<Bus['row']>>;
    try {
      r = await this.row(name);
      if (rawConfig !== undefined) {
        const wanted = buildSubscriptionConfig(rawConfig, this.liveConfig);
        if (!r || JSON.stringify({ ...wanted, start: r.config.start }) !== JSON.stringify(r.config)) {
          await this.putSubscription(name, rawConfig);
          r = await this.row(name);
        }
      }
      if (!r)
        throw new MillraceError(
          'subscription_not_found',
          `no subscription "${name}"; create it first or open with a config`,
          { details: { subscription: name } },
        );
    } catch (err) {
      // The caller gets the error above; a lease that is not released lapses at the end of its term.
      await this.releaseLease(name, holder).catch(() => {});
      throw err;
    }
    const config = r.config;
    let session: DeliverySession | undefined;
    try {
      const positions = await this.ensureCursors(name, config);
      // Retention removed events it had not acknowledged: never skipped in silence.
      const gaps = await this.lostOf(name);
      if (gaps.length > 0 && (config.on_expired ?? 'stop') === 'stop') throw this.expired(name, gaps);
      const renew = setInterval(
        () => {
          this.renewLease(name, holder).then(
            (ok) => {
              if (!ok)
                void session?.close(
                  new MillraceError('subscription_busy', 'the connection lost its hold on the subscription'),
                );
              else if (session !== undefined && !session.closed) return this.reportLost(name, config, session, sink);
            },
            // A renewal that fails (storage unreachable) is tried again at the next tick, within the lease's term.
            () => {},
          );
        },
        Math.max(200, Math.floor(this.leaseMs / 3)),
      );
      renew.unref();
      let settle!: () => void;
      const ended = new Promise<void>((r) => (settle = r));
      this.ended.set(name, ended);
      session = new DeliverySession(
        name,
        this.cursorName(name),
        config,
        {
          deliver: (d) => {
            this.rt.activity.count('deliver');
            sink.deliver(d);
          },
          gap: (g) => sink.gap(g),
          closed: (err) => {
            clearInterval(renew);
            if (this.sessions.get(name) === session) this.sessions.delete(name);
            // Free the subscription before telling the client, so a reconnect
            // that follows the end of this call never meets its own old lease.
            void this.releaseLease(name, holder)
              .catch((err: unknown) =>
                this.rt.logger.warn(
                  { err, subscription: name },
                  'bus: releasing the subscription lease failed; it lapses at the end of its term',
                ),
              )
              .finally(() => {
                if (this.ended.get(name) === ended) this.ended.delete(name);
                settle();
                sink.closed(err);
              });
          },
        },
        {
          cursors: this.rt.cursors,
          logger: this.rt.logger,
          deadLetter: (sub, ev, deliveries) => this.deadLetter(sub, config, ev, deliveries),
          paused: () => this.pauses.paused('subscription', name),
          pauseChanged: (signal) => this.pauses.changed(PAUSED_RECHECK_MS, signal),
          imports: (shard) => readShardGates(this.rt.storage.shard(shard)),
          lastAtOrBelow: async (shard, pos) => {
            const rows = await this.rt.storage
              .shard(shard)
              .reader.all<{ m: number | null }>('SELECT max(pos) AS m FROM events WHERE pos <= ?', [pos]);
            return rows[0]?.m == null ? null : Number(rows[0].m);
          },
        },
      );
      this.sessions.set(name, session);
      session.start(positions);
      if (gaps.length > 0) await this.reportLost(name, config, session, sink, gaps);
      return session;
    } catch (err) {
      // The caller gets the error above; a lease that is not released lapses at the end of its term.
      await this.releaseLease(name, holder).catch(() => {});
      throw err;
    }
  }

  /** Per shard, events of the subscription's topics that retention removed after its stored position and that it was not told of. */
  async lostOf(name: string): Promise<GapNotice[]> {
    const out: GapNotice[] = [];
    for (const s of this.rt.storage.shards) {
      const rows = await s.reader.all<{ lost: number; horizon: number }>(
        'SELECT lost, horizon FROM retention_lost WHERE cursor = ? AND lost > 0',
        [this.cursorName(name)],
      );
      if (rows[0]) out.push({ shard: s.name, lost: Number(rows[0].lost), horizon: Number(rows[0].horizon) });
    }
    return out;
  }

  private expired(name: string, gaps: GapNotice[]): MillraceError {
    const lost = gaps.reduce((n, g) => n + g.lost, 0);
    return new MillraceError(
      'position_expired',
      `retention removed ${lost} event(s) of subscription "${name}" after its acknowledged position`,
      {
        details: { subscription: name, lost, shards: gaps },
      },
    );
  }

  /** Tells a live connection of lost events: a gap notice (on_expired "resume"), or closes it with position_expired. */
  private async reportLost(
    name: string,
    config: SubscriptionConfig,
    session: DeliverySession,
    sink: DeliverySink,
    known?: GapNotice[],
  ): Promise<void> {
    const gaps = known ?? (await this.lostOf(name));
    if (gaps.length === 0 || session.closed) return;
    if ((config.on_expired ?? 'stop') === 'stop') {
      await session.close(this.expired(name, gaps));
      return;
    }
    for (const g of gaps) {
      sink.gap(g);
      // Only what was reported: events removed meanwhile are reported next time.
      await this.rt.storage
        .shard(g.shard)
        .write((tx) =>
          tx.run('UPDATE retention_lost SET lost = lost - ? WHERE cursor = ?', [g.lost, this.cursorName(name)]),
        );
    }
  }

  /** Every subscription's topics, from the home shards (for the pruning job's lost counts). */
  async subscriptionTopics(): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for (const s of this.rt.storage.shards) {
      for (const r of await s.reader.all<{ name: string; config: string }>(
        'SELECT name, config FROM bus_subscriptions',
      )) {
        if (this.homes(s, r.name)) out.set(r.name, (JSON.parse(r.config) as SubscriptionConfig).topics);
      }
    }
    return out;
  }

  private async deadLetter(sub: string, config: SubscriptionConfig, ev: TopicEvent, deliveries: number): Promise<void> {
    if (!config.dead_letter_topic) {
      this.rt.logger.warn(
        { subscription: sub, shard: ev.shard, pos: ev.pos },
        'bus: event exceeded max deliveries and was dropped (no dead-letter topic)',
      );
      return;
    }
    await this.publish(
      [
        {
          id: `dead/${sub}/${ev.shard}:${ev.pos}`,
          topic: config.dead_letter_topic,
          key: ev.key,
          type: ev.type,
          headers: {
            ...ev.headers,
            'x-dead-letter-subscription': sub,
            'x-original-topic': ev.topic,
            'x-original-position': `${ev.shard}:${ev.pos}`,
            'x-deliveries': String(deliveries),
          },
          data: JSON.parse(ev.data) as unknown,
        },
      ],
      { internal: true },
    );
  }

  private async acquireLease(name: string, holder: string): Promise<boolean> {
    const now = this.rt.clock.now();
    const rows = await this.home(name).write((tx) =>
      tx.all<{ holder: string }>(SQL.takeLease, [this.cursorName(name), holder, now + this.leaseMs, now]),
    );
    return rows.length === 1 && rows[0]!.holder === holder;
  }

  private async renewLease(name: string, holder: string): Promise<boolean> {
    const n = await this.home(name).write((tx) =>
      tx.run(SQL.renewLease, [this.rt.clock.now() + this.leaseMs, this.cursorName(name), holder]),
    );
    return n === 1;
  }

  private async releaseLease(name: string, holder: string): Promise<void> {
    await this.home(name).write((tx) => tx.run(SQL.releaseLease, [this.cursorName(name), holder]));
  }
}
