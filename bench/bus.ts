/**
 * Bus benchmarks, each figure beside a peer measured in the same run.
 *
 * 1. Publish throughput (durable), millrace over gRPC against a node started
 *    in this process (SQLite, one shard, data on the real disk), beside NATS
 *    JetStream on the same machine (a file-storage stream created for the
 *    run and deleted after):
 *    - batched: unary `Publish` of 100 events per call, 8 calls in flight;
 *      peer: JetStream async publishes with as many messages in flight (800;
 *      this server has no batch publish).
 *    - streamed: many concurrent unary `Publish` calls of one event (256 in
 *      flight); peer: JetStream with 256 publishes in flight.
 *    - PublishStream: client-streaming calls of one event per message, 8
 *      streams in parallel, figure taken when every stream's answer arrived.
 *    Durability like for like: millrace `relaxed` (SQLite synchronous=NORMAL:
 *    no fsync per commit) against JetStream's default (no fsync per write).
 *    millrace `strict` (fsync at every commit) is compared with JetStream
 *    "sync always" only when the server can be set so; otherwise its peer is
 *    millrace relaxed in the same mode (the cost of the fsync).
 * 2. Publish→deliver latency through a gRPC `Subscribe` stream at a steady
 *    offered load (default 10,000 events/s: a small batch every ~1 ms on one
 *    bidirectional PublishBatches call, each event stamped when sent), beside a JetStream durable
 *    pull consumer with explicit acks at the same offered load. When millrace
 *    does not sustain the rate (see `sustained`), both run again at 1/2, 1/4
 *    and 1/10 of it until it does; every rate tried is printed.
 * 3. Catch-up replay: a subscription starting at `earliest` over 100k stored
 *    events, delivered over gRPC and acked, beside a raw `SELECT` of the same
 *    rows through better-sqlite3 (chunks of 1,000, as the cursor reads). The
 *    raw side does no per-event work: a ceiling, not a peer doing the job.
 *
 * The millrace node runs in this process's main thread; every client (of
 * both systems) runs in one worker thread of the same process; nats-server is
 * a separate process. Both share the machine's cores. No assertions.
 *
 * Knobs: BENCH_BUS_PUBLISH_MS (per throughput case, default 3000),
 * BENCH_BUS_LATENCY_RATE (events/s, 10000), BENCH_BUS_LATENCY_MS (5000),
 * BENCH_BUS_REPLAY_EVENTS (100000), BENCH_NATS_URL (127.0.0.1:4222),
 * BENCH_BUS_PARTS (publish,latency,replay), BENCH_BUS_FLOW_WINDOW (the
 * millrace clients' HTTP/2 receive window in bytes, default 16 MiB; 0 for
 * grpc-js's 64 KiB).
 */
