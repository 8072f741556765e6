/**
 * What the bus benchmark's parts share: knobs, payloads, the millrace gRPC
 * client type, timing loops and latency statistics.
 */
import type { credentials, Client, ClientDuplexStream, ServiceError } from '@grpc/grpc-js';
import { millraceService } from '../../src/api/grpc/protos.js';

export type Durability = 'strict' | 'relaxed';

export const intEnv = (name: string, dflt: number): number => {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v > 0 ? v : dflt;
};

export const PUBLISH_MS = intEnv('BENCH_BUS_PUBLISH_MS', 3000);
export const WARMUP_MS = 500;
export const BATCH = 100;
export const BATCH_CALLS_IN_FLIGHT = 8;
export const UNARY_IN_FLIGHT = 256;
export const STREAMS = 8;
export const LAT_RATE = intEnv('BENCH_BUS_LATENCY_RATE', 10_000);
export const LAT_MS = intEnv('BENCH_BUS_LATENCY_MS', 5000);
export const LAT_WARMUP_MS = 1000;
/**
 * A rate counts as sustained when nearly all of it was sent, all of it was
 * delivered, and no queue stood between publisher and subscriber (median
 * latency below this; a full in-flight window shows as median ≈ window / rate).
 */
export const SUSTAINED_P50_MS = 50;
export const sustained = (x: { rate: number; sentRate: number; missing: number; p50: number }) =>
  x.sentRate >= 0.95 * x.rate && x.missing === 0 && x.p50 < SUSTAINED_P50_MS;
/** The asked rate, then lower ones (halving, down to a tenth) if millrace does not sustain it. */
export const latencyRates = (): number[] => [
  LAT_RATE,
  Math.round(LAT_RATE / 2),
  Math.round(LAT_RATE / 4),
  Math.round(LAT_RATE / 10),
];
export const REPLAY_EVENTS = intEnv('BENCH_BUS_REPLAY_EVENTS', 100_000);
export const REPLAY_IN_FLIGHT = 5000;
export const NATS_URL = process.env.BENCH_NATS_URL ?? '127.0.0.1:4222';
/**
 * The clients' HTTP/2 receive window (grpc-node.flow_control_window), bytes;
 * 0 = grpc-js default (64 KiB). A subscriber that replays a backlog is held
 * back by the default window (measured here: about 1.4x faster with 16 MiB).
 */
export const FLOW_WINDOW = Number(process.env.BENCH_BUS_FLOW_WINDOW ?? 16 * 1024 * 1024);
/** Which parts to run: publish, latency, replay (default all). */
export const PARTS = new Set((process.env.BENCH_BUS_PARTS ?? 'publish,latency,replay').split(','));
export const TOPIC = 'bench';
export const KEYS = 64;

// ---- payloads ----------------------------------------------------------------

/** The data of event i: a small business-like JSON object (~90 bytes). */
export const payload = (i: number, t = 0) => ({
  order: i,
  amount: '12.50',
  currency: 'EUR',
  customer: `c-${i % 1000}`,
  note: 'bench',
  t,
});
export const keyOf = (i: number) => `k-${i % KEYS}`;
export const enc = new TextEncoder();
export const dec = new TextDecoder();

let seq = 0;
/** The next event index (events of both systems count on one sequence). */
export const nextIndex = (): number => seq++;
export function pbEvent(t = 0): { topic: string; key: string; type: string; data: string } {
  const i = nextIndex();
  return { topic: TOPIC, key: keyOf(i), type: 'order.placed', data: JSON.stringify(payload(i, t)) };
}

// ---- the millrace gRPC client ---------------------------------------------------

