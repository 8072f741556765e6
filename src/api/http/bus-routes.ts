import type { FastifyInstance } from 'fastify';
import type { Bus } from '../../bus/bus.js';
import { TOPIC_NAME, topicDefinitionSchema } from '../../bus/config.js';
import { registerCatalogRoutes } from './catalog-routes.js';
import { toHttpError } from './http-errors.js';
import { errorSchema, pageQuery, eventStream, noContent, openObject, pageOf } from './schemas.js';

const eventSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['type'],
  properties: {
    id: { type: 'string', minLength: 1, maxLength: 200 },
    key: { type: 'string', maxLength: 200 },
    type: { type: 'string', minLength: 1, maxLength: 200 },
    headers: { type: 'object', additionalProperties: { type: 'string' } },
    data: {},
  },
} as const;

const subscriptionSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['topics'],
  properties: {
    topics: { type: 'array', minItems: 1, items: { type: 'string' } },
    filter: {
      type: 'object',
      additionalProperties: false,
      properties: {
        types: { type: 'array', items: { type: 'string' } },
        key_prefix: { type: 'string' },
        headers: { type: 'object', additionalProperties: { type: 'string' } },
      },
    },
    start: { type: 'string' },
    ack_wait_ms: { type: 'integer' },
    max_in_flight: { type: 'integer' },
    max_deliveries: { type: 'integer' },
    dead_letter_topic: { type: 'string' },
    on_expired: {
      type: 'string',
      enum: ['stop', 'resume'],
      description:
        'When retention removed events after its acknowledged position: stop with position_expired (default), or resume with a gap notice.',
    },
  },
} as const;

const nameParams = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] } as const;
const errors = { 400: errorSchema, 404: errorSchema, 409: errorSchema, 410: errorSchema };
const tags = ['bus'];
const subscriptionPut = openObject({ name: { type: 'string' }, created: { type: 'boolean' }, config: openObject() });