import Database from 'better-sqlite3';
import { credentials, loadPackageDefinition, type Client, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { connect, AckPolicy, DeliverPolicy, StorageType, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { randomBytes } from 'node:crypto';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { join } from 'node:path';
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import { startNode, type Node } from '../src/serve.js';
import { busFace } from '../src/bus/face.js';
import type { Bus } from '../src/bus/bus.js';
import { BUS_PROTO } from '../src/api/grpc/bus-service.js';
import { matchEvent } from '../src/bus/subscription.js';
import { fmtRate, mb, pool, printTable, rate, RssSampler, scratchDir } from './support.js';

type Durability = 'strict' | 'relaxed';

const intEnv = (name: string, dflt: number): number => {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v > 0 ? v : dflt;
};

const PUBLISH_MS = intEnv('BENCH_BUS_PUBLISH_MS', 3000);
const WARMUP_MS = 500;
const BATCH = 100;
const BATCH_CALLS_IN_FLIGHT = 8;
const UNARY_IN_FLIGHT = 256;
const STREAMS = 8;
const LAT_RATE = intEnv('BENCH_BUS_LATENCY_RATE', 10_000);
const LAT_MS = intEnv('BENCH_BUS_LATENCY_MS', 5000);
const LAT_WARMUP_MS = 1000;
/**
 * A rate counts as sustained when nearly all of it was sent, all of it was
 * delivered, and no queue stood between publisher and subscriber (median
 * latency below this; a full in-flight window shows as median ≈ window / rate).
 */
const SUSTAINED_P50_MS = 50;
const sustained = (x: { rate: number; sentRate: number; missing: number; p50: number }) =>
  x.sentRate >= 0.95 * x.rate && x.missing === 0 && x.p50 < SUSTAINED_P50_MS;
/** The asked rate, then lower ones (halving, down to a tenth) if millrace does not sustain it. */
const latencyRates = (): number[] => [LAT_RATE, Math.round(LAT_RATE / 2), Math.round(LAT_RATE / 4), Math.round(LAT_RATE / 10)];
const REPLAY_EVENTS = intEnv('BENCH_BUS_REPLAY_EVENTS', 100_000);
const REPLAY_IN_FLIGHT = 5000;
const NATS_URL = process.env.BENCH_NATS_URL ?? '127.0.0.1:4222';
/**
 * The clients' HTTP/2 receive window (grpc-node.flow_control_window), bytes;
 * 0 = grpc-js default (64 KiB). A subscriber that replays a backlog is held
 * back by the default window (measured here: about 1.4x faster with 16 MiB).
 */
const FLOW_WINDOW = Number(process.env.BENCH_BUS_FLOW_WINDOW ?? 16 * 1024 * 1024);
/** Which parts to run: publish, latency, replay (default all). */
const PARTS = new Set((process.env.BENCH_BUS_PARTS ?? 'publish,latency,replay').split(','));
const TOPIC = 'bench';
const KEYS = 64;

// ---- payloads ----------------------------------------------------------------

/** The data of event i: a small business-like JSON object (~90 bytes). */
const payload = (i: number, t = 0) => ({ order: i, amount: '12.50', currency: 'EUR', customer: `c-${i % 1000}`, note: 'bench', t });
const keyOf = (i: number) => `k-${i % KEYS}`;
const enc = new TextEncoder();
const dec = new TextDecoder();

let seq = 0;
function pbEvent(t = 0): { topic: string; key: string; type: string; data: string } {
  const i = seq++;
  return { topic: TOPIC, key: keyOf(i), type: 'order.placed', data: JSON.stringify(payload(i, t)) };
}

// ---- the millrace side --------------------------------------------------------

interface Position {
  shard: string;
  pos: number;
  duplicate: boolean;
}
interface WireDelivery {
  deliveryId: string;
  shard: string;
  pos: number;
  event: { data: string };
}
interface BusClient extends Client {
  Publish(req: unknown, cb: (err: ServiceError | null, res: { positions: Position[] }) => void): void;
  PublishStream(cb: (err: ServiceError | null, res: { positions: Position[] }) => void): {
    write(m: unknown): boolean;
    end(): void;
    once(ev: 'drain', f: () => void): void;
  };
  Subscribe(): ClientDuplexStream<unknown, { opened?: unknown; delivery?: WireDelivery; batch?: { deliveries: WireDelivery[] } }>;
  PublishBatches(): ClientDuplexStream<unknown, { positions: Position[] }>;
}

const protoDef = loadSync(BUS_PROTO, { longs: Number, defaults: true, oneofs: true });
const BusCtor = (loadPackageDefinition(protoDef) as unknown as { millrace: { v1: { Bus: new (addr: string, creds: ReturnType<typeof credentials.createInsecure>, options?: Record<string, unknown>) => BusClient } } })
  .millrace.v1.Bus;

const publish = (c: BusClient, events: unknown[]): Promise<Position[]> =>
  new Promise((resolve, reject) => c.Publish({ events }, (err, res) => (err ? reject(err) : resolve(res.positions))));

interface MillraceNode {
  node: Node;
  bus: Bus;
  /** host:port of its gRPC server. */
  addr: string;
  dir: string;
}

async function withNode<T>(durability: Durability, fn: (n: MillraceNode) => Promise<T>): Promise<T> {
  const scratch = scratchDir();
  try {
    const input = {
      node_id: 'bench',
      data_dir: scratch.dir,
      http: { host: '127.0.0.1', port: 0, drain_timeout_ms: 500 },
      grpc: { enabled: true, host: '127.0.0.1', port: 0 },
      logging: { level: 'silent' },
      storage: { dialect: 'sqlite', durability },
      bus: { topics: [TOPIC] },
    } as ConfigInput;
    const node = await startNode(buildConfig(input), { faces: [busFace] });
    const bus = (node.faces.find((f) => f.name === 'bus') as unknown as { bus: Bus }).bus;
    try {
      return await fn({ node, bus, addr: `127.0.0.1:${node.grpc!.port}`, dir: scratch.dir });
    } finally {
      await clientThread().run({ kind: 'forget', addr: `127.0.0.1:${node.grpc!.port}` });
      await node.close();
    }
  } finally {
    scratch.cleanup();
  }
}

/** Runs `workers` loops of `op` (each returns the events it got acknowledged) for `ms`; the clock stops when the last call is answered. */
async function timed(ms: number, workers: number, op: () => Promise<number>): Promise<{ events: number; ms: number }> {
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

/** One client-streaming `PublishStream` call: writes one-event messages until `end`, honouring back-pressure. */
function publishStream(c: BusClient, end: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const call = c.PublishStream((err, res) => (err ? reject(err) : resolve(res.positions.length)));
    const pump = () => {
      while (performance.now() < end) {
        if (!call.write({ events: [pbEvent()] })) {
          call.once('drain', pump);
          return;
        }
      }
      call.end();
    };
    pump();
  });
}

type Mode = 'batched' | 'unary' | 'stream' | 'floor';

async function millracePublish(client: BusClient, mode: Mode, ms: number): Promise<{ events: number; ms: number }> {
  switch (mode) {
    case 'batched':
      return timed(ms, BATCH_CALLS_IN_FLIGHT, async () => (await publish(client, Array.from({ length: BATCH }, () => pbEvent()))).length);
    case 'unary':
      return timed(ms, UNARY_IN_FLIGHT, async () => (await publish(client, [pbEvent()])).length);
    case 'floor':
      // The transport alone: an empty Publish is refused (INVALID_ARGUMENT) before any work.
      return timed(ms, UNARY_IN_FLIGHT, () => new Promise<number>((resolve) => client.Publish({ events: [] }, () => resolve(1))));
    case 'stream': {
      const t0 = performance.now();
      const counts = await Promise.all(Array.from({ length: STREAMS }, () => publishStream(client, t0 + ms)));
      return { events: counts.reduce((a, b) => a + b, 0), ms: performance.now() - t0 };
    }
  }
}

// ---- the JetStream side -------------------------------------------------------

/** The stream made for the run (by the main thread). */
interface JetNames {
  stream: string;
  subject: string;
}

/** A client thread's own connection to it. */
interface Jet extends JetNames {
  nc: NatsConnection;
  jsm: JetStreamManager;
  js: JetStreamClient;
}

async function withJetStream<T>(fn: (j: JetNames & { serverVersion: string }) => Promise<T>): Promise<T> {
  const nc = await connect({ servers: NATS_URL, name: 'millrace-bench' });
  const tag = randomBytes(4).toString('hex');
  const stream = `MILLRACE_BENCH_${tag}`;
  const subject = `millrace_bench.${tag}`;
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: stream, subjects: [`${subject}.>`], storage: StorageType.File, num_replicas: 1 });
    try {
      return await fn({ stream, subject, serverVersion: nc.info?.version ?? '?' });
    } finally {
      await jsm.streams.delete(stream);
    }
  } finally {
    await nc.drain();
  }
}

