import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import type { Logger } from 'pino';
import type { Span } from '@opentelemetry/api';
import { endSpan, SpanKind, startSpan, traceparentOf } from '../core/telemetry.js';
import { isMillraceError } from '../core/errors.js';
import type { IngressConfig } from '../bus/config.js';
import type { PublishEvent } from '../bus/publisher.js';

/** What ingress hands its batches to; refusals of bad input are `bad_request` MillraceErrors. */
export type IngressPublish = (events: PublishEvent[]) => Promise<unknown>;

/** AMQP topic-exchange matching: `*` is one word, `#` zero or more. */
export function routingKeyMatches(pattern: string, key: string): boolean {
  const p = pattern.split('.');
  const k = key.split('.');
  const go = (i: number, j: number): boolean => {
    if (i === p.length) return j === k.length;
    if (p[i] === '#') return go(i + 1, j) || (j < k.length && go(i, j + 1));
    if (j === k.length) return false;
    return (p[i] === '*' || p[i] === k[j]) && go(i + 1, j + 1);
  };
  return go(0, 0);
}

/** Pure: the bus event a RabbitMQ message becomes (topic chosen by the first matching binding), or null. */
export function messageToEvent(
  cfg: IngressConfig,
  exchangeTypes: ReadonlyMap<string, string>,
  msg: Pick<ConsumeMessage, 'fields' | 'properties' | 'content'>,
): PublishEvent | null {
  const { exchange, routingKey } = msg.fields;
  const type = exchangeTypes.get(exchange) ?? 'topic';
  const b = cfg.bindings.find(
    (x) =>
      x.exchange === exchange &&
      (type === 'fanout' ||
        type === 'headers' ||
        (type === 'direct' ? x.routing_key === routingKey : routingKeyMatches(x.routing_key, routingKey))),
  );
  if (!b) return null;
  const props = msg.properties;
  const rawHeaders = (props.headers ?? {}) as Record<string, unknown>;
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(rawHeaders))
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') headers[k] = String(v);
  const text = msg.content.toString('utf8');
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    data = { text };
  }
  const ev: PublishEvent = {
    topic: b.topic,
    type: typeof props.type === 'string' && props.type ? props.type : routingKey || 'message',
    data,
    key: typeof rawHeaders['x-key'] === 'string' ? (rawHeaders['x-key'] as string) : routingKey,
  };
  if (typeof props.messageId === 'string' && props.messageId) ev.id = props.messageId;
  if (Object.keys(headers).length) ev.headers = headers;
  return ev;
}

/**
 * RabbitMQ ingress: declares the configured exchanges, a durable queue and its
 * bindings, consumes with manual acks, and acks a message only after the
 * event it became is committed. A crash before the ack makes RabbitMQ
 * redeliver; the message id dedupes the repeat.
 */
export class Ingress {
  private conn: ChannelModel | null = null;
  private ch: Channel | null = null;
  private buffer: ConsumeMessage[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  readonly stats = { stored: 0, rejected: 0 };

  /** `publish` validates and stores a batch (the bus, without its configured-topic check: bindings name the topics). */
  constructor(
    private readonly publish: IngressPublish,
    private readonly cfg: IngressConfig,
    private readonly url: string,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const conn = await amqp.connect(this.cfg.url ?? this.url);
    this.conn = conn;
    conn.on('error', (err: unknown) => this.logger.warn({ err }, 'ingress: AMQP connection error'));
    const ch = await conn.createChannel();
    this.ch = ch;
    const types = new Map<string, string>();
    for (const x of this.cfg.exchanges) {
      await ch.assertExchange(x.name, x.type, { durable: x.durable });
      types.set(x.name, x.type);
    }
    await ch.assertQueue(this.cfg.queue, { durable: true });
    for (const b of this.cfg.bindings)
      await ch.bindQueue(this.cfg.queue, b.exchange, types.get(b.exchange) === 'fanout' ? '' : b.routing_key);
    await ch.prefetch(this.cfg.prefetch);
    await ch.consume(
      this.cfg.queue,
      (msg) => {
        if (!msg || this.stopped) return;
        this.buffer.push(msg);
        if (this.buffer.length >= 200) this.flush(types);
        else this.timer ??= setTimeout(() => this.flush(types), 5);
      },
      { noAck: false },
    );
  }

  private flush(types: ReadonlyMap<string, string>): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const msgs = this.buffer.splice(0);
    if (msgs.length === 0) return;
    this.flushing = this.flushing.then(() => this.store(msgs, types));
  }

  private async store(msgs: ConsumeMessage[], types: ReadonlyMap<string, string>): Promise<void> {
    const ch = this.ch;
    if (!ch) return;
    const events: PublishEvent[] = [];
    const kept: ConsumeMessage[] = [];
    const spans: Span[] = [];
    for (const m of msgs) {
      const e = messageToEvent(this.cfg, types, m);
      // Traced: a consumer span under the message's traceparent header; the stored event carries the span's.
      const span = e
        ? startSpan('millrace.amqp.ingress', e.headers?.traceparent, SpanKind.CONSUMER, {
            'messaging.system': 'rabbitmq',
            'messaging.destination.name': m.fields.exchange,
          })
        : undefined;
      if (e && span !== undefined) {
        e.headers = { ...e.headers, traceparent: traceparentOf(span) };
        spans.push(span);
      }
      if (e) {
        events.push(e);
        kept.push(m);
      } else {
        this.stats.rejected++;
        ch.nack(m, false, false);
      }
    }
    for (;;) {
      if (this.stopped) return;
      try {
        if (events.length) await this.publish(events);
        for (const sp of spans.splice(0)) endSpan(sp);
        for (const m of kept) ch.ack(m);
        this.stats.stored += kept.length;
        return;
      } catch (err) {
        if (isMillraceError(err, 'bad_request')) {
          for (const sp of spans.splice(0)) endSpan(sp, err);
          // One bad message must not block the rest: store them one by one, rejecting the bad ones.
          for (let i = 0; i < events.length; i++) {
            try {
              await this.publish([events[i]!]);
              ch.ack(kept[i]!);
              this.stats.stored++;
            } catch (e) {
              if (!isMillraceError(e, 'bad_request')) throw e;
              this.stats.rejected++;
              ch.nack(kept[i]!, false, false);
            }
          }
          return;
        }
        this.logger.warn({ err }, 'ingress: storing failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    // Stopping: only waits for the last flush to settle; a failed store leaves its messages unacked, so the broker redelivers them. A connection that fails to close is already closed or broken.
    await this.flushing.catch(() => {});
    // A connection that fails to close is already closed or broken.
    await this.conn?.close().catch(() => {});
  }
}
