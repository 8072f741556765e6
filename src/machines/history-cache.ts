import type { HistoryRange } from './config.js';
import type { MachineState } from './planner.js';

/** One event of a machine's history, as the processor and GET see it. */
import type { MachineEvent } from './wire.js';

export type { MachineEvent };

/** Most events one history range yields (a range without a limit stops here too). */
export const RANGE_MAX = 100_000;

/** Estimated memory of one cached event beyond its JSON text: the objects, the date string, the slots. */
const EVENT_OVERHEAD = 200;

/**
 * The event ids a range selects from a history of ids 1..last, as the
 * inclusive span [lo, hi]; null when it selects none. Forward ranges read
 * ascending from lo, backward ones descending from hi (as the log reads them).
 */
export function rangeSpan(last: number, range: HistoryRange): { lo: number; hi: number } | null {
  const limit = Math.min(range.limit ?? RANGE_MAX, RANGE_MAX);
  if (range.direction === 'backward') {
    const hi = range.after === undefined ? last : Math.min(last, range.after - 1);
    const lo = Math.max(1, hi - limit + 1);
    return hi >= 1 ? { lo, hi } : null;
  }
  const lo = range.after === undefined ? 1 : range.after + 1;
  const hi = Math.min(last, lo + limit - 1);
  return lo <= hi ? { lo, hi } : null;
}

/** The JSON text of each event `frozenEvent` built, for transports that send histories as JSON. */
const jsonOf = new WeakMap<MachineEvent, string>();

/** An event's JSON text when `frozenEvent` built it (the same value JSON.stringify gives). */
export function eventJson(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null ? jsonOf.get(e as MachineEvent) : undefined;
}

function deepFreeze(v: unknown): void {
  if (v === null || typeof v !== 'object' || Object.isFrozen(v)) return;
  Object.freeze(v);
  for (const x of Object.values(v as Record<string, unknown>)) deepFreeze(x);
}

/**
 * An event built from its stored JSON text, frozen: the same objects are
 * handed to every step and GET that reads them from the cache, so nobody may
 * change them. Returns the event and its estimated size in bytes.
 */
export function frozenEvent(id: number, createdAt: string, text: string): { event: MachineEvent; bytes: number } {
  const data = JSON.parse(text) as unknown;
  deepFreeze(data);
  const event = Object.freeze({ id, created_at: createdAt, data });
  jsonOf.set(event, `{"id":${id},"created_at":${JSON.stringify(createdAt)},"data":${text}}`);
  return { event, bytes: EVENT_OVERHEAD + 3 * text.length };
}

interface Entry {
  state: MachineState;
  /** Committed events first..first+events.length-1 of generation state.gen, ascending. */
  events: MachineEvent[];
  sizes: number[];
  first: number;
  bytes: number;
}

/**
 * Hot machines in memory: each one's state, and a window of its history
 * (the ids its namespace's history range asks for, as far as the byte budget
 * allows). Least recently used machines are dropped when there are more than
 * `maxEntries` or their events take more than `maxBytes`; one machine keeps at
 * most a quarter of `maxBytes` (its latest events).
 *
 * A window is trusted only for the generation it was read in, and only up to
 * the state's last event: events of a generation never change once committed,
 * so a state that moved on (another node committed more) keeps the window and
 * reads the rest; a new generation or a removed machine drops it.
 */