function jetPublishOne(j: Jet, t = 0): Promise<unknown> {
  const i = seq++;
  return j.js.publish(`${j.subject}.${keyOf(i)}`, enc.encode(JSON.stringify(payload(i, t))));
}

async function jetPublish(j: Jet, inFlight: number, ms: number): Promise<{ events: number; ms: number }> {
  return timed(ms, inFlight, async () => {
    await jetPublishOne(j);
    return 1;
  });
}

// ---- latency ------------------------------------------------------------------

interface LatencyResult {
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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Offers `rate` events/s for warm-up + measure time: every ~1 ms, the
 * events due by now go out in one `send` (capped, and skipped while too many
 * sends are unanswered, so an overloaded system shows as a lower sent rate).
 * `received(t)` records a latency when the event was stamped inside the window.
 */
async function offeredLoad(rate: number, win: LoadWindow, send: (n: number, stamp: number) => Promise<unknown>, maxInFlight: number): Promise<number> {
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
interface LoadWindow {
  start: number;
  end: number;
}
const inWindow = (w: LoadWindow, t: number) => t >= w.start && t < w.end;

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond() && performance.now() < deadline) await sleep(5);
}

function summarize(rate: number, lat: number[], sentInWindow: number): LatencyResult {
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

async function millraceLatency(client: BusClient, rate: number): Promise<LatencyResult> {
  const lat: number[] = [];
  const win: LoadWindow = { start: Infinity, end: Infinity };
  let acks: string[] = [];
  const call = client.Subscribe();
  const flushAcks = () => {
    if (acks.length) call.write({ ack: { deliveryIds: acks } });
    acks = [];
  };
  const opened = new Promise<void>((resolve, reject) => {
    call.on('error', (e) => reject(e));
    call.on('data', (m: { opened?: unknown; batch?: { deliveries: WireDelivery[] } }) => {
      if (m.opened) resolve();
      const now = performance.now();
      for (const d of m.batch?.deliveries ?? []) {
        const t = (JSON.parse(d.event.data) as { t: number }).t;
        if (inWindow(win, t)) lat.push(now - t);
        if (acks.push(d.deliveryId) === 1) setImmediate(flushAcks);
        else if (acks.length >= 200) flushAcks();
      }
    });
  });
  call.write({ open: { subscription: `latency-${rate}`, config: { topics: [TOPIC], start: 'latest', maxInFlight: 2000 }, batch: true } });
  await opened;
  // One long PublishBatches call: each batch answered in order once durable (no unary call per batch).
  const pub = client.PublishBatches();
  const waiting: Array<() => void> = [];
  pub.on('data', () => waiting.shift()?.());
  pub.on('error', () => {});
  const sendBatch = (k: number, stamp: number) =>
    new Promise<void>((resolve) => {
      waiting.push(resolve);
      pub.write({ events: Array.from({ length: k }, () => pbEvent(stamp)) });
    });
  const sentInWindow = await offeredLoad(rate, win, sendBatch, 64);
  pub.end();
  await waitFor(() => lat.length >= sentInWindow, 5000);
  const res = summarize(rate, lat, sentInWindow);
  call.end();
  await new Promise<void>((r) => {
    call.on('status', () => r());
    call.on('error', () => r());
  });
  return res;
}

async function jetLatency(j: Jet, rate: number): Promise<LatencyResult> {
  const lat: number[] = [];
  const win: LoadWindow = { start: Infinity, end: Infinity };
  const durable = `latency_${rate}`;
  await j.jsm.consumers.add(j.stream, { durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, max_ack_pending: 2000 });
  const consumer = await j.js.consumers.get(j.stream, durable);
  const messages = await consumer.consume({ max_messages: 1000 });
  const loop = (async () => {
    for await (const m of messages) {
      const now = performance.now();
      const t = (JSON.parse(dec.decode(m.data)) as { t: number }).t;
      if (inWindow(win, t)) lat.push(now - t);
      m.ack();
    }
  })();
  await sleep(100);
  const sentInWindow = await offeredLoad(rate, win, async (k, stamp) => Promise.all(Array.from({ length: k }, () => jetPublishOne(j, stamp))), 64);
  await waitFor(() => lat.length >= sentInWindow, 5000);
  const res = summarize(rate, lat, sentInWindow);
  messages.stop();
  await loop.catch(() => {});
  await j.jsm.consumers.delete(j.stream, durable).catch(() => {});
  return res;
}

// ---- catch-up replay ----------------------------------------------------------

interface ReplayResult {
  events: number;
  grpcMs: number;
  /** The same, opened with batch = true. */
  grpcBatchMs: number;
  /** The same rows through the cursor engine and the subscription filter, in process (no transport). */
  inProcessMs: number;
  rawMs: number;
  prefillMs: number;
}

/** A gRPC subscription from earliest, acking as it goes; ms until `events` were delivered. */
async function grpcReplay(client: BusClient, events: number, batch: boolean): Promise<number> {
  let got = 0;
  let acks: string[] = [];
  const call = client.Subscribe();
  const flushAcks = () => {
    if (acks.length) call.write({ ack: { deliveryIds: acks } });
    acks = [];
  };
  const t0 = performance.now();
  const done = new Promise<number>((resolve, reject) => {
    call.on('error', (e) => reject(e));
    call.on('data', (m: { delivery?: WireDelivery; batch?: { deliveries: WireDelivery[] } }) => {
      for (const d of m.delivery ? [m.delivery] : (m.batch?.deliveries ?? [])) {
        got++;
        if (acks.push(d.deliveryId) === 1) setImmediate(flushAcks);
        else if (acks.length >= 500) flushAcks();
        if (got === events) resolve(performance.now() - t0);
      }
    });
  });
  call.write({ open: { subscription: batch ? 'replay-batch' : 'replay', config: { topics: [TOPIC], start: 'earliest', maxInFlight: REPLAY_IN_FLIGHT }, batch } });
  const ms = await done;
  flushAcks();
  call.end();
  await new Promise<void>((r) => {
    call.on('status', () => r());
    call.on('error', () => r());
  });
  return ms;
}

async function replay(n: MillraceNode): Promise<ReplayResult> {
  const tp = performance.now();
  const chunk = 1000;
  await pool(Math.ceil(REPLAY_EVENTS / chunk), 4, async (b) => {
    const k = Math.min(chunk, REPLAY_EVENTS - b * chunk);
    await n.bus.publish(Array.from({ length: k }, () => ({ ...pbEvent(), data: payload(seq) })));
  });
  const prefillMs = performance.now() - tp;
  const grpcMs = await clientThread().run<number>({ kind: 'mr-replay', addr: n.addr, events: REPLAY_EVENTS, batch: false });
  const grpcBatchMs = await clientThread().run<number>({ kind: 'mr-replay', addr: n.addr, events: REPLAY_EVENTS, batch: true });

  // In process: the cursor engine's chunked reads plus the subscription's match, no transport.
  const rt = n.node.runtime;
  const shard = rt.storage.shards[0]!.name;
  const topics = new Set([TOPIC]);
  const t1 = performance.now();
  let matched = 0;
  for await (const batch of rt.cursors.tail(shard, 0, { untilCaughtUp: true })) {
    for (const e of batch) if (matchEvent(e, topics, {}) !== null) matched++;
  }
  const inProcessMs = performance.now() - t1;
  if (matched !== REPLAY_EVENTS) process.stderr.write(`warning: in-process replay matched ${matched}, expected ${REPLAY_EVENTS}\n`);

  // Raw: the same rows, the same chunked query, through better-sqlite3.
  const db = new Database(join(n.dir, 's0.db'), { readonly: true });
  let rawMs: number;
  try {
    const q = db.prepare('SELECT pos, stream, seq, type, data, meta, created_at, hash FROM events WHERE pos > ? ORDER BY pos ASC LIMIT ?');
    const t2 = performance.now();
    let pos = 0;
    let rows = 0;
    for (;;) {
      const batch = q.all(pos, chunk) as Array<{ pos: number }>;
      if (batch.length === 0) break;
      rows += batch.length;
      pos = batch[batch.length - 1]!.pos;
    }
    rawMs = performance.now() - t2;
    if (rows < REPLAY_EVENTS) process.stderr.write(`warning: raw select read ${rows} rows, expected ≥ ${REPLAY_EVENTS}\n`);
  } finally {
    db.close();
  }
  return { events: REPLAY_EVENTS, grpcMs, grpcBatchMs, inProcessMs, rawMs, prefillMs };
}

// ---- the client thread ---------------------------------------------------------
//
// Every client (publishers and subscribers of both systems) runs in one worker
// thread, so the millrace node has this thread's event loop to itself, as
// nats-server has its own process.

type Task =
  | { kind: 'mr-publish'; addr: string; mode: Mode; ms: number }
  | { kind: 'mr-latency'; addr: string; rate: number }
  | { kind: 'mr-replay'; addr: string; events: number; batch: boolean }
  | { kind: 'jet-publish'; jet: JetNames; inFlight: number; ms: number }
  | { kind: 'jet-latency'; jet: JetNames; rate: number }
  | { kind: 'forget'; addr: string }
  | { kind: 'shutdown' };

class ClientThread {
  private readonly worker: Worker;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();

  constructor() {
    // tsx's hooks do not follow into workers by themselves: register them, then load this module.
    this.worker = new Worker(`import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(import.meta.url)}); })`, {
      eval: true,
      workerData: { millraceBusBenchClient: true },
    });
    this.worker.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: string }) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.ok) w?.resolve(m.value);
      else w?.reject(new Error(`client thread: ${m.error}`));
    });
    this.worker.on('error', (err) => {
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    });
  }

  run<T>(task: Task): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, task });
    });
  }

  async close(): Promise<void> {
    await this.run({ kind: 'shutdown' }).catch(() => {});
    await this.worker.terminate();
  }
}

