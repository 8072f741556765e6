import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { badRequest } from '../../core/errors.js';
import type { MachineRef, Machines, RequestOptions } from '../../machines/machines.js';
import { parseRfc3339 } from '../../machines/planner.js';
import type { Sinks } from '../../machines/sink.js';
import { errorSchema, pageQuery, eventStream, noContent, openObject, pageOf } from './schemas.js';
import { registerCatalogRoutes } from './catalog-routes.js';
import { NAMESPACE_NAME, namespaceSchema } from '../../machines/config.js';

const name = { type: 'string', minLength: 1, maxLength: 100 } as const;
const argsBody = { type: 'object', additionalProperties: false, properties: { args: {} } } as const;
const emptyBody = { type: 'object', additionalProperties: false, properties: {} } as const;
const errors = {
  400: errorSchema,
  404: errorSchema,
  409: errorSchema,
  422: errorSchema,
  503: errorSchema,
  504: errorSchema,
};
const rangeQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    after: { type: 'integer', minimum: 1 },
    limit: { type: 'integer', minimum: 1, maximum: 100000 },
    direction: { type: 'string', enum: ['forward', 'backward'] },
  },
} as const;

type Params = { ns: string; id?: string; tag?: string };
type ArgsRoute = { Params: Params; Body: { args?: unknown } };

/** Request deadline from `x-request-deadline` (RFC 3339) or `x-request-timeout` (ms). */
export function requestOptions(req: FastifyRequest): RequestOptions {
  const d = req.headers['x-request-deadline'];
  const t = req.headers['x-request-timeout'];
  let deadline: number | undefined;
  if (typeof d === 'string') {
    const v = parseRfc3339(d);
    if (v === null) throw badRequest('x-request-deadline must be an RFC 3339 date-time');
    deadline = v;
  } else if (typeof t === 'string') {
    if (!/^\d{1,12}$/.test(t)) throw badRequest('x-request-timeout must be a whole number of milliseconds');
    deadline = Date.now() + Number(t);
  }
  return { deadline, traceparent: req.traceparent, principal: req.principal };
}

const refOf = (p: Params): MachineRef => (p.tag !== undefined ? { tag: p.tag } : { id: p.id! });

/** Empty POST bodies count as `{}`. */
async function defaultBody(req: FastifyRequest): Promise<void> {
  if (req.body === undefined || req.body === null) req.body = {};
}

