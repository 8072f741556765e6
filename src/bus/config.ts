import { z } from 'zod';

/** Topic names: letters, digits and . _ - (no "/", which separates stream name parts). */
export const TOPIC_NAME = /^[A-Za-z0-9._-]{1,100}$/;

/**
 * How long a topic keeps its events: older than `max_age_ms`, or past the
 * newest `max_events` (of the topic on each shard, or of each key), they are
 * removed by the pruning job.
 */
export const topicRetentionSchema = z
  .object({
    max_age_ms: z.number().int().min(1).optional(),
    max_events: z.number().int().min(1).optional(),
    /** What `max_events` counts: the topic's events on a shard, or each key's events. */
    per: z.enum(['topic', 'key']).default('topic'),
  })
  .strict()
  .refine((r) => r.max_age_ms !== undefined || r.max_events !== undefined, {
    message: 'retention takes max_age_ms, max_events or both',
  });

export type TopicRetention = z.output<typeof topicRetentionSchema>;

/** A topic defined at runtime (`PUT /v1/bus/topics/{t}`); YAML topics are bare names. */
export const topicDefinitionSchema = z
  .object({ description: z.string().max(1000).optional(), retention: topicRetentionSchema.optional() })
  .strict();

const topicName = z.string().regex(TOPIC_NAME, 'a topic name of 1-100 letters, digits, ".", "_" or "-"');

const subscriptionDefaults = z
  .object({
    /** An event not acknowledged within this time is delivered again. */
    ack_wait_ms: z
      .number()
      .int()
      .min(10)
      .max(24 * 3600_000)
      .default(30_000),
    /** Unacknowledged deliveries outstanding on one connection. */
    max_in_flight: z.number().int().min(1).max(100_000).default(256),
    /** Deliveries of one event before it goes to the dead-letter topic (or is dropped when none is set). */
    max_deliveries: z.number().int().min(1).max(1000).default(5),
  })
  .strict()
  .prefault({});

const exchangeSchema = z
  .object({
    name: z.string().min(1).max(255),
    type: z.enum(['topic', 'direct', 'fanout', 'headers']).default('topic'),
    durable: z.boolean().default(true),
  })
  .strict();

const ingressSchema = z
  .object({
    /** AMQP URL; defaults to `bus.rabbitmq.url`. */
    url: z.string().min(1).optional(),
    /** The durable queue millrace consumes from. */
    queue: z.string().min(1).max(255).default('millrace.ingress'),
    exchanges: z.array(exchangeSchema).default([]),
    /** Which routing keys of which exchange go to which topic. */
    bindings: z
      .array(
        z
          .object({
            exchange: z.string().min(1),
            routing_key: z.string().max(255).default('#'),
            topic: topicName,
          })
          .strict(),
      )
      .default([]),
    /** Unacknowledged messages the broker may hand millrace at once. */
    prefetch: z.number().int().min(1).max(65_535).default(500),
  })
  .strict();

const exporterSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/),
    /** What to ship: the events of a bus topic, or every log stream whose name starts with a prefix. */
    topic: topicName.optional(),
    stream_prefix: z.string().min(1).max(500).optional(),
    url: z.string().min(1).optional(),
    exchange: z.string().min(1).max(255),
    exchange_type: z.enum(['topic', 'direct', 'fanout', 'headers']).default('topic'),
    /** Routing key; default: the event type. */
    routing_key: z.string().max(255).optional(),
    /** Messages awaiting a publisher confirm at once. */
    batch: z.number().int().min(1).max(10_000).default(500),
  })
  .strict()
  .refine((e) => (e.topic === undefined) !== (e.stream_prefix === undefined), {
    message: 'an exporter takes exactly one of "topic" or "stream_prefix"',
  });

/** Configuration of the bus face (the `bus:` section of millrace.yaml). */
export const busConfigSchema = z
  .object({
    topics: z.array(topicName).default([]),
    /** Retention per topic (config-file topics; runtime topics carry theirs in their definition). */
    retention: z.record(topicName, topicRetentionSchema).default({}),
    /** An event id repeated within this window is acknowledged with its first position and not stored again. */
    dedupe_window_ms: z
      .number()
      .int()
      .min(1000)
      .default(10 * 60_000),
    /** How often expired dedupe ids are pruned. */
    dedupe_prune_ms: z.number().int().min(100).default(60_000),
    subscriptions: subscriptionDefaults,
    /**
     * A connection's hold on a subscription expires unless renewed: a crashed or
     * hung node frees it after this. Default: cluster.role_lease_ms.
     */
    lease_ms: z.number().int().min(500).optional(),
    rabbitmq: z
      .object({
        url: z.string().min(1).default('amqp://guest:guest@127.0.0.1:5672'),
        ingress: ingressSchema.optional(),
      })
      .strict()
      .prefault({}),
    exporters: z.array(exporterSchema).default([]),
  })
  .strict()
  .prefault({});

export type BusConfig = z.output<typeof busConfigSchema>;
export type ExporterConfig = BusConfig['exporters'][number];
export type IngressConfig = NonNullable<BusConfig['rabbitmq']['ingress']>;