let theClientThread: ClientThread | null = null;
const clientThread = (): ClientThread => (theClientThread ??= new ClientThread());

/** The worker side: one gRPC client per node address, one NATS connection. */
function serveClientTasks(): void {
  const clients = new Map<string, BusClient>();
  const busClient = (addr: string): BusClient => {
    let c = clients.get(addr);
    if (!c) clients.set(addr, (c = new BusCtor(addr, credentials.createInsecure(), FLOW_WINDOW ? { 'grpc-node.flow_control_window': FLOW_WINDOW } : {})));
    return c;
  };
  let nats: Promise<NatsConnection> | null = null;
  const jet = async (names: JetNames): Promise<Jet> => {
    const nc = await (nats ??= connect({ servers: NATS_URL, name: 'millrace-bench-client' }));
    return { ...names, nc, jsm: await nc.jetstreamManager(), js: nc.jetstream() };
  };
  const handle = async (task: Task): Promise<unknown> => {
    switch (task.kind) {
      case 'mr-publish':
        return millracePublish(busClient(task.addr), task.mode, task.ms);
      case 'mr-latency':
        return millraceLatency(busClient(task.addr), task.rate);
      case 'mr-replay':
        return grpcReplay(busClient(task.addr), task.events, task.batch);
      case 'jet-publish':
        return jetPublish(await jet(task.jet), task.inFlight, task.ms);
      case 'jet-latency':
        return jetLatency(await jet(task.jet), task.rate);
      case 'forget':
        clients.get(task.addr)?.close();
        clients.delete(task.addr);
        return null;
      case 'shutdown':
        for (const c of clients.values()) c.close();
        clients.clear();
        if (nats) await (await nats).drain();
        nats = null;
        return null;
    }
  };
  parentPort!.on('message', (m: { id: number; task: Task }) => {
    handle(m.task).then(
      (value) => parentPort!.postMessage({ id: m.id, ok: true, value }),
      (err: unknown) => parentPort!.postMessage({ id: m.id, ok: false, error: (err as Error)?.stack ?? String(err) }),
    );
  });
}

