/**
 * The node's own activity over the last hour, for the console's charts:
 * faces count what they do (`Activity`), and `Series` samples those counters
 * at a fixed interval into ring buffers held in memory (nothing is stored;
 * a restart starts a fresh hour). Rates are per second over each interval;
 * p99 latencies are of the operations that ended within the interval.
 */

/** What faces count: bus publishes and deliveries, machine calls and steps, pipe pushes. */
export type ActivityKind = 'publish' | 'deliver' | 'call' | 'step' | 'push';
export const ACTIVITY_KINDS: readonly ActivityKind[] = ['publish', 'deliver', 'call', 'step', 'push'];
/** The kinds whose duration is timed (a delivery has no duration of its own). */
export const TIMED_KINDS: readonly ActivityKind[] = ['publish', 'call', 'step', 'push'];

/** Latency samples kept per kind and interval: beyond this, a uniform reservoir sample. */
const RESERVOIR = 2048;

/** Counters and latency samples of this node, written by the faces. */
export class Activity {
  private readonly totals = new Map<ActivityKind, number>(ACTIVITY_KINDS.map((k) => [k, 0]));
  private readonly steps = new Map<string, number>();
  private readonly samples = new Map<ActivityKind, { seen: number; ms: number[] }>();

  /** Counts `n` operations of `kind`; a step names its namespace (step rates per namespace). */
  count(kind: ActivityKind, n = 1, namespace?: string): void {
    this.totals.set(kind, (this.totals.get(kind) ?? 0) + n);
    if (namespace !== undefined) this.steps.set(namespace, (this.steps.get(namespace) ?? 0) + n);
  }

  /** Records the duration of one operation of `kind` (and counts it when `count` is true). */
  time(kind: ActivityKind, ms: number, count = false, namespace?: string): void {
    if (count) this.count(kind, 1, namespace);
    let s = this.samples.get(kind);
    if (s === undefined) this.samples.set(kind, (s = { seen: 0, ms: [] }));
    s.seen++;
    if (s.ms.length < RESERVOIR) s.ms.push(ms);
    else {
      const i = Math.floor(Math.random() * s.seen);
      if (i < RESERVOIR) s.ms[i] = ms;
    }
  }

  /** Times `fn`, counting it as one operation of `kind` whether it succeeds or throws. */
  async timed<T>(kind: ActivityKind, fn: () => Promise<T>, namespace?: string): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      this.time(kind, performance.now() - t0, true, namespace);
    }
  }

  total(kind: ActivityKind): number {
    return this.totals.get(kind) ?? 0;
  }

  /** Steps per namespace since the node started. */
  stepsByNamespace(): Map<string, number> {
    return new Map(this.steps);
  }

  /** The p99 of the durations recorded since the last call (null when none), and forgets them. */
  takeP99(kind: ActivityKind): number | null {
    const s = this.samples.get(kind);
    if (s === undefined || s.ms.length === 0) return null;
    this.samples.set(kind, { seen: 0, ms: [] });
    return quantile(s.ms, 0.99);
  }
}