export interface Position {
  shard: string;
  pos: number;
  duplicate: boolean;
}
export interface WireDelivery {
  deliveryId: string;
  shard: string;
  pos: number;
  event: { data: string };
}
export interface BusClient extends Client {
  Publish(req: unknown, cb: (err: ServiceError | null, res: { positions: Position[] }) => void): void;
  PublishStream(cb: (err: ServiceError | null, res: { positions: Position[] }) => void): {
    write(m: unknown): boolean;
    end(): void;
    once(ev: 'drain', f: () => void): void;
  };
  Subscribe(): ClientDuplexStream<
    unknown,
    { opened?: unknown; delivery?: WireDelivery; batch?: { deliveries: WireDelivery[] } }
  >;
  PublishBatches(): ClientDuplexStream<unknown, { positions: Position[] }>;
}

export const BusCtor = millraceService('Bus', 'camel') as unknown as new (
  addr: string,
  creds: ReturnType<typeof credentials.createInsecure>,
  options?: Record<string, unknown>,
) => BusClient;

export const publish = (c: BusClient, events: unknown[]): Promise<Position[]> =>
  new Promise((resolve, reject) => c.Publish({ events }, (err, res) => (err ? reject(err) : resolve(res.positions))));

/** Runs `workers` loops of `op` (each returns the events it got acknowledged) for `ms`; the clock stops when the last call is answered. */
export async function timed(
  ms: number,
  workers: number,
  op: () => Promise<number>,
): Promise<{ events: number; ms: number }> {
  let events = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (performance.now() < end) {
        const k = await op(); // not `events += await op()`: that reads `events` before the await and loses the other workers' counts
        events += k;
      }
    }),
  );
  return { events, ms: performance.now() - t0 };
}

export type Mode = 'batched' | 'unary' | 'stream' | 'pipelined' | 'floor';

// ---- latency statistics ---------------------------------------------------------

export interface LatencyResult {
  /** Offered events/s. */
  rate: number;
  /** Events the publisher sent per second over the measured window. */
  sentRate: number;
  /** Events delivered in the measured window. */
  delivered: number;
  /** Sent in the measured window but not delivered within the drain time. */
  missing: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Offers `rate` events/s for warm-up + measure time: every ~1 ms, the
 * events due by now go out in one `send` (capped, and skipped while too many
 * sends are unanswered, so an overloaded system shows as a lower sent rate).
 * `received(t)` records a latency when the event was stamped inside the window.
 */
export async function offeredLoad(
  rate: number,
  win: LoadWindow,
  send: (n: number, stamp: number) => Promise<unknown>,
  maxInFlight: number,
): Promise<number> {
  const t0 = performance.now();
  const windowStart = (win.start = t0 + LAT_WARMUP_MS);
  const windowEnd = (win.end = windowStart + LAT_MS);
  let sent = 0;
  let sentInWindow = 0;
  let inFlight = 0;
  const pending = new Set<Promise<unknown>>();
  for (;;) {
    const now = performance.now();
    if (now >= windowEnd) break;
    const due = Math.floor(((now - t0) * rate) / 1000);
    if (due > sent && inFlight < maxInFlight) {
      const n = Math.min(due - sent, 1000);
      sent += n;
      if (now >= windowStart) sentInWindow += n;
      inFlight++;
      const p = send(n, now).finally(() => {
        inFlight--;
        pending.delete(p);
      });
      pending.add(p);
    }
    await sleep(1);
  }
  await Promise.all(pending);
  return sentInWindow;
}

/** The measured window (performance.now() times); events stamped outside it are warm-up. */
export interface LoadWindow {
  start: number;
  end: number;
}
export const inWindow = (w: LoadWindow, t: number) => t >= w.start && t < w.end;

export async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond() && performance.now() < deadline) await sleep(5);
}

export function summarize(rate: number, lat: number[], sentInWindow: number): LatencyResult {
  lat.sort((a, b) => a - b);
  return {
    rate,
    sentRate: (sentInWindow * 1000) / LAT_MS,
    delivered: lat.length,
    missing: Math.max(0, sentInWindow - lat.length),
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    p999: pct(lat, 99.9),
    max: lat.length ? lat[lat.length - 1]! : NaN,
  };
}

export const ms1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
export const ratio = (a: number, b: number) =>
  b > 0 && Number.isFinite(a) && Number.isFinite(b) ? (a / b).toFixed(2) : '-';