if (!isMainThread && (workerData as { millraceBusBenchClient?: boolean } | null)?.millraceBusBenchClient) serveClientTasks();

// ---- the run ------------------------------------------------------------------

const ms1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a) && Number.isFinite(b) ? (a / b).toFixed(2) : '-');

export async function run(): Promise<void> {
  const started = Date.now();
  const rss = new RssSampler();
  const out = (s: string) => process.stdout.write(s);
  const note = (s: string) => process.stderr.write(`  ${s}\n`);
  const ct = clientThread();
  try {
    await body(ct, out, note);
  } finally {
    theClientThread = null;
    await ct.close();
  }
  const mem = process.memoryUsage();
  out(`\npeak rss ${mb(rss.stop())} (this thread and the client thread), heap used at end ${mb(mem.heapUsed)}; ${((Date.now() - started) / 1000).toFixed(1)} s in all\n`);
}

async function body(ct: ClientThread, out: (s: string) => void, note: (s: string) => void): Promise<void> {
  await withJetStream(async (j) => {
    // ---- 1. publish throughput ------------------------------------------------
    if (PARTS.has('publish')) await publishPart(j, ct, out, note);
    // ---- 2. latency --------------------------------------------------------------
    if (PARTS.has('latency')) await latencyPart(j, ct, out, note);
  });

  // ---- 3. catch-up replay ---------------------------------------------------------
  if (PARTS.has('replay')) await replayPart(out, note);
}