/** The q-quantile of `xs` (nearest rank). */
export function quantile(xs: readonly number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

/** A fixed-size ring of numbers (or null: no value for that sample). */
export class Ring {
  private readonly buf: Array<number | null>;
  private start = 0;
  private size = 0;
  constructor(readonly capacity: number) {
    this.buf = new Array<number | null>(capacity).fill(null);
  }
  push(v: number | null): void {
    if (this.size < this.capacity) {
      this.buf[(this.start + this.size) % this.capacity] = v;
      this.size++;
    } else {
      this.buf[this.start] = v;
      this.start = (this.start + 1) % this.capacity;
    }
  }
  get length(): number {
    return this.size;
  }
  /** Oldest first. */
  toArray(): Array<number | null> {
    const out: Array<number | null> = [];
    for (let i = 0; i < this.size; i++) out.push(this.buf[(this.start + i) % this.capacity]!);
    return out;
  }
}

/** The answer of `GET /v1/metrics/series`: sample times (ms) and one column per series, aligned with them. */
export interface SeriesAnswer {
  interval_ms: number;
  window_ms: number;
  t: number[];
  series: Record<string, Array<number | null>>;
}

export interface SeriesOptions {
  intervalMs?: number;
  windowMs?: number;
  now?: () => number;
  onError?: (err: unknown, gauge: string) => void;
}

/**
 * Samples `Activity` every `intervalMs` and keeps `windowMs` of samples:
 * `<kind>_per_s` rates, `p99_<kind>_ms` latencies, `steps_per_s:<namespace>`
 * and the gauges faces register (e.g. `subscription_lag`).
 */
export class Series {
  readonly intervalMs: number;
  readonly windowMs: number;
  private readonly capacity: number;
  private readonly times: Ring;
  private readonly rings = new Map<string, Ring>();
  private readonly gauges = new Map<
    string,
    { read: () => Promise<number | null> | number | null; everyMs: number; lastAt: number }
  >();
  private readonly gaugeValues = new Map<string, number | null>();
  private readonly gaugeBusy = new Set<string>();
  private last: { at: number; totals: Map<ActivityKind, number>; steps: Map<string, number> } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly now: () => number;

  constructor(
    private readonly activity: Activity,
    private readonly opts: SeriesOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 2000;
    this.windowMs = opts.windowMs ?? 3_600_000;
    this.capacity = Math.max(2, Math.ceil(this.windowMs / this.intervalMs));
    this.times = new Ring(this.capacity);
    this.now = opts.now ?? Date.now;
  }

  /**
   * A value read at each sample, or at most every `everyMs` (a costly read:
   * the samples between repeat its last value); a read still running when
   * the next is due is not started again.
   */
  gauge(name: string, read: () => Promise<number | null> | number | null, everyMs = 0): void {
    this.gauges.set(name, { read, everyMs, lastAt: Number.NEGATIVE_INFINITY });
  }

  start(): void {
    if (this.timer !== null) return;
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Takes one sample now (the timer's work; tests call it directly). */
  sample(): void {
    const at = this.now();
    const totals = new Map(ACTIVITY_KINDS.map((k) => [k, this.activity.total(k)]));
    const steps = this.activity.stepsByNamespace();
    const prev = this.last;
    this.last = { at, totals, steps };
    for (const name of this.gauges.keys()) this.readGauge(name, at);
    if (prev === null) {
      // The first sample is the baseline of the rates.
      for (const k of TIMED_KINDS) this.activity.takeP99(k);
      return;
    }
    const dt = Math.max(1, at - prev.at) / 1000;
    const row = new Map<string, number | null>();
    for (const k of ACTIVITY_KINDS)
      row.set(`${k}_per_s`, round(((totals.get(k) ?? 0) - (prev.totals.get(k) ?? 0)) / dt));
    for (const k of TIMED_KINDS) {
      const p = this.activity.takeP99(k);
      row.set(`p99_${k}_ms`, p === null ? null : round(p));
    }
    for (const [ns, n] of steps) row.set(`steps_per_s:${ns}`, round((n - (prev.steps.get(ns) ?? 0)) / dt));
    for (const [name, v] of this.gaugeValues) row.set(name, v);
    const before = this.times.length;
    this.times.push(at);
    for (const [name, v] of row) {
      let r = this.rings.get(name);
      if (r === undefined) {
        // A series that appears late is null for the samples before it.
        r = new Ring(this.capacity);
        for (let i = 0; i < before; i++) r.push(null);
        this.rings.set(name, r);
      }
      r.push(v);
    }
    for (const [name, r] of this.rings) if (!row.has(name)) r.push(null);
  }

  private readGauge(name: string, at: number): void {
    const g = this.gauges.get(name)!;
    if (this.gaugeBusy.has(name) || at - g.lastAt < g.everyMs) return;
    g.lastAt = at;
    let v: Promise<number | null> | number | null;
    try {
      v = g.read();
    } catch (err) {
      this.opts.onError?.(err, name);
      this.gaugeValues.set(name, null);
      return;
    }
    if (typeof v === 'number' || v === null) {
      this.gaugeValues.set(name, v);
      return;
    }
    this.gaugeBusy.add(name);
    v.then(
      (x) => this.gaugeValues.set(name, x),
      (err: unknown) => {
        this.opts.onError?.(err, name);
        this.gaugeValues.set(name, null);
      },
    ).finally(() => this.gaugeBusy.delete(name));
  }

  /** The samples taken after `since` (ms; all of the window when omitted), of the series `names` (all when omitted). */
  read(opts: { since?: number | undefined; names?: readonly string[] | undefined } = {}): SeriesAnswer {
    const t = this.times.toArray() as number[];
    let from = 0;
    if (opts.since !== undefined) while (from < t.length && t[from]! <= opts.since) from++;
    const series: Record<string, Array<number | null>> = {};
    const wanted = opts.names === undefined || opts.names.length === 0 ? null : new Set(opts.names);
    for (const [name, r] of [...this.rings].sort(([a], [b]) => a.localeCompare(b))) {
      if (wanted !== null && !wanted.has(name) && !(name.includes(':') && wanted.has(name.slice(0, name.indexOf(':')))))
        continue;
      series[name] = r.toArray().slice(from);
    }
    return { interval_ms: this.intervalMs, window_ms: this.windowMs, t: t.slice(from), series };
  }
}

const round = (x: number): number => Math.round(x * 1000) / 1000;
