import { z } from 'zod';
import { badRequest, MillraceError } from '../core/errors.js';
import type { LogEvent } from '../log/log.js';
import type { BusConfig } from './config.js';
import { TOPIC_NAME } from './config.js';
import type { TopicMeta } from './publisher.js';
import { topicOfStream } from './stream-names.js';

export const SUBSCRIPTION_NAME = /^[A-Za-z0-9._-]{1,150}$/;

/** Where a new subscription starts: `earliest`, `latest`, `position:<n>` (every shard) or `time:<ISO date or ms>`. */
const START = /^(earliest|latest|position:\d{1,15}|time:.+)$/;

const subscriptionInput = z
  .object({
    topics: z.array(z.string().regex(TOPIC_NAME)).min(1).max(100),
    filter: z
      .object({
        types: z.array(z.string().min(1).max(200)).max(1000).optional(),
        key_prefix: z.string().max(200).optional(),
        headers: z.record(z.string().max(200), z.string().max(4096)).optional(),
      })
      .strict()
      .optional(),
    start: z.string().regex(START, 'earliest, latest, position:<n> or time:<ISO date or epoch ms>').optional(),
    ack_wait_ms: z
      .number()
      .int()
      .min(10)
      .max(24 * 3600_000)
      .optional(),
    max_in_flight: z.number().int().min(1).max(100_000).optional(),
    max_deliveries: z.number().int().min(1).max(1000).optional(),
    dead_letter_topic: z.string().regex(TOPIC_NAME).optional(),
    on_expired: z.enum(['stop', 'resume']).optional(),
  })
  .strict();

export type SubscriptionInput = z.input<typeof subscriptionInput>;

export interface SubscriptionConfig {
  topics: string[];
  filter: { types?: string[]; key_prefix?: string; headers?: Record<string, string> };
  start: string;
  ack_wait_ms: number;
  max_in_flight: number;
  max_deliveries: number;
  dead_letter_topic?: string;
  /**
   * When retention removed events of its topics after its acknowledged
   * position: `stop` refuses to deliver with `position_expired`; `resume`
   * sends a gap notice with the count of events lost and reads on.
   */
  on_expired?: 'stop' | 'resume';
}

/** What a subscriber is told when retention removed events it had not acknowledged. */
export interface GapNotice {
  shard: string;
  /** Events of the subscription's topics removed after its acknowledged position. */
  lost: number;
  /** The highest position removed. */
  horizon: number;
}

export type StartSpec =
  { kind: 'earliest' } | { kind: 'latest' } | { kind: 'position'; pos: number } | { kind: 'time'; at: number };

export function parseStart(start: string): StartSpec {
  if (start === 'earliest' || start === 'latest') return { kind: start };
  if (start.startsWith('position:')) return { kind: 'position', pos: Number(start.slice(9)) };
  if (start.startsWith('time:')) {
    const t = start.slice(5);
    const at = /^\d+$/.test(t) ? Number(t) : Date.parse(t);
    if (!Number.isFinite(at)) throw badRequest(`start time "${t}" is neither an ISO date nor epoch milliseconds`);
    return { kind: 'time', at };
  }
  throw badRequest(`bad start "${start}"`);
}

/** Validates a subscription's config against the bus config, filling defaults. */
export function buildSubscriptionConfig(raw: unknown, bus: BusConfig): SubscriptionConfig {
  const parsed = subscriptionInput.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw badRequest(`subscription config: ${issue.path.join('.') || '(root)'}: ${issue.message}`, {
      problems: parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
    });
  }
  const c = parsed.data;
  const known = new Set(bus.topics);
  for (const t of [...c.topics, ...(c.dead_letter_topic ? [c.dead_letter_topic] : [])]) {
    if (!known.has(t))
      throw new MillraceError('topic_not_found', `no topic "${t}" is configured`, { details: { topic: t } });
  }
  const start = c.start ?? 'earliest';
  parseStart(start);
  const filter: SubscriptionConfig['filter'] = {};
  if (c.filter?.types?.length) filter.types = c.filter.types;
  if (c.filter?.key_prefix) filter.key_prefix = c.filter.key_prefix;
  if (c.filter?.headers && Object.keys(c.filter.headers).length) filter.headers = c.filter.headers;
  const out: SubscriptionConfig = {
    topics: [...new Set(c.topics)],
    filter,
    start,
    ack_wait_ms: c.ack_wait_ms ?? bus.subscriptions.ack_wait_ms,
    max_in_flight: c.max_in_flight ?? bus.subscriptions.max_in_flight,
    max_deliveries: c.max_deliveries ?? bus.subscriptions.max_deliveries,
  };
  if (c.dead_letter_topic) out.dead_letter_topic = c.dead_letter_topic;
  if (c.on_expired) out.on_expired = c.on_expired;
  return out;
}

/** A bus event as a subscriber sees it. */
export interface TopicEvent {
  shard: string;
  pos: number;
  topic: string;
  key: string;
  id: string;
  type: string;
  headers: Record<string, string>;
  /** JSON text. */
  data: string;
  createdAt: number;
}

/** Pure: the topic event in a log event if the subscription wants it, else null. */
export function matchEvent(
  e: LogEvent,
  topics: ReadonlySet<string>,
  filter: SubscriptionConfig['filter'],
): TopicEvent | null {
  const topic = topicOfStream(e.stream);
  if (topic === null || !topics.has(topic) || e.meta === null) return null;
  if (filter.types && !filter.types.includes(e.type)) return null;
  const meta = JSON.parse(e.meta) as TopicMeta;
  if (filter.key_prefix !== undefined && !meta.key.startsWith(filter.key_prefix)) return null;
  const headers = meta.headers ?? {};
  if (filter.headers) for (const [k, v] of Object.entries(filter.headers)) if (headers[k] !== v) return null;
  return {
    shard: e.shard,
    pos: e.pos!,
    topic,
    key: meta.key,
    id: meta.id ?? '',
    type: e.type,
    headers,
    data: e.data,
    createdAt: e.createdAt,
  };
}
