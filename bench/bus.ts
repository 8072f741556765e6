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
 *    - PublishBatches: one event per message on one bidirectional call,
 *      each message answered once durable, 256 unanswered at most; peer:
 *      JetStream with 256 publishes in flight.
 *    - HTTP/1.1 keep-alive: one event per POST /v1/bus/topics/{topic}/events,
 *      256 requests in flight on 256 kept-alive connections (node:http);
 *      peer: JetStream with 256 publishes in flight.
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
import { fmtRate, mb, printTable, rate, RssSampler } from './support.js';
import { closeClientThread, clientThread, type ClientThread } from './bus/client-thread.js';
import {
  BATCH,
  BATCH_CALLS_IN_FLIGHT,
  FLOW_WINDOW,
  KEYS,
  LAT_MS,
  LAT_WARMUP_MS,
  latencyRates,
  ms1,
  PARTS,
  PUBLISH_MS,
  ratio,
  REPLAY_EVENTS,
  REPLAY_IN_FLIGHT,
  STREAMS,
  SUSTAINED_P50_MS,
  sustained,
  UNARY_IN_FLIGHT,
  WARMUP_MS,
  type Durability,
  type LatencyResult,
  type Mode,
} from './bus/common.js';
import { withJetStream, type JetNames } from './bus/jetstream.js';
import { replay, withNode } from './bus/millrace.js';