async function publishPart(j: JetNames & { serverVersion: string }, ct: ClientThread, out: (s: string) => void, note: (s: string) => void): Promise<void> {
  {
    const mr: Record<Durability, Partial<Record<Mode, { events: number; ms: number }>>> = { relaxed: {}, strict: {} };
    const jet: { batched?: { events: number; ms: number }; unary?: { events: number; ms: number } } = {};
    for (const durability of ['relaxed', 'strict'] as const) {
      await withNode(durability, async (n) => {
        const mrPublish = (mode: Mode, ms: number) => ct.run<{ events: number; ms: number }>({ kind: 'mr-publish', addr: n.addr, mode, ms });
        const jetPub = (inFlight: number, ms: number) => ct.run<{ events: number; ms: number }>({ kind: 'jet-publish', jet: { stream: j.stream, subject: j.subject }, inFlight, ms });
        await mrPublish('batched', WARMUP_MS);
        for (const mode of ['batched', 'unary', 'stream'] as const) {
          note(`publish: millrace ${durability} ${mode} ...`);
          mr[durability][mode] = await mrPublish(mode, PUBLISH_MS);
          if (durability === 'relaxed' && mode !== 'stream') {
            note(`publish: JetStream ${mode === 'batched' ? BATCH * BATCH_CALLS_IN_FLIGHT : UNARY_IN_FLIGHT} in flight ...`);
            if (!jet.batched) await jetPub(256, WARMUP_MS);
            jet[mode] = await jetPub(mode === 'batched' ? BATCH * BATCH_CALLS_IN_FLIGHT : UNARY_IN_FLIGHT, PUBLISH_MS);
          }
        }
        if (durability === 'relaxed') mr.relaxed.floor = await mrPublish('floor', Math.min(PUBLISH_MS, 2000));
      });
    }
    const r = (x: { events: number; ms: number } | undefined) => (x ? rate(x.events, x.ms) : NaN);
    out('\nPublish throughput (durable), events/s\n');
    const jb = r(jet.batched);
    const ju = r(jet.unary);
    printTable(
      ['case', 'millrace ev/s', 'peer', 'peer ev/s', 'ratio'],
      [
        [`relaxed, Publish ${BATCH} ev/call, ${BATCH_CALLS_IN_FLIGHT} calls in flight`, fmtRate(r(mr.relaxed.batched)), `JetStream default, ${BATCH * BATCH_CALLS_IN_FLIGHT} in flight`, fmtRate(jb), ratio(r(mr.relaxed.batched), jb)],
        [`relaxed, Publish 1 ev/call, ${UNARY_IN_FLIGHT} calls in flight`, fmtRate(r(mr.relaxed.unary)), `JetStream default, ${UNARY_IN_FLIGHT} in flight`, fmtRate(ju), ratio(r(mr.relaxed.unary), ju)],
        [`relaxed, PublishStream 1 ev/msg, ${STREAMS} streams`, fmtRate(r(mr.relaxed.stream)), `JetStream default, ${UNARY_IN_FLIGHT} in flight`, fmtRate(ju), ratio(r(mr.relaxed.stream), ju)],
        [`strict, Publish ${BATCH} ev/call, ${BATCH_CALLS_IN_FLIGHT} calls in flight`, fmtRate(r(mr.strict.batched)), 'millrace relaxed, same mode', fmtRate(r(mr.relaxed.batched)), ratio(r(mr.strict.batched), r(mr.relaxed.batched))],
        [`strict, Publish 1 ev/call, ${UNARY_IN_FLIGHT} calls in flight`, fmtRate(r(mr.strict.unary)), 'millrace relaxed, same mode', fmtRate(r(mr.relaxed.unary)), ratio(r(mr.strict.unary), r(mr.relaxed.unary))],
        [`strict, PublishStream 1 ev/msg, ${STREAMS} streams`, fmtRate(r(mr.strict.stream)), 'millrace relaxed, same mode', fmtRate(r(mr.relaxed.stream)), ratio(r(mr.strict.stream), r(mr.relaxed.stream))],
      ],
    );
    out(
      `durability: millrace relaxed = SQLite WAL synchronous=NORMAL (no fsync per commit) vs JetStream ${j.serverVersion} file store at its default (no fsync per write;\n` +
        `  data synced in the background). millrace strict = WAL fdatasync after every group commit, before acknowledging. JetStream "sync always" cannot be compared:\n` +
        `  it is a server-wide config setting (jetstream.sync_interval), not a stream or client option, and this ${j.serverVersion} server has no such setting\n` +
        `  (\`nats-server -t\` refuses the field); the local server runs with its defaults. So strict rows show the cost of fsync against millrace relaxed instead.\n` +
        `gRPC floor: ${fmtRate(r(mr.relaxed.floor))} calls/s for a unary call that does no work (an empty Publish, refused), ${UNARY_IN_FLIGHT} in flight:\n` +
        `  one-event unary publishing is bound by grpc-js per-call cost here, not by the bus.\n` +
        `events carry a key (${KEYS} keys) and no id (no dedupe on either side); ~110-byte JSON data; JetStream subject per key; ${(PUBLISH_MS / 1000).toFixed(1)} s per case.\n`,
    );

  }
}

