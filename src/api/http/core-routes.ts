import type { FastifyInstance } from 'fastify';
import { HASH_SPACE_END } from '../../core/routing.js';
import type { LogEvent } from '../../log/log.js';
import type { Runtime } from '../../runtime.js';
import { errorSchema } from './schemas.js';
import type { SplitJob } from '../../storage/split.js';

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

  const splitSchema = {
    type: 'object',
    properties: {
      id: { type: 'string' },
      source: { type: 'string' },
      target: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      phase: { type: 'string', enum: ['copy', 'fenced', 'switched', 'cleanup', 'done', 'aborted'] },
      start_pos: { type: 'integer' },
      copied_pos: { type: 'integer' },
      copied_events: { type: 'integer' },
      head: { type: 'integer' },
      progress: { type: 'number' },
      rows_moved: { type: 'integer' },
      aborted: {
        type: 'string',
        description:
          'Why the split ended without moving anything (phase aborted): the source took writes to a stream no face moves',
      },
      started_at: { type: 'string', format: 'date-time' },
      updated_at: { type: 'string', format: 'date-time' },
    },
  } as const;
  const splitJson = (j: SplitJob): Record<string, unknown> => ({
    ...j,
    // Copy progress up to the fence; 1 once cut over.
    progress:
      j.phase === 'copy' ? (j.head === 0 ? 1 : Math.min(0.99, j.copied_pos / j.head)) : j.phase === 'fenced' ? 0.99 : 1,
    started_at: new Date(j.started_at).toISOString(),
    updated_at: new Date(j.updated_at).toISOString(),
  });

  app.get(
    '/v1/shards',
    {
      schema: {
        operationId: 'listShards',
        summary:
          'List shards with the hash ranges they own (as stored: splits move them), their sizes and head positions, and shard splits with their progress',
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
                  properties: {
                    name: { type: 'string' },
                    from: { type: 'string' },
                    to: { type: 'string' },
                    ranges: {
                      type: 'array',
                      items: {
                        type: 'object',
                        properties: { from: { type: 'string' }, to: { type: 'string' }, fenced: { type: 'boolean' } },
                      },
                    },
                    epoch: { type: 'integer' },
                    spare: { type: 'boolean' },
                    head: { type: 'integer' },
                    events: { type: 'integer' },
                  },
                },
              },
              splits: { type: 'array', items: splitSchema },
            },
          },
        },
      },
    },
    async () => {
      const shards = [];
      for (const s of rt.storage.shards) {
        const st = rt.storage.states.get(s.name);
        const ranges =
          st === undefined ? (s.to > s.from ? [{ from: s.from, to: s.to, fenced: false }] : []) : st.ranges;
        const live = ranges.filter((r) => !r.fenced);
        const n = await s.reader.all<{ n: number }>('SELECT count(*) AS n FROM events');
        shards.push({
          name: s.name,
          // The first range it owns (one, unless splits left it several); all of them in `ranges`.
          from: live[0] === undefined ? '' : hex(live[0].from),
          to: live[0] === undefined ? '' : hex(live[0].to),
          ranges: ranges.map((r) => ({ from: hex(r.from), to: hex(r.to), fenced: r.fenced })),
          epoch: st?.epoch ?? 0,
          spare: ranges.length === 0,
          head: await rt.log.headPos(s.name),
          events: Number(n[0]?.n ?? 0),
        });
      }
      return { dialect: rt.storage.dialect, shards, splits: (await rt.splitter.jobs()).map(splitJson) };
    },
  );

  app.post<{ Params: { shard: string }; Body: { at: string; to: string } }>(
    '/v1/shards/:shard/split',
    {
      schema: {
        operationId: 'splitShard',
        summary:
          "Start moving the upper part of a shard's hash range, from `at` on, to a spare shard; the split runs in the background (progress in GET /v1/shards)",
        tags: ['log'],
        params: { type: 'object', properties: { shard: { type: 'string' } }, required: ['shard'] },
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['at', 'to'],
          properties: {
            at: { type: 'string', description: 'hex prefix of the first moved hash' },
            to: { type: 'string', description: 'the spare shard: its name, URL or file' },
          },
        },
        response: { 202: splitSchema, 400: errorSchema, 409: errorSchema },
      },
    },
    async (req, reply) =>
      reply.status(202).send(splitJson(await rt.splitter.start(req.params.shard, req.body.at, req.body.to))),
  );

  const sessionsSchema = {
    type: 'object',
    properties: {
      pool: { type: 'integer' },
      relaxed: { type: 'integer' },
      listen: { type: 'integer' },
      lock: { type: 'integer' },
    },
  };
  app.get(
    '/v1/nodes',
    {
      schema: {
        operationId: 'listNodes',
        summary:
          'List the nodes using this storage (PostgreSQL: every node with a session open), this node first, with their sessions per shard',
        tags: ['log'],
        response: {
          200: {
            type: 'object',
            properties: {
              items: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: {
                    node_id: { type: 'string' },
                    self: { type: 'boolean' },
                    sessions: { type: 'object', additionalProperties: sessionsSchema },
                  },
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
            since: {
              type: 'integer',
              minimum: 0,
              maximum: Number.MAX_SAFE_INTEGER,
              description: 'Only the samples taken after this time (ms since the epoch)',
            },
            names: {
              type: 'string',
              maxLength: 2000,
              pattern: '^[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*$',
              description:
                'Comma-separated series names (a family name takes all of it: steps_per_s gives steps_per_s:<namespace> for each)',
            },
          },
        },
        response: {
          200: {
            type: 'object',
            required: ['interval_ms', 'window_ms', 't', 'series'],
            properties: {
              interval_ms: { type: 'integer' },
              window_ms: { type: 'integer' },
              t: {
                type: 'array',
                items: { type: 'integer' },
                description: 'Sample times, ms since the epoch, oldest first',
              },
              series: {
                type: 'object',
                additionalProperties: { type: 'array', items: { type: ['number', 'null'] } },
                description: 'One column per series, aligned with t; null: no value in that interval',
              },
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
          200: {
            type: 'object',
            properties: { events: { type: 'array', items: eventSchema }, next_after: { type: 'integer' } },
          },
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
