import type { Logger } from 'pino';
import { MillraceError } from '../core/errors.js';
import { sleepUnless } from '../core/waker.js';
import type { CursorEngine } from '../log/cursor.js';
import type { ImportGate, ShardGates } from './split-gate.js';
import { matchEvent, type GapNotice, type SubscriptionConfig, type TopicEvent } from './subscription.js';

/** One delivery of an event to a subscriber; `deliveryId` (`shard:pos`) is what the subscriber acks. */
export interface Delivery extends TopicEvent {
  deliveryId: string;
  /** 1 on the first delivery. */
  deliveryCount: number;
}

/** The transport side of a live connection. */
export interface DeliverySink {
  deliver(d: Delivery): void;
  /** Retention removed events this subscription had not acknowledged (subscriptions with on_expired "resume"). */
  gap(n: GapNotice): void;
  /** The session ended from the server side (lease lost, subscription deleted, shutdown). */
  closed(err: MillraceError | null): void;
}

export interface DeliveryHooks {
  cursors: CursorEngine;
  logger: Logger;
  /** Ships an event that exceeded max deliveries to the dead-letter topic. */
  deadLetter(sub: string, ev: TopicEvent, deliveries: number): Promise<void>;
  /** Whether the subscription is paused: no new event is sent until it resumes (the position stays where acks put it). */
  paused?: () => boolean;
  /** Resolves when the pause state may have changed (or after a while), or on abort. */
  pauseChanged?: (signal: AbortSignal) => Promise<void>;
  /** A shard's split imports (see split-gate.ts); without it every event is delivered. */
  imports?: (shard: string) => Promise<ShardGates>;
  /** The last stored position at or below `pos` of a shard, or null. */
  lastAtOrBelow?: (shard: string, pos: number) => Promise<number | null>;
}

/** How often a reader held by a split (an import under way, or the source not passed yet) looks again. */
const GATE_POLL_MS = 50;

interface Inflight {
  ev: TopicEvent;
  count: number;
  /** Bumped whenever the pending redelivery changes (acked, nacked, resent): older expiry entries are void. */
  gen: number;
  /** A nack's delayed redelivery (ack-wait expiries go through the session's queue instead). */
  timer: NodeJS.Timeout | undefined;
  /** Being sent to the dead-letter topic. */
  dead: boolean;
}

/**
 * While acks keep coming, the acked position of a shard is stored at most this
 * often (the first save after a quiet spell goes at once). Every save is a
 * write transaction (an fsync under strict durability); saving after each ack
 * cost about one transaction per two or three delivered events. Closing the
 * session always stores the final position; after a crash, at most this much
 * acknowledged delivery comes again (delivery is at least once).
 */
const SAVE_EVERY_MS = 100;

interface ShardState {
  name: string;
  /** Examined events not yet acknowledged, in position order (Map keeps insertion order). */
  pending: Map<number, Inflight>;
  /** Last position examined (delivered or filtered out). */
  high: number;
  saved: number;
  saving: Promise<void> | null;
  dirty: boolean;
  /** Set while the next save waits out SAVE_EVERY_MS after the previous one. */
  nextSave: NodeJS.Timeout | null;
  loop: Promise<void> | null;
  /** The shard's split imports as last read (kept once final). */
  gates: ShardGates | null;
}

/**
 * A live connection of a subscription: reads every shard from the acked
 * position (catch-up in chunks, then live, through the cursor engine), keeps
 * at most `max_in_flight` deliveries unacknowledged, redelivers after the ack
 * wait or a nack's delay, dead-letters after max deliveries, and stores per
 * shard the position below the first unacknowledged event. A slow consumer is
 * never dropped: the reader simply waits for window space, and then reads on
 * from the database.
 */
export class DeliverySession {
  private readonly abort = new AbortController();
  private readonly shards = new Map<string, ShardState>();
  private readonly topics: Set<string>;
  private inFlight = 0;
  private spaceWaiters: Array<() => void> = [];
  private closing: Promise<void> | null = null;
  /**
   * Ack-wait expiries in the order they were armed: with one ack wait for the
   * whole session their due times only grow, so one timer for the head
   * replaces a timer per delivery.
   */
  private expiry: Array<{ f: Inflight; gen: number; due: number }> = [];
  private expiryHead = 0;
  private expiryTimer: NodeJS.Timeout | undefined;
  /** Imports whose source this session has passed (their target's later events flow freely). */
  private readonly passed = new Set<string>();

  constructor(
    readonly name: string,
    readonly cursorName: string,
    readonly config: SubscriptionConfig,
    private readonly sink: DeliverySink,
    private readonly hooks: DeliveryHooks,
  ) {
    this.topics = new Set(config.topics);
  }

  get closed(): boolean {
    return this.abort.signal.aborted;
  }

