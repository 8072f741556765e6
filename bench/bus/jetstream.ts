/** The NATS JetStream side of the bus benchmark: the peer. */
import {
  connect,
  AckPolicy,
  DeliverPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
} from 'nats';
import { randomBytes } from 'node:crypto';
import {
  dec,
  enc,
  keyOf,
  nextIndex,
  NATS_URL,
  offeredLoad,
  payload,
  sleep,
  summarize,
  timed,
  waitFor,
  inWindow,
  type LatencyResult,
  type LoadWindow,
} from './common.js';

/** The stream made for the run (by the main thread). */
export interface JetNames {
  stream: string;
  subject: string;
}

/** A client thread's own connection to it. */
export interface Jet extends JetNames {
  nc: NatsConnection;
  jsm: JetStreamManager;
  js: JetStreamClient;
}

export async function withJetStream<T>(fn: (j: JetNames & { serverVersion: string }) => Promise<T>): Promise<T> {
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

export function jetPublishOne(j: Jet, t = 0): Promise<unknown> {
  const i = nextIndex();
  return j.js.publish(`${j.subject}.${keyOf(i)}`, enc.encode(JSON.stringify(payload(i, t))));
}

export async function jetPublish(j: Jet, inFlight: number, ms: number): Promise<{ events: number; ms: number }> {
  return timed(ms, inFlight, async () => {
    await jetPublishOne(j);
    return 1;
  });
}

export async function jetLatency(j: Jet, rate: number): Promise<LatencyResult> {
  const lat: number[] = [];
  const win: LoadWindow = { start: Infinity, end: Infinity };
  const durable = `latency_${rate}`;
  await j.jsm.consumers.add(j.stream, {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.New,
    max_ack_pending: 2000,
  });
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
  const sentInWindow = await offeredLoad(
    rate,
    win,
    async (k, stamp) => Promise.all(Array.from({ length: k }, () => jetPublishOne(j, stamp))),
    64,
  );
  await waitFor(() => lat.length >= sentInWindow, 5000);
  const res = summarize(rate, lat, sentInWindow);
  messages.stop();
  // Teardown after the measurement: the loop ends with the stopped subscription, and a consumer left behind goes with the bench stream.
  await loop.catch(() => {});
  await j.jsm.consumers.delete(j.stream, durable).catch(() => {});
  return res;
}
