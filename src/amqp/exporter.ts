import { PAUSED_RECHECK_MS, pausesOf } from '../catalog/pauses.js';
import amqp, { type ChannelModel, type ConfirmChannel } from 'amqplib';
import type { Logger } from 'pino';
import type { Span } from '@opentelemetry/api';
import { endSpan, SpanKind, startSpan, traceparentOf } from '../core/telemetry.js';
import type { Runtime } from '../runtime.js';
import type { ExporterConfig } from '../bus/config.js';
import type { LogEvent } from '../log/log.js';
import type { Consumer } from '../log/cursor.js';
import type { TopicMeta } from '../bus/publisher.js';
import { topicOfStream } from '../bus/stream-names.js';
import { readShardGates, type ShardGates } from '../bus/split-gate.js';
import { sleepUnless } from '../core/waker.js';

/** How often an exporter held by a split (an import under way, or the source not passed yet) looks again. */
const GATE_POLL_MS = 100;

export const exporterCursor = (name: string): string => `export/${name}`;

/** Pure: whether an exporter ships this log event. */
export function exporterWants(cfg: ExporterConfig, e: LogEvent): boolean {
  if (cfg.topic !== undefined) return topicOfStream(e.stream) === cfg.topic;
  return e.stream.startsWith(cfg.stream_prefix!);
}

/** Each exporter's position and lag per shard, from the database (what `millrace export status` prints). */
export async function exporterStatus(
  rt: Runtime,
): Promise<Array<{ name: string; shard: string; pos: number; head: number; lag: number }>> {
  const out = [];
  for (const x of rt.config.bus.exporters) {
    for (const s of rt.storage.shards) {
      const pos = (await rt.cursors.position(s.name, exporterCursor(x.name))) ?? 0;
      const head = await rt.log.headPos(s.name);
      out.push({ name: x.name, shard: s.name, pos, head, lag: Math.max(0, head - pos) });
    }
  }
  return out;
}

/**
 * Ships a log stream to a RabbitMQ exchange in position order (per shard) on
 * a confirm channel; the position is stored only after the broker confirmed
 * everything up to it. After a crash, unconfirmed events go again with the
 * same message id (`shard:pos`), so consumers can drop repeats.
 */
export class Exporter {
  private conn: ChannelModel | null = null;
  private consumers: Consumer[] = [];
  private readonly stopping = new AbortController();
  /** Per shard, its split imports as last read (kept once final). */
  private readonly gates = new Map<string, ShardGates>();
  /** Imports whose source this exporter has passed. */
  private readonly passed = new Set<string>();

  constructor(
    private readonly rt: Runtime,
    private readonly cfg: ExporterConfig,
    private readonly url: string,
    private readonly logger: Logger,
  ) {}

  /** Whether this node runs the exporter's consumer on each shard (the others stand by). */
  holding(): boolean[] {
    return this.consumers.map((c) => c.holding);
  }

  async start(): Promise<void> {
    this.conn = await amqp.connect(this.cfg.url ?? this.url);
    this.conn.on('error', (err: unknown) =>
      this.logger.warn({ err, exporter: this.cfg.name }, 'exporter: AMQP connection error'),
    );
    const ch = await this.conn.createConfirmChannel();
    await ch.assertExchange(this.cfg.exchange, this.cfg.exchange_type, { durable: true });
    // Every node configures the exporter; one node at a time ships each shard
    // (an exclusive cursor), so a cluster does not send every event once per node.
    for (const s of this.rt.storage.shards) {
      this.consumers.push(
        this.rt.cursors.consume({
          shard: s.name,
          name: exporterCursor(this.cfg.name),
          start: 'earliest',
          chunk: this.cfg.batch,
          mode: 'at-least-once',
          exclusive: true,
          handler: (batch) => this.ship(ch, batch),
        }),
      );
    }
  }

