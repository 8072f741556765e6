/** The millrace side of the bus benchmark: a node, publishing modes, latency and replay. */
import Database from 'better-sqlite3';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { busFace } from '../../src/bus/face.js';
import type { Bus } from '../../src/bus/bus.js';
import { matchEvent } from '../../src/bus/subscription.js';
import { pool, scratchDir } from '../support.js';
import { clientThread } from './client-thread.js';
import {
  BATCH,
  BATCH_CALLS_IN_FLIGHT,
  nextIndex,
  offeredLoad,
  payload,
  pbEvent,
  publish,
  REPLAY_EVENTS,
  REPLAY_IN_FLIGHT,
  STREAMS,
  summarize,
  timed,
  TOPIC,
  UNARY_IN_FLIGHT,
  waitFor,
  type BusClient,
  type Durability,
  type LatencyResult,
  type LoadWindow,
  type Mode,
  type WireDelivery,
  inWindow,
} from './common.js';

export interface MillraceNode {
  node: Node;
  bus: Bus;
  /** host:port of its gRPC server. */
  addr: string;
  dir: string;
}

export async function withNode<T>(durability: Durability, fn: (n: MillraceNode) => Promise<T>): Promise<T> {
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

/**
 * One-event publishes over HTTP/1.1 keep-alive (node:http, one kept-alive
 * connection per request in flight), UNARY_IN_FLIGHT at once, for `ms`.
 */
export async function httpPublish(url: string, ms: number): Promise<{ events: number; ms: number }> {
  const u = new URL(url);
  const agent = new Agent({ keepAlive: true, maxSockets: UNARY_IN_FLIGHT });
  const path = `/v1/bus/topics/${TOPIC}/events`;
  const post = () =>
    new Promise<number>((resolve, reject) => {
      const e = pbEvent();
      const body = JSON.stringify({ events: [{ key: e.key, type: e.type, data: JSON.parse(e.data) as unknown }] });
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          method: 'POST',
          path,
          agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () =>
            res.statusCode === 200 ? resolve(1) : reject(new Error(`HTTP ${res.statusCode}: ${text}`)),
          );
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  try {
    return await timed(ms, UNARY_IN_FLIGHT, post);
  } finally {
    agent.destroy();
  }
}

/** One client-streaming `PublishStream` call: writes one-event messages until `end`, honouring back-pressure. */
export function publishStream(c: BusClient, end: number): Promise<number> {
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

/**
 * One-event messages on one bidirectional `PublishBatches` call, each
 * answered once durable: UNARY_IN_FLIGHT unanswered at most (as a JetStream
 * client keeps its async publishes), for `ms`; counts the answered events.
 */
function pipelined(c: BusClient, ms: number): Promise<{ events: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const call = c.PublishBatches();
    const t0 = performance.now();
    const end = t0 + ms;
    let sent = 0;
    let answered = 0;
    let done = false;
    const pump = (): void => {
      while (!done && performance.now() < end && sent - answered < UNARY_IN_FLIGHT) {
        sent++;
        if (!call.write({ events: [pbEvent()] })) {
          call.once('drain', pump);
          return;
        }
      }
      if (!done && performance.now() >= end && answered === sent) {
        done = true;
        const took = performance.now() - t0;
        call.end();
        resolve({ events: answered, ms: took });
      }
    };
    call.on('data', () => {
      answered++;
      pump();
    });
    call.on('error', (err: Error) => {
      if (!done) reject(err);
    });
    pump();
  });
}

export async function millracePublish(
  client: BusClient,
  mode: Mode,
  ms: number,
): Promise<{ events: number; ms: number }> {
  switch (mode) {
    case 'batched':
      return timed(
        ms,
        BATCH_CALLS_IN_FLIGHT,
        async () =>
          (
            await publish(
              client,
              Array.from({ length: BATCH }, () => pbEvent()),
            )
          ).length,
      );
    case 'unary':
      return timed(ms, UNARY_IN_FLIGHT, async () => (await publish(client, [pbEvent()])).length);
    case 'pipelined':
      return pipelined(client, ms);
    case 'floor':
      // The transport alone: an empty Publish is refused (INVALID_ARGUMENT) before any work.
      return timed(
        ms,
        UNARY_IN_FLIGHT,
        () => new Promise<number>((resolve) => client.Publish({ events: [] }, () => resolve(1))),
      );
    case 'stream': {
      const t0 = performance.now();
      const counts = await Promise.all(Array.from({ length: STREAMS }, () => publishStream(client, t0 + ms)));
      return { events: counts.reduce((a, b) => a + b, 0), ms: performance.now() - t0 };
    }
  }
}

export async function millraceLatency(client: BusClient, rate: number): Promise<LatencyResult> {
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
  call.write({
    open: {
      subscription: `latency-${rate}`,
      config: { topics: [TOPIC], start: 'latest', maxInFlight: 2000 },
      batch: true,
    },
  });
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

export interface ReplayResult {
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
export async function grpcReplay(client: BusClient, events: number, batch: boolean): Promise<number> {
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
  call.write({
    open: {
      subscription: batch ? 'replay-batch' : 'replay',
      config: { topics: [TOPIC], start: 'earliest', maxInFlight: REPLAY_IN_FLIGHT },
      batch,
    },
  });
  const ms = await done;
  flushAcks();
  call.end();
  await new Promise<void>((r) => {
    call.on('status', () => r());
    call.on('error', () => r());
  });
  return ms;
}

export async function replay(n: MillraceNode): Promise<ReplayResult> {
  const tp = performance.now();
  const chunk = 1000;
  await pool(Math.ceil(REPLAY_EVENTS / chunk), 4, async (b) => {
    const k = Math.min(chunk, REPLAY_EVENTS - b * chunk);
    await n.bus.publish(Array.from({ length: k }, () => ({ ...pbEvent(), data: payload(nextIndex()) })));
  });
  const prefillMs = performance.now() - tp;
  const grpcMs = await clientThread().run<number>({
    kind: 'mr-replay',
    addr: n.addr,
    events: REPLAY_EVENTS,
    batch: false,
  });
  const grpcBatchMs = await clientThread().run<number>({
    kind: 'mr-replay',
    addr: n.addr,
    events: REPLAY_EVENTS,
    batch: true,
  });

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
  if (matched !== REPLAY_EVENTS)
    process.stderr.write(`warning: in-process replay matched ${matched}, expected ${REPLAY_EVENTS}\n`);

  // Raw: the same rows, the same chunked query, through better-sqlite3.
  const db = new Database(join(n.dir, 's0.db'), { readonly: true });
  let rawMs: number;
  try {
    const q = db.prepare(
      'SELECT pos, stream, seq, type, data, meta, created_at, hash FROM events WHERE pos > ? ORDER BY pos ASC LIMIT ?',
    );
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
    if (rows < REPLAY_EVENTS)
      process.stderr.write(`warning: raw select read ${rows} rows, expected ≥ ${REPLAY_EVENTS}\n`);
  } finally {
    db.close();
  }
  return { events: REPLAY_EVENTS, grpcMs, grpcBatchMs, inProcessMs, rawMs, prefillMs };
}