export function registerMachinesRoutes(app: FastifyInstance, m: Machines, sinks: Sinks): void {
  registerCatalogRoutes(app, m.rt.catalog, {
    kind: 'machines.namespace',
    path: '/v1/namespaces',
    what: 'namespace',
    face: 'machines',
    notFound: 'namespace_not_found',
    nameRe: NAMESPACE_NAME,
    schema: namespaceSchema,
    configured: () => new Map(Object.entries(m.cfg.namespaces)),
    check: (_name, parsed) => {
      const p = (parsed as { processor: { in_process?: string } }).processor;
      if (p.in_process !== undefined && !m.hasInProcess(p.in_process)) {
        throw badRequest(
          `namespace definition: processor.in_process: no in-process processor "${p.in_process}" in this build`,
        );
      }
    },
    decorate: async (d) => ({ machines: await m.counts(d.name), paused: m.namespacePaused(d.name) }),
  });

  for (const by of ['machines', 'tags'] as const) {
    const p = by === 'machines' ? '/v1/namespaces/:ns/machines/:id' : '/v1/namespaces/:ns/tags/:tag';
    const params = {
      type: 'object',
      properties: by === 'machines' ? { ns: name, id: name } : { ns: name, tag: name },
      required: by === 'machines' ? ['ns', 'id'] : ['ns', 'tag'],
    } as const;
    const tags = ['machines'];
    // Operation ids: callMachine, callByTag, ...
    const opId = (verb: string) => `${verb}${by === 'machines' ? 'Machine' : 'ByTag'}`;
    const post = (op: 'call' | 'repair', summary: string) =>
      app.post<ArgsRoute>(
        `${p}/${op}`,
        {
          preValidation: defaultBody,
          schema: {
            operationId: opId(op),
            summary,
            tags,
            params,
            body: argsBody,
            response: { 200: { type: 'object', properties: { response: {} } }, ...errors },
          },
        },
        async (req) => m[op](req.params.ns, refOf(req.params), req.body.args, requestOptions(req)),
      );
    if (by === 'machines') {
      app.post<ArgsRoute>(
        `${p}/start`,
        {
          preValidation: defaultBody,
          schema: {
            operationId: 'startMachine',
            summary: 'Create a machine and run its init signal',
            tags,
            params,
            body: argsBody,
            response: { 200: { type: 'object', properties: { response: {} } }, ...errors },
          },
        },
        async (req) => m.start(req.params.ns, req.params.id!, req.body.args, requestOptions(req)),
      );
    }
    post('call', 'Call a machine');
    post('repair', "Repair a failed machine through the processor's repair");
    app.post<{ Params: Params }>(
      `${p}/simple-repair`,
      {
        preValidation: defaultBody,
        schema: {
          operationId: opId('simpleRepair'),
          summary: 'Make a failed machine working again without the processor',
          tags,
          params,
          body: emptyBody,
          response: { ...noContent, ...errors },
        },
      },
      async (req, reply) => {
        await m.simpleRepair(req.params.ns, refOf(req.params), requestOptions(req));
        return reply.status(204).send();
      },
    );
    app.post<ArgsRoute>(
      `${p}/notify`,
      {
        preValidation: defaultBody,
        schema: {
          operationId: opId('notify'),
          summary: 'Queue a durable notification for the machine',
          tags,
          params,
          body: argsBody,
          response: { 202: { type: 'object', properties: { id: { type: 'integer' } } }, ...errors },
        },
      },
      async (req, reply) => reply.status(202).send(await m.notify(req.params.ns, refOf(req.params), req.body.args)),
    );
    app.get<{ Params: Params; Querystring: { after?: number; limit?: number; direction?: string } }>(
      p,
      {
        schema: {
          operationId: opId('get'),
          summary: 'A machine with a range of its history',
          tags,
          params,
          querystring: rangeQuery,
          response: {
            200: openObject(
              { history: { type: 'array', items: {} } },
              'The machine (id, namespace, status, aux state, timer, tags) and the asked range of its history',
            ),
            ...errors,
          },
        },
      },
      async (req) => m.get(req.params.ns, refOf(req.params), req.query),
    );
    app.delete<{ Params: Params }>(
      p,
      {
        schema: {
          operationId: opId('remove'),
          summary: 'Remove a machine, its history, timer, tags and notifications',
          tags,
          params,
          response: { ...noContent, ...errors },
        },
      },
      async (req, reply) => {
        await m.remove(req.params.ns, refOf(req.params), requestOptions(req));
        return reply.status(204).send();
      },
    );
  }

  app.get<{ Params: { ns: string }; Querystring: { status?: string; limit?: number; cursor?: string } }>(
    '/v1/namespaces/:ns/machines',
    {
      schema: {
        operationId: 'listMachines',
        summary: "A namespace's machines, failed first (with reason), paged",
        tags: ['machines'],
        params: { type: 'object', properties: { ns: name }, required: ['ns'] },
        querystring: pageQuery({ status: { type: 'string', enum: ['failed', 'working'] } }),
        response: { 200: pageOf(openObject()), ...errors },
      },
    },
    async (req) => m.list(req.params.ns, req.query),
  );

  app.get(
    '/v1/sinks',
    {
      schema: {
        operationId: 'listSinks',
        summary: 'Event sinks with the namespaces each publishes',
        tags: ['machines'],
        response: {
          200: {
            type: 'object',
            properties: {
              items: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: { name: { type: 'string' }, namespaces: { type: 'array', items: { type: 'string' } } },
                },
              },
              next_cursor: { type: ['string', 'null'] },
            },
          },
        },
      },
    },
    async () => ({ items: sinks.list(), next_cursor: null }),
  );

  const sinkParams = { type: 'object', properties: { sink: name }, required: ['sink'] } as const;
  app.get(
    '/v1/sinks/:sink/events',
    {
      schema: {
        operationId: 'readSinkEvents',
        summary: "Machine events of the sink's namespaces, in log order (long poll)",
        tags: ['machines'],
        params: sinkParams,
        response: {
          200: openObject({ events: { type: 'array', items: {} }, next_after: { type: 'integer' } }),
          ...errors,
        },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            shard: name,
            after: { type: 'integer', minimum: 0, default: 0 },
            limit: { type: 'integer', minimum: 1, maximum: 10000, default: 100 },
            wait_ms: { type: 'integer', minimum: 0, maximum: 60000, default: 0 },
          },
        },
      },
    },
    async (
      req: FastifyRequest<{
        Params: { sink: string };
        Querystring: { shard?: string; after: number; limit: number; wait_ms: number };
      }>,
    ) => {
      const abort = new AbortController();
      req.raw.once('close', () => abort.abort());
      const q = req.query;
      return sinks.read(req.params.sink, {
        shard: q.shard,
        after: q.after,
        limit: q.limit,
        waitMs: q.wait_ms,
        abort: abort.signal,
      });
    },
  );
  app.get(
    '/v1/sinks/:sink/stream',
    {
      schema: {
        operationId: 'streamSinkEvents',
        summary: "Machine events of the sink's namespaces as server-sent events",
        tags: ['machines'],
        params: sinkParams,
        response: {
          ...eventStream('One `event` per machine event (its id is the log position), with keep-alive comments'),
          ...errors,
        },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { shard: name, after: { type: 'integer', minimum: 0, default: 0 } },
        },
      },
    },
    async (
      req: FastifyRequest<{ Params: { sink: string }; Querystring: { shard?: string; after: number } }>,
      reply: FastifyReply,
    ) => {
      sinks.namespaces(req.params.sink);
      const shard = sinks.shardName(req.query.shard);
      const abort = new AbortController();
      req.raw.once('close', () => abort.abort());
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
      });
      let after = req.query.after;
      try {
        while (!abort.signal.aborted) {
          const page = await sinks.read(req.params.sink, {
            shard,
            after,
            limit: 1000,
            waitMs: 15_000,
            abort: abort.signal,
          });
          after = page.next_after;
          if (page.events.length === 0) res.write(': keepalive\n\n');
          for (const e of page.events) res.write(`id: ${e.pos}\nevent: event\ndata: ${JSON.stringify(e)}\n\n`);
        }
      } catch (err) {
        req.log.warn({ err }, 'sink stream ended');
      } finally {
        res.end();
      }
    },
  );
}