  /** Publishes the wanted events of a batch; resolves once the broker confirmed them. */
  private async ship(ch: ConfirmChannel, batch: LogEvent[]): Promise<void> {
    // Paused: the batch waits (the exporter's position stays before it) until resumed or stopped.
    const pauses = pausesOf(this.rt.catalog);
    while (pauses.paused('exporter', this.cfg.name)) {
      if (this.stopping.signal.aborted) throw new Error('exporter stopped while paused');
      await pauses.changed(PAUSED_RECHECK_MS, this.stopping.signal);
    }
    const wanted = (await this.afterImports(batch)).filter((e) => exporterWants(this.cfg, e));
    const spans: Span[] = [];
    for (const e of wanted) {
      const meta = e.meta ? (JSON.parse(e.meta) as Partial<TopicMeta>) : {};
      const headers: Record<string, unknown> = {
        'x-stream': e.stream,
        'x-seq': e.seq,
        'x-shard': e.shard,
        'x-pos': e.pos,
      };
      if (meta.key !== undefined) headers['x-key'] = meta.key;
      if (meta.id) headers['x-event-id'] = meta.id;
      for (const [k, v] of Object.entries(meta.headers ?? {})) headers[k] = v;
      // Traced: a producer span under the event's traceparent, whose traceparent the message carries.
      const span = startSpan(
        'millrace.amqp.export',
        typeof headers.traceparent === 'string' ? headers.traceparent : undefined,
        SpanKind.PRODUCER,
        {
          'messaging.system': 'rabbitmq',
          'messaging.destination.name': this.cfg.exchange,
          'messaging.message.id': `${e.shard}:${e.pos}`,
        },
      );
      if (span !== undefined) {
        headers.traceparent = traceparentOf(span);
        spans.push(span);
      }
      ch.publish(this.cfg.exchange, this.cfg.routing_key ?? e.type, Buffer.from(e.data), {
        messageId: `${e.shard}:${e.pos}`,
        type: e.type,
        timestamp: Math.floor(e.createdAt / 1000),
        contentType: 'application/json',
        persistent: true,
        headers,
      });
    }
    if (wanted.length === 0) return;
    try {
      await ch.waitForConfirms();
    } catch (err) {
      for (const sp of spans) endSpan(sp, err);
      throw err;
    }
    for (const sp of spans) endSpan(sp);
  }

  /**
   * A split's target: its imports are left out (the source, which keeps
   * them, ships them), and its later events wait until this exporter's
   * position on the source has passed the last moved event, so that a key's
   * events go out in order across the split (see bus/split-gate.ts).
   */
  private async afterImports(batch: LogEvent[]): Promise<LogEvent[]> {
    const shard = batch[0]?.shard;
    if (shard === undefined) return batch;
    const signal = this.stopping.signal;
    const read = async (): Promise<ShardGates> => {
      let g = this.gates.get(shard);
      if (g?.final !== true) {
        g = await readShardGates(this.rt.storage.shard(shard));
        this.gates.set(shard, g);
      }
      return g;
    };
    let g = await read();
    while (g.pending) {
      await sleepUnless(GATE_POLL_MS, signal);
      if (signal.aborted) throw new Error('exporter stopped while a split imports');
      g = await read();
    }
    const out = batch.filter((e) => e.pos! > g.horizon);
    if (out.length === 0) return out;
    for (const gate of g.gates) {
      if (this.passed.has(gate.id) || !this.rt.storage.shards.some((s) => s.name === gate.source)) continue;
      for (;;) {
        const at = (await this.rt.cursors.position(gate.source, exporterCursor(this.cfg.name))) ?? 0;
        if (at >= gate.sourcePos) break;
        const last = await this.rt.storage
          .shard(gate.source)
          .reader.all<{ m: number | null }>('SELECT max(pos) AS m FROM events WHERE pos <= ?', [gate.sourcePos]);
        if (last[0]?.m == null || at >= Number(last[0].m)) break;
        await sleepUnless(GATE_POLL_MS, signal);
        if (signal.aborted) throw new Error('exporter stopped while waiting for the source of a split');
      }
      this.passed.add(gate.id);
    }
    return out;
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.allSettled(this.consumers.splice(0).map((c) => c.stop()));
    // Stopping: a connection that fails to close is already closed or broken; there is nothing left to do with it.
    await this.conn?.close().catch(() => {});
  }
}