async function latencyPart(j: JetNames & { serverVersion: string }, ct: ClientThread, out: (s: string) => void, note: (s: string) => void): Promise<void> {
  {
    // At the asked rate first; while millrace does not sustain it, again at lower rates (both systems each time).
    const tried: Array<{ m: LatencyResult; j: LatencyResult }> = [];
    for (const rate of latencyRates()) {
      note(`latency: millrace relaxed at ${rate} ev/s ...`);
      const m = await withNode('relaxed', (n) => ct.run<LatencyResult>({ kind: 'mr-latency', addr: n.addr, rate }));
      note(`latency: JetStream at ${rate} ev/s ...`);
      const jl = await ct.run<LatencyResult>({ kind: 'jet-latency', jet: { stream: j.stream, subject: j.subject }, rate });
      tried.push({ m, j: jl });
      if (sustained(m)) break;
    }
    const best = tried.find((t) => sustained(t.m));
    out(
      `\nPublish→deliver latency, ${(LAT_MS / 1000).toFixed(0)} s measured after ${(LAT_WARMUP_MS / 1000).toFixed(0)} s warm-up at each offered rate, ms` +
        ` (sustained = ≥ 95% of the offered rate sent, every event delivered, p50 < ${SUSTAINED_P50_MS} ms: no standing queue)\n`,
    );
    const row = (who: string, x: LatencyResult) => [
      who,
      fmtRate(x.rate),
      fmtRate(x.sentRate),
      String(x.delivered),
      String(x.missing),
      ms1(x.p50),
      ms1(x.p99),
      ms1(x.p999),
      ms1(x.max),
      sustained(x) ? 'yes' : 'no',
    ];
    printTable(
      ['system', 'offered ev/s', 'sent ev/s', 'delivered', 'missing', 'p50', 'p99', 'p99.9', 'max', 'sustained'],
      tried.flatMap((t) => [row('millrace relaxed, gRPC Subscribe batch, acks', t.m), row('JetStream default, pull consumer, acks', t.j)]),
    );
    for (const t of tried) {
      out(`ratio millrace/JetStream at ${fmtRate(t.m.rate)} ev/s offered: p50 ${ratio(t.m.p50, t.j.p50)}, p99 ${ratio(t.m.p99, t.j.p99)} (lower is better for millrace)\n`);
    }
    out(
      (best
        ? `highest offered rate millrace sustained here: ${fmtRate(best.m.rate)} ev/s (p99 ${ms1(best.m.p99)} ms; target p99 < 10 ms at 10,000 ev/s)\n`
        : `millrace sustained none of the offered rates on this machine (target p99 < 10 ms at 10,000 ev/s)\n`) +
        `load: every ~1 ms the events due go out at once (millrace: one PublishBatches message of the ~rate/1000 events due, on one long call; JetStream: one publish per event, no batch API),\n` +
        `  ≤ 64 sends unanswered; latency = receipt at the subscriber − the moment the send was issued; max_in_flight / max_ack_pending 2000;\n` +
        `  publisher and subscriber run in the client thread; the millrace node has the main thread; nats-server its own process.\n`,
    );
  }
}

