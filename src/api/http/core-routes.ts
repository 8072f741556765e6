import type { FastifyInstance } from 'fastify';
import { HASH_SPACE_END } from '../../core/routing.js';
import type { LogEvent } from '../../log/log.js';
import type { Runtime } from '../../runtime.js';
import { errorSchema } from './schemas.js';

const hex = (n: bigint): string => (n === HASH_SPACE_END ? 'end' : n.toString(16).padStart(40, '0'));

export function eventJson(e: LogEvent): Record<string, unknown> {
  return {
    pos: e.pos,
    shard: e.shard,
    stream: e.stream,
    seq: e.seq,
    type: e.type,
    created_at: new Date(e.createdAt).toISOString(),
    data: JSON.parse(e.data) as unknown,
    meta: e.meta === null ? null : (JSON.parse(e.meta) as unknown),
    hash: e.hash === null ? null : e.hash.toString('hex'),
  };
}

const eventSchema = {
  type: 'object',
  properties: {
    pos: { type: 'integer' },
    shard: { type: 'string' },
    stream: { type: 'string' },
    seq: { type: 'integer' },
    type: { type: 'string' },
    created_at: { type: 'string', format: 'date-time' },
    data: {},
    meta: { type: ['object', 'null'], additionalProperties: true },
    hash: { type: ['string', 'null'] },
  },
} as const;

export function registerCoreRoutes(app: FastifyInstance, rt: Runtime): void {
  app.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }));

  app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    const r = await rt.ready();
    return reply.status(r.ok ? 200 : 503).send(r.ok ? { ok: true } : { ok: false, problems: r.problems });
  });

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    reply.header('content-type', rt.metrics.contentType);
    return rt.metrics.metrics();
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get(
    '/v1/shards',
    {
      schema: {
        operationId: 'listShards',
        summary: 'List shards with their hash ranges and head positions',
        tags: ['log'],
        response: {
          200: {
            type: 'object',
            properties: {
              dialect: { type: 'string' },
              shards: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: { name: { type: 'string' }, from: { type: 'string' }, to: { type: 'string' }, head: { type: 'integer' } },
                },
              },
            },
          },
        },
      },
    },
    async () => {
      const shards = [];
      for (const s of rt.storage.shards) shards.push({ name: s.name, from: hex(s.from), to: hex(s.to), head: await rt.log.headPos(s.name) });
      return { dialect: rt.storage.dialect, shards };
    },
  );

  const sessionsSchema = {
    type: 'object',
    properties: { pool: { type: 'integer' }, relaxed: { type: 'integer' }, listen: { type: 'integer' }, lock: { type: 'integer' } },
  };
  app.get(
    '/v1/nodes',
    {
      schema: {
        operationId: 'listNodes',
        summary: 'List the nodes using this storage (PostgreSQL: every node with a session open), this node first, with their sessions per shard',
        tags: ['log'],
        response: {
          200: {
            type: 'object',
            properties: {
              items: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: { node_id: { type: 'string' }, self: { type: 'boolean' }, sessions: { type: 'object', additionalProperties: sessionsSchema } },
                },
              },
              next_cursor: { type: 'null' },
            },
          },
        },
      },
    },
    async () => ({ items: await rt.nodes(), next_cursor: null }),
  );

  app.get<{ Querystring: { since?: number; names?: string } }>(
    '/v1/metrics/series',
    {
      schema: {
        operationId: 'getMetricSeries',
        summary:
          "This node's activity over the last hour, sampled in memory: publish, deliver, call, step and push rates (per second), steps per namespace, subscription lag, p99 latencies (ms)",
        tags: ['log'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            since: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Only the samples taken after this time (ms since the epoch)' },
            names: { type: 'string', maxLength: 2000, pattern: '^[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*$', description: 'Comma-separated series names (a family name takes all of it: steps_per_s gives steps_per_s:<namespace> for each)' },
          },
        },
        response: {
          200: {
            type: 'object',
            required: ['interval_ms', 'window_ms', 't', 'series'],
            properties: {
              interval_ms: { type: 'integer' },
              window_ms: { type: 'integer' },
              t: { type: 'array', items: { type: 'integer' }, description: 'Sample times, ms since the epoch, oldest first' },
              series: { type: 'object', additionalProperties: { type: 'array', items: { type: ['number', 'null'] } }, description: 'One column per series, aligned with t; null: no value in that interval' },
            },
          },
          400: errorSchema,
        },
      },
    },
    async (req) => rt.series.read({ since: req.query.since, names: req.query.names?.split(',') }),
  );

  app.get<{ Params: { shard: string }; Querystring: { after: number; limit: number } }>(
    '/v1/shards/:shard/events',
    {
      schema: {
        operationId: 'readShardEvents',
        summary: "Read a shard's log in position order",
        tags: ['log'],
        params: { type: 'object', properties: { shard: { type: 'string' } }, required: ['shard'] },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            after: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 0 },
            limit: { type: 'integer', minimum: 1, maximum: 10000, default: 100 },
          },
        },
        response: {
          200: { type: 'object', properties: { events: { type: 'array', items: eventSchema }, next_after: { type: 'integer' } } },
          400: errorSchema,
          404: errorSchema,
        },
      },
    },
    async (req) => {
      rt.storage.shard(req.params.shard);
      const events = await rt.log.readShard(req.params.shard, req.query.after, req.query.limit);
      const last = events[events.length - 1];
      return { events: events.map(eventJson), next_after: last ? last.pos : req.query.after };
    },
  );
}