/** HTTP routes of the bus: publish, subscription CRUD, and server-sent-event delivery with acks. */
export function registerBusRoutes(app: FastifyInstance, bus: Bus): void {
  registerCatalogRoutes(app, bus.rt.catalog, {
    kind: 'bus.topic',
    path: '/v1/bus/topics',
    what: 'topic',
    face: 'bus',
    notFound: 'topic_not_found',
    nameRe: TOPIC_NAME,
    schema: topicDefinitionSchema,
    configured: () =>
      new Map(bus.config.topics.map((t) => [t, bus.config.retention[t] ? { retention: bus.config.retention[t] } : {}])),
  });

  app.post<{ Params: { topic: string }; Body: { events: Array<Record<string, unknown>> } }>(
    '/v1/bus/topics/:topic/events',
    {
      schema: {
        operationId: 'publishEvents',
        summary: 'Publish events to a topic; the answer names their log positions, in order',
        tags,
        params: { type: 'object', properties: { topic: { type: 'string' } }, required: ['topic'] },
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['events'],
          properties: { events: { type: 'array', minItems: 1, maxItems: 10_000, items: eventSchema } },
        },
        response: { 200: openObject({ positions: { type: 'array', items: {} } }), ...errors },
      },
    },
    async (req) => {
      const tp = req.span !== undefined ? req.traceparent : undefined;
      const positions = await bus.publish(
        req.body.events.map((e) =>
          withTraceparent({ ...e, topic: req.params.topic } as typeof e & { topic: string; headers?: unknown }, tp),
        ),
      );
      return { positions };
    },
  );

  const browsed = {
    type: 'object',
    properties: {
      shard: { type: 'string' },
      pos: { type: 'integer' },
      topic: { type: 'string' },
      key: { type: 'string' },
      id: { type: ['string', 'null'] },
      type: { type: 'string' },
      headers: { type: 'object', additionalProperties: { type: 'string' } },
      data: {},
      created_at: { type: 'string', format: 'date-time' },
    },
  } as const;
  app.get<{
    Params: { topic: string };
    Querystring: { key?: string; type?: string; from?: string; to?: string; limit?: number; cursor?: string };
  }>(
    '/v1/bus/topics/:topic/events',
    {
      schema: {
        operationId: 'browseTopicEvents',
        summary: "Browse a topic's stored events, newest first, paged: of one key, of one type, created in [from, to)",
        tags,
        params: { type: 'object', properties: { topic: { type: 'string' } }, required: ['topic'] },
        querystring: pageQuery({
          key: { type: 'string', maxLength: 200 },
          type: { type: 'string', minLength: 1, maxLength: 200 },
          from: { type: 'string', maxLength: 40, description: 'Created at or after (date-time)' },
          to: { type: 'string', maxLength: 40, description: 'Created before (date-time)' },
        }),
        response: {
          200: {
            type: 'object',
            properties: { items: { type: 'array', items: browsed }, next_cursor: { type: ['string', 'null'] } },
          },
          ...errors,
        },
      },
    },
    async (req) => bus.browse(req.params.topic, req.query),
  );

  app.put<{ Params: { name: string }; Body: Record<string, unknown> }>(
    '/v1/bus/subscriptions/:name',
    {
      schema: {
        operationId: 'putSubscription',
        summary: 'Create (201) or redefine (200) a durable subscription',
        tags,
        params: nameParams,
        body: subscriptionSchema,
        response: { 200: subscriptionPut, 201: subscriptionPut, ...errors },
      },
    },
    async (req, reply) => {
      const r = await bus.putSubscription(req.params.name, req.body);
      reply.status(r.created ? 201 : 200);
      return { name: req.params.name, created: r.created, config: r.config };
    },
  );

  app.get<{ Querystring: { limit?: number; cursor?: string } }>(
    '/v1/bus/subscriptions',
    {
      schema: {
        operationId: 'listSubscriptions',
        summary: 'Subscriptions with positions, lag over their own topics, connected and dead-letter topic, paged',
        tags,
        querystring: pageQuery(),
        response: {
          200: {
            ...pageOf(openObject()),
            description: 'A page of subscriptions (`subscriptions` repeats their names)',
          },
          ...errors,
        },
      },
    },
    async (req) => {
      const page = await bus.listSubscriptionInfos(req.query);
      // `subscriptions` (the names of this page) is kept for clients of the earlier list.
      return { ...page, subscriptions: page.items.map((i) => i.name) };
    },
  );

  app.get<{ Params: { name: string } }>(
    '/v1/bus/subscriptions/:name',
    {
      schema: {
        operationId: 'getSubscription',
        summary: 'A subscription: its definition, positions and lag',
        tags,
        params: nameParams,
        response: { 200: openObject(), ...errors },
      },
    },
    async (req) => bus.getSubscription(req.params.name),
  );

  app.delete<{ Params: { name: string } }>(
    '/v1/bus/subscriptions/:name',
    {
      schema: {
        operationId: 'deleteSubscription',
        summary: 'Delete a subscription and its positions',
        tags,
        params: nameParams,
        response: { ...noContent, ...errors },
      },
    },
    async (req, reply) => {
      await bus.deleteSubscription(req.params.name);
      return reply.status(204).send();
    },
  );

  app.post<{ Params: { name: string }; Body: { ids?: string[]; nack?: string[]; delay_ms?: number } }>(
    '/v1/bus/subscriptions/:name/ack',
    {
      schema: {
        operationId: 'ackDeliveries',
        summary: 'Acknowledge deliveries of a stream (ids), or hand them back for redelivery after delay_ms (nack)',
        tags,
        params: nameParams,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ids: { type: 'array', items: { type: 'string' }, maxItems: 100_000 },
            nack: { type: 'array', items: { type: 'string' }, maxItems: 100_000 },
            delay_ms: { type: 'integer', minimum: 0, maximum: 86_400_000 },
          },
        },
        response: { 200: openObject({ acked: { type: 'integer' }, nacked: { type: 'integer' } }), ...errors },
      },
    },
    async (req) => {
      const s = bus.session(req.params.name);
      const acked = s.ack(req.body.ids ?? []);
      let nacked = 0;
      for (const id of req.body.nack ?? []) if (s.nack(id, req.body.delay_ms ?? 0)) nacked++;
      return { acked, nacked };
    },
  );

  // Server-sent events: one `event: delivery` per event, acked through POST …/ack.
  app.get<{ Params: { name: string } }>(
    '/v1/bus/subscriptions/:name/stream',
    {
      schema: {
        operationId: 'streamSubscription',
        summary:
          'Deliveries of a subscription as server-sent events (`opened`, then one `delivery` each), acked through POST .../ack',
        tags,
        params: nameParams,
        response: {
          ...eventStream(
            '`event: opened`, then one `event: delivery` per event; `event: error` before an abnormal end',
          ),
          ...errors,
        },
      },
    },
    async (req, reply) => {
      const raw = reply.raw;
      let session;
      try {
        session = await bus.open(req.params.name, undefined, {
          deliver: (d) => {
            raw.write(
              `id: ${d.deliveryId}\nevent: delivery\ndata: ${JSON.stringify({
                delivery_id: d.deliveryId,
                shard: d.shard,
                pos: d.pos,
                delivery_count: d.deliveryCount,
                created_at_ms: d.createdAt,
                event: {
                  id: d.id,
                  topic: d.topic,
                  key: d.key,
                  type: d.type,
                  headers: d.headers,
                  data: JSON.parse(d.data) as unknown,
                },
              })}\n\n`,
            );
          },
          gap: (g) => {
            raw.write(`event: gap\ndata: ${JSON.stringify({ shard: g.shard, lost: g.lost, horizon: g.horizon })}\n\n`);
          },
          closed: (err) => {
            if (err) raw.write(`event: error\ndata: ${JSON.stringify({ error: toHttpError(err).toJSON() })}\n\n`);
            raw.end();
          },
        });
      } catch (err) {
        throw toHttpError(err);
      }
      reply.hijack();
      raw.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-request-id': req.id,
      });
      raw.write(
        `event: opened\ndata: ${JSON.stringify({ subscription: req.params.name, positions: session.positions() })}\n\n`,
      );
      const s = session;
      // The response's close is the connection's end (the request's may come earlier or later):
      // close the session then, which releases the subscription's lease.
      if (raw.destroyed) void s.close();
      else raw.on('close', () => void s.close());
    },
  );
}

/** Traced: an event without a `traceparent` header gets the request's, so exporters carry it on. */
function withTraceparent<E extends object>(e: E & { headers?: unknown }, tp: string | undefined): E {
  if (tp === undefined) return e;
  const h =
    e.headers !== null && typeof e.headers === 'object' && !Array.isArray(e.headers)
      ? (e.headers as Record<string, unknown>)
      : e.headers === undefined
        ? {}
        : null;
  if (h === null || 'traceparent' in h) return e;
  return { ...e, headers: { ...h, traceparent: tp } };
}