async function replayPart(out: (s: string) => void, note: (s: string) => void): Promise<void> {
  note(`replay: prefill ${REPLAY_EVENTS} events, then replay ...`);
  const rp = await withNode('relaxed', (n) => replay(n));
  out(`\nCatch-up replay of ${fmtRate(rp.events)} stored events (subscription start = earliest), events/s\n`);
  const g = rate(rp.events, rp.grpcMs);
  const gb = rate(rp.events, rp.grpcBatchMs);
  const ip = rate(rp.events, rp.inProcessMs);
  const raw = rate(rp.events, rp.rawMs);
  printTable(
    ['path', 'events/s', 'raw SELECT ev/s', 'ratio'],
    [
      [`gRPC Subscribe, batch, max_in_flight ${REPLAY_IN_FLIGHT}, acked`, fmtRate(gb), fmtRate(raw), ratio(gb, raw)],
      [`gRPC Subscribe, one delivery per message, max_in_flight ${REPLAY_IN_FLIGHT}, acked`, fmtRate(g), fmtRate(raw), ratio(g, raw)],
      ['in process: cursor tail + filter (no transport)', fmtRate(ip), fmtRate(raw), ratio(ip, raw)],
    ],
  );
  out(
    `raw = better-sqlite3 SELECT of the same rows (same columns, chunks of 1000 by pos), no decoding: a ceiling; target ≥ 0.50 for the gRPC rows\n` +
      `the subscriber's HTTP/2 receive window: ${FLOW_WINDOW ? `${FLOW_WINDOW} bytes (grpc-node.flow_control_window)` : "grpc-js's default, 64 KiB"}\n` +
      `(prefill: ${fmtRate(rate(rp.events, rp.prefillMs))} events/s in process, relaxed, batches of 1000)\n`,
  );
}