  /** Starts reading each shard after its stored position. */
  start(positions: ReadonlyMap<string, number>): void {
    for (const [name, pos] of positions) {
      const st: ShardState = {
        name,
        pending: new Map(),
        high: pos,
        saved: pos,
        saving: null,
        dirty: false,
        nextSave: null,
        loop: null,
        gates: null,
      };
      this.shards.set(name, st);
      st.loop = this.read(st).catch((err: unknown) => {
        if (this.closed) return;
        this.hooks.logger.error({ err, subscription: this.name, shard: name }, 'bus: subscription reader failed');
        void this.close(
          new MillraceError('unavailable', `subscription reader failed: ${(err as Error).message}`, { retryAfterS: 1 }),
        );
      });
    }
  }

  private async read(st: ShardState): Promise<void> {
    const signal = this.abort.signal;
    for await (const batch of this.hooks.cursors.tail(st.name, st.high, { abort: signal })) {
      // Read after the batch: an import's events and its record commit together.
      let gates = await this.gatesOf(st);
      for (const e of batch) {
        if (signal.aborted) return;
        // An import under way: everything here so far is one; wait for its end to know the horizon.
        while (gates?.pending === true) {
          await sleepUnless(GATE_POLL_MS, signal);
          if (signal.aborted) return;
          gates = await this.gatesOf(st);
        }
        // Imports are delivered from the source (where they stay), never here.
        const imported = gates !== null && e.pos! <= gates.horizon;
        const ev = imported ? null : matchEvent(e, this.topics, this.config.filter);
        if (ev === null) {
          st.high = e.pos!;
          continue;
        }
        if (gates !== null && !(await this.passedSources(gates.gates, signal))) return;
        if (this.inFlight >= this.config.max_in_flight) {
          await this.space();
          if (signal.aborted) return;
        }
        while (this.hooks.paused?.() === true) {
          await this.hooks.pauseChanged!(signal);
          if (signal.aborted) return;
        }
        const f: Inflight = { ev, count: 0, gen: 0, timer: undefined, dead: false };
        st.pending.set(ev.pos, f);
        st.high = ev.pos;
        this.inFlight++;
        this.send(f);
      }
      // Filtered-out events move the position too.
      if (st.pending.size === 0) this.scheduleSave(st);
    }
  }

  /** The shard's split imports, read again unless final; null without the hook. */
  private async gatesOf(st: ShardState): Promise<ShardGates | null> {
    if (this.hooks.imports === undefined) return null;
    if (st.gates?.final !== true) st.gates = await this.hooks.imports(st.name);
    return st.gates;
  }

  /**
   * Per-key order across a split: a target's events after its horizon wait
   * until this subscription's position on the source has passed the last
   * moved event (acknowledged, or removed since by retention). Resolves false
   * if the session closed meanwhile.
   */
  private async passedSources(gates: readonly ImportGate[], signal: AbortSignal): Promise<boolean> {
    for (const g of gates) {
      if (this.passed.has(g.id)) continue;
      const src = this.shards.get(g.source);
      while (src !== undefined && this.ackedPos(src) < g.sourcePos) {
        const last = await this.hooks.lastAtOrBelow?.(src.name, g.sourcePos);
        if (last === null || last === undefined || this.ackedPos(src) >= last) break;
        await sleepUnless(GATE_POLL_MS, signal);
        if (signal.aborted) return false;
      }
      this.passed.add(g.id);
    }
    return true;
  }

  private space(): Promise<void> {
    if (this.inFlight < this.config.max_in_flight || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.spaceWaiters.push(resolve));
  }

  private freeSlot(): void {
    this.inFlight--;
    const w = this.spaceWaiters.shift();
    if (w) w();
  }

  private send(f: Inflight): void {
    if (this.closed) return;
    f.count++;
    if (f.count > this.config.max_deliveries) {
      f.dead = true;
      this.hooks.deadLetter(this.name, f.ev, f.count - 1).then(
        () => this.settle(f.ev.shard, f.ev.pos),
        (err: unknown) => {
          this.hooks.logger.warn({ err, subscription: this.name }, 'bus: dead-lettering failed; retrying later');
          f.dead = false;
          f.count--;
          this.arm(f, this.config.ack_wait_ms);
        },
      );
      return;
    }
    this.arm(f, this.config.ack_wait_ms);
    const e = f.ev;
    this.sink.deliver({
      shard: e.shard,
      pos: e.pos,
      topic: e.topic,
      key: e.key,
      id: e.id,
      type: e.type,
      headers: e.headers,
      data: e.data,
      createdAt: e.createdAt,
      deliveryId: `${e.shard}:${e.pos}`,
      deliveryCount: f.count,
    });
  }

  /** Redelivers `f` after `ms` unless it is acked, nacked or resent first. */
  private arm(f: Inflight, ms: number): void {
    this.disarm(f);
    if (ms !== this.config.ack_wait_ms) {
      f.timer = setTimeout(() => {
        f.timer = undefined;
        f.gen++;
        this.send(f);
      }, ms);
      return;
    }
    const due = Date.now() + ms;
    this.expiry.push({ f, gen: f.gen, due });
    if (this.expiryTimer === undefined) this.armExpiry(ms);
  }

  private disarm(f: Inflight): void {
    f.gen++;
    if (f.timer) clearTimeout(f.timer);
    f.timer = undefined;
  }

  private armExpiry(ms: number): void {
    this.expiryTimer = setTimeout(() => this.expire(), Math.max(0, ms));
  }