export class MachineCache {
  private readonly map = new Map<string, Entry>();
  private total = 0;
  private readonly perMachine: number;

  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
  ) {
    this.perMachine = Math.floor(maxBytes / 4);
  }

  /** Whether events are kept at all (a zero budget keeps states only). */
  get keepsEvents(): boolean {
    return this.maxEntries > 0 && this.maxBytes > 0;
  }

  /** Machines cached. */
  get size(): number {
    return this.map.size;
  }

  /** Estimated bytes of the cached events. */
  get bytes(): number {
    return this.total;
  }

  /** The cached state, marking the machine recently used. */
  state(k: string): MachineState | undefined {
    const e = this.map.get(k);
    if (e === undefined) return undefined;
    this.touch(k, e);
    return e.state;
  }

  /**
   * Sets the machine's state. Its window stays where it still belongs to the
   * state (same generation, not removed, ending at or before its last event).
   */
  put(k: string, state: MachineState): void {
    if (this.maxEntries === 0) return;
    const e = this.map.get(k);
    if (e === undefined) {
      this.map.set(k, { state, events: [], sizes: [], first: 1, bytes: 0 });
      this.evict(k);
      return;
    }
    if (!fits(e, state)) this.clear(e);
    e.state = state;
    this.touch(k, e);
  }

  delete(k: string): void {
    const e = this.map.get(k);
    if (e === undefined) return;
    this.total -= e.bytes;
    this.map.delete(k);
  }

  /**
   * The cached events of [lo, hi] for this state, as one ascending slice
   * starting at `from`; undefined when none of them is cached. The slice is
   * the caller's (later commits do not change it).
   */
  slice(k: string, state: MachineState, lo: number, hi: number): { from: number; events: MachineEvent[] } | undefined {
    const e = this.map.get(k);
    if (
      e === undefined ||
      e.events.length === 0 ||
      e.state.gen !== state.gen ||
      e.state.status === 'none' ||
      state.status === 'none'
    )
      return undefined;
    const a = Math.max(lo, e.first);
    const b = Math.min(hi, e.first + e.events.length - 1, state.lastEvent);
    if (a > b) return undefined;
    return { from: a, events: e.events.slice(a - e.first, b - e.first + 1) };
  }

  /**
   * Adds committed events from..from+events.length-1 read or written for
   * `state` to the machine's window: joined to it where they touch it, in
   * its place where they come after a gap, ignored where they overlap it or
   * come before a gap.
   */
  add(k: string, state: MachineState, from: number, events: MachineEvent[], sizes: number[]): void {
    const e = this.map.get(k);
    if (
      e === undefined ||
      events.length === 0 ||
      state.status === 'none' ||
      e.state.gen !== state.gen ||
      e.state.lastEvent !== state.lastEvent ||
      !fits(e, state)
    )
      return;
    const end = e.first + e.events.length - 1;
    const to = from + events.length - 1;
    if (to > state.lastEvent) return;
    let added = 0;
    for (const s of sizes) added += s;
    if (e.events.length === 0 || from > end + 1) {
      // Empty, or newer events past a gap: they replace the window.
      this.clear(e);
      e.events = events.slice();
      e.sizes = sizes.slice();
      e.first = from;
    } else if (from === end + 1) {
      for (let i = 0; i < events.length; i++) {
        e.events.push(events[i]!);
        e.sizes.push(sizes[i]!);
      }
    } else if (to === e.first - 1) {
      e.events = events.concat(e.events);
      e.sizes = sizes.concat(e.sizes);
      e.first = from;
    } else return;
    e.bytes += added;
    this.total += added;
    this.trimFront(e, this.perMachine);
    this.touch(k, e);
    this.evict(k);
  }

  /** Keeps only the ids [lo, hi] of the machine's window (null: none). */
  retain(k: string, span: { lo: number; hi: number } | null): void {
    const e = this.map.get(k);
    if (e === undefined || e.events.length === 0) return;
    if (span === null) {
      this.clear(e);
      return;
    }
    const end = e.first + e.events.length - 1;
    if (span.hi < end) {
      const keep = Math.max(0, span.hi - e.first + 1);
      let dropped = 0;
      for (let i = keep; i < e.sizes.length; i++) dropped += e.sizes[i]!;
      e.events.length = keep;
      e.sizes.length = keep;
      e.bytes -= dropped;
      this.total -= dropped;
    }
    if (span.lo > e.first) {
      const n = Math.min(e.events.length, span.lo - e.first);
      this.drop(e, n);
    }
  }

  private trimFront(e: Entry, max: number): void {
    if (e.bytes <= max) return;
    let n = 0;
    let bytes = e.bytes;
    while (n < e.sizes.length && bytes > max) bytes -= e.sizes[n++]!;
    this.drop(e, n);
  }

  private drop(e: Entry, n: number): void {
    if (n <= 0) return;
    if (n >= e.events.length) {
      const last = e.first + e.events.length;
      this.clear(e);
      e.first = last;
      return;
    }
    let dropped = 0;
    for (let i = 0; i < n; i++) dropped += e.sizes[i]!;
    e.events.splice(0, n);
    e.sizes.splice(0, n);
    e.first += n;
    e.bytes -= dropped;
    this.total -= dropped;
  }

  private clear(e: Entry): void {
    this.total -= e.bytes;
    e.events = [];
    e.sizes = [];
    e.bytes = 0;
  }

  private touch(k: string, e: Entry): void {
    this.map.delete(k);
    this.map.set(k, e);
  }

  /** Drops least recently used machines (never `keep`) while over either bound. */
  private evict(keep: string): void {
    while (this.map.size > this.maxEntries || this.total > this.maxBytes) {
      const oldest = this.map.keys().next().value as string;
      if (oldest === keep) {
        if (this.map.size === 1) break;
        this.touch(keep, this.map.get(keep)!);
        continue;
      }
      this.delete(oldest);
    }
  }
}

/** Whether a window read for the entry's state still belongs to `state`. */
function fits(e: Entry, state: MachineState): boolean {
  if (e.events.length === 0) return true;
  return e.state.gen === state.gen && state.status !== 'none' && e.first + e.events.length - 1 <= state.lastEvent;
}