export async function run(): Promise<void> {
  const started = Date.now();
  const rss = new RssSampler();
  const out = (s: string) => process.stdout.write(s);
  const note = (s: string) => process.stderr.write(`  ${s}\n`);
  const ct = clientThread();
  try {
    await body(ct, out, note);
  } finally {
    await closeClientThread();
  }
  const mem = process.memoryUsage();
  out(
    `\npeak rss ${mb(rss.stop())} (this thread and the client thread), heap used at end ${mb(mem.heapUsed)}; ${((Date.now() - started) / 1000).toFixed(1)} s in all\n`,
  );
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

async function publishPart(
  j: JetNames & { serverVersion: string },
  ct: ClientThread,
  out: (s: string) => void,
  note: (s: string) => void,
): Promise<void> {
  {
    const mr: Record<Durability, Partial<Record<Mode, { events: number; ms: number }>>> = { relaxed: {}, strict: {} };
    const jet: { batched?: { events: number; ms: number }; unary?: { events: number; ms: number } } = {};
    const http: Partial<Record<Durability, { events: number; ms: number }>> = {};
    for (const durability of ['relaxed', 'strict'] as const) {
      await withNode(durability, async (n) => {
        const mrPublish = (mode: Mode, ms: number) =>
          ct.run<{ events: number; ms: number }>({ kind: 'mr-publish', addr: n.addr, mode, ms });
        const jetPub = (inFlight: number, ms: number) =>
          ct.run<{ events: number; ms: number }>({
            kind: 'jet-publish',
            jet: { stream: j.stream, subject: j.subject },
            inFlight,
            ms,
          });
        await mrPublish('batched', WARMUP_MS);
        for (const mode of ['batched', 'unary', 'stream', 'pipelined'] as const) {
          note(`publish: millrace ${durability} ${mode} ...`);
          mr[durability][mode] = await mrPublish(mode, PUBLISH_MS);
          if (durability === 'relaxed' && (mode === 'batched' || mode === 'unary')) {
            note(
              `publish: JetStream ${mode === 'batched' ? BATCH * BATCH_CALLS_IN_FLIGHT : UNARY_IN_FLIGHT} in flight ...`,
            );
            if (!jet.batched) await jetPub(256, WARMUP_MS);
            jet[mode] = await jetPub(mode === 'batched' ? BATCH * BATCH_CALLS_IN_FLIGHT : UNARY_IN_FLIGHT, PUBLISH_MS);
          }
        }
        note(`publish: millrace ${durability} HTTP/1.1 keep-alive, 1 event per request ...`);
        http[durability] = await ct.run<{ events: number; ms: number }>({
          kind: 'mr-http-publish',
          url: n.node.url,
          ms: PUBLISH_MS,
        });
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
        [
          `relaxed, Publish ${BATCH} ev/call, ${BATCH_CALLS_IN_FLIGHT} calls in flight`,
          fmtRate(r(mr.relaxed.batched)),
          `JetStream default, ${BATCH * BATCH_CALLS_IN_FLIGHT} in flight`,
          fmtRate(jb),
          ratio(r(mr.relaxed.batched), jb),
        ],
        [
          `relaxed, Publish 1 ev/call, ${UNARY_IN_FLIGHT} calls in flight`,
          fmtRate(r(mr.relaxed.unary)),
          `JetStream default, ${UNARY_IN_FLIGHT} in flight`,
          fmtRate(ju),
          ratio(r(mr.relaxed.unary), ju),
        ],
        [
          `relaxed, PublishStream 1 ev/msg, ${STREAMS} streams`,
          fmtRate(r(mr.relaxed.stream)),
          `JetStream default, ${UNARY_IN_FLIGHT} in flight`,
          fmtRate(ju),
          ratio(r(mr.relaxed.stream), ju),
        ],
        [
          `relaxed, PublishBatches 1 ev/msg, ${UNARY_IN_FLIGHT} unanswered on 1 call`,
          fmtRate(r(mr.relaxed.pipelined)),
          `JetStream default, ${UNARY_IN_FLIGHT} in flight`,
          fmtRate(ju),
          ratio(r(mr.relaxed.pipelined), ju),
        ],
        [
          `relaxed, HTTP/1.1 keep-alive POST 1 ev, ${UNARY_IN_FLIGHT} in flight`,
          fmtRate(r(http.relaxed)),
          `JetStream default, ${UNARY_IN_FLIGHT} in flight`,
          fmtRate(ju),
          ratio(r(http.relaxed), ju),
        ],
        [
          `strict, Publish ${BATCH} ev/call, ${BATCH_CALLS_IN_FLIGHT} calls in flight`,
          fmtRate(r(mr.strict.batched)),
          'millrace relaxed, same mode',
          fmtRate(r(mr.relaxed.batched)),
          ratio(r(mr.strict.batched), r(mr.relaxed.batched)),
        ],
        [
          `strict, Publish 1 ev/call, ${UNARY_IN_FLIGHT} calls in flight`,
          fmtRate(r(mr.strict.unary)),
          'millrace relaxed, same mode',
          fmtRate(r(mr.relaxed.unary)),
          ratio(r(mr.strict.unary), r(mr.relaxed.unary)),
        ],
        [
          `strict, PublishStream 1 ev/msg, ${STREAMS} streams`,
          fmtRate(r(mr.strict.stream)),
          'millrace relaxed, same mode',
          fmtRate(r(mr.relaxed.stream)),
          ratio(r(mr.strict.stream), r(mr.relaxed.stream)),
        ],
        [
          `strict, PublishBatches 1 ev/msg, ${UNARY_IN_FLIGHT} unanswered on 1 call`,
          fmtRate(r(mr.strict.pipelined)),
          'millrace relaxed, same mode',
          fmtRate(r(mr.relaxed.pipelined)),
          ratio(r(mr.strict.pipelined), r(mr.relaxed.pipelined)),
        ],
        [
          `strict, HTTP/1.1 keep-alive POST 1 ev, ${UNARY_IN_FLIGHT} in flight`,
          fmtRate(r(http.strict)),
          'millrace relaxed, same mode',
          fmtRate(r(http.relaxed)),
          ratio(r(http.strict), r(http.relaxed)),
        ],
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

async function latencyPart(
  j: JetNames & { serverVersion: string },
  ct: ClientThread,
  out: (s: string) => void,
  note: (s: string) => void,
): Promise<void> {
  {
    // At the asked rate first; while millrace does not sustain it, again at lower rates (both systems each time).
    const tried: Array<{ m: LatencyResult; j: LatencyResult }> = [];
    for (const rate of latencyRates()) {
      note(`latency: millrace relaxed at ${rate} ev/s ...`);
      const m = await withNode('relaxed', (n) => ct.run<LatencyResult>({ kind: 'mr-latency', addr: n.addr, rate }));
      note(`latency: JetStream at ${rate} ev/s ...`);
      const jl = await ct.run<LatencyResult>({
        kind: 'jet-latency',
        jet: { stream: j.stream, subject: j.subject },
        rate,
      });
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
      tried.flatMap((t) => [
        row('millrace relaxed, gRPC Subscribe batch, acks', t.m),
        row('JetStream default, pull consumer, acks', t.j),
      ]),
    );
    for (const t of tried) {
      out(
        `ratio millrace/JetStream at ${fmtRate(t.m.rate)} ev/s offered: p50 ${ratio(t.m.p50, t.j.p50)}, p99 ${ratio(t.m.p99, t.j.p99)} (lower is better for millrace)\n`,
      );
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
      [
        `gRPC Subscribe, one delivery per message, max_in_flight ${REPLAY_IN_FLIGHT}, acked`,
        fmtRate(g),
        fmtRate(raw),
        ratio(g, raw),
      ],
      ['in process: cursor tail + filter (no transport)', fmtRate(ip), fmtRate(raw), ratio(ip, raw)],
    ],
  );
  out(
    `raw = better-sqlite3 SELECT of the same rows (same columns, chunks of 1000 by pos), no decoding: a ceiling; target ≥ 0.50 for the gRPC rows\n` +
      `the subscriber's HTTP/2 receive window: ${FLOW_WINDOW ? `${FLOW_WINDOW} bytes (grpc-node.flow_control_window)` : "grpc-js's default, 64 KiB"}\n` +
      `(prefill: ${fmtRate(rate(rp.events, rp.prefillMs))} events/s in process, relaxed, batches of 1000)\n`,
  );
}