  private expire(): void {
    this.expiryTimer = undefined;
    if (this.closed) return;
    const now = Date.now();
    while (this.expiryHead < this.expiry.length) {
      const e = this.expiry[this.expiryHead]!;
      if (e.due > now) break;
      this.expiryHead++;
      if (e.gen === e.f.gen && !e.f.dead) this.send(e.f);
    }
    if (this.expiryHead > 1024 && this.expiryHead * 2 > this.expiry.length) {
      this.expiry = this.expiry.slice(this.expiryHead);
      this.expiryHead = 0;
    }
    // Skip entries already void so the timer does not wake for nothing.
    while (
      this.expiryHead < this.expiry.length &&
      this.expiry[this.expiryHead]!.gen !== this.expiry[this.expiryHead]!.f.gen
    )
      this.expiryHead++;
    const head = this.expiry[this.expiryHead];
    if (head) this.armExpiry(head.due - now);
    else {
      this.expiry = [];
      this.expiryHead = 0;
    }
  }

  private lookup(deliveryId: string): { st: ShardState; f: Inflight } | null {
    const i = deliveryId.lastIndexOf(':');
    if (i < 0) return null;
    const st = this.shards.get(deliveryId.slice(0, i));
    const f = st?.pending.get(Number(deliveryId.slice(i + 1)));
    return st && f ? { st, f } : null;
  }

  /** Acknowledges deliveries; unknown or already acked ids are ignored. Returns how many were pending. */
  ack(deliveryIds: readonly string[]): number {
    let n = 0;
    for (const id of deliveryIds) {
      const hit = this.lookup(id);
      if (!hit || hit.f.dead) continue;
      n++;
      this.settle(hit.st.name, hit.f.ev.pos);
    }
    return n;
  }

  /** Asks for a redelivery after `delayMs` (0: now). */
  nack(deliveryId: string, delayMs: number): boolean {
    const hit = this.lookup(deliveryId);
    if (!hit || hit.f.dead) return false;
    if (delayMs <= 0) {
      this.disarm(hit.f);
      this.send(hit.f);
    } else this.arm(hit.f, delayMs);
    return true;
  }

  private settle(shard: string, pos: number): void {
    const st = this.shards.get(shard);
    const f = st?.pending.get(pos);
    if (!st || !f) return;
    this.disarm(f);
    st.pending.delete(pos);
    this.freeSlot();
    this.scheduleSave(st);
  }

  /** The position below the first unacknowledged event of a shard. */
  private ackedPos(st: ShardState): number {
    for (const p of st.pending.keys()) return p - 1;
    return st.high;
  }

  /** Stores the acked position, coalescing: at most one save per shard in flight. */
  private scheduleSave(st: ShardState): void {
    if (st.saving || st.nextSave) {
      st.dirty = true;
      return;
    }
    const pos = this.ackedPos(st);
    if (pos <= st.saved) return;
    st.saving = this.hooks.cursors
      .save(st.name, this.cursorName, pos)
      .then(
        () => {
          st.saved = Math.max(st.saved, pos);
        },
        (err: unknown) => {
          this.hooks.logger.warn(
            { err, subscription: this.name, shard: st.name },
            'bus: saving the acked position failed',
          );
        },
      )
      .finally(() => {
        st.saving = null;
        if (st.dirty && !this.closed) {
          // More acks came in: store them after a pause (close() stores the last position itself).
          st.nextSave = setTimeout(() => {
            st.nextSave = null;
            st.dirty = false;
            this.scheduleSave(st);
          }, SAVE_EVERY_MS);
          st.nextSave.unref();
        } else if (st.dirty) {
          st.dirty = false;
          this.scheduleSave(st);
        }
      });
  }

  /** Acked positions, per shard, as stored once `close` resolves. */
  positions(): Record<string, number> {
    return Object.fromEntries([...this.shards.values()].map((st) => [st.name, this.ackedPos(st)]));
  }

  /**
   * Ends the session: stops reading and redelivering, then stores the acked
   * positions. Unacknowledged deliveries come again on the next connection.
   */
  close(err: MillraceError | null = null): Promise<void> {
    this.closing ??= (async () => {
      this.abort.abort();
      for (const w of this.spaceWaiters.splice(0)) w();
      for (const st of this.shards.values()) for (const f of st.pending.values()) this.disarm(f);
      clearTimeout(this.expiryTimer);
      this.expiryTimer = undefined;
      // A shard whose loop never started has `loop: null`, which Promise.all takes as done.
      // eslint-disable-next-line @typescript-eslint/await-thenable
      await Promise.all([...this.shards.values()].map((st) => st.loop));
      for (const st of this.shards.values()) {
        while (st.saving) await st.saving;
        if (st.nextSave) clearTimeout(st.nextSave);
        st.nextSave = null;
        this.scheduleSave(st);
        // scheduleSave may set `saving` again; TypeScript keeps its narrowing to null from the loop above.
        // eslint-disable-next-line @typescript-eslint/await-thenable
        while (st.saving) await st.saving;
      }
      this.sink.closed(err);
    })();
    return this.closing;
  }
}
