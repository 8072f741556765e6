import type { FastifyInstance } from 'fastify';
import type { OpsFace } from '../../ops/face.js';
import { errorSchema, pageQuery } from './schemas.js';

const nameParams = {
  type: 'object',
  properties: { name: { type: 'string', minLength: 1, maxLength: 150 } },
  required: ['name'],
} as const;
const idParams = {
  type: 'object',
  properties: { id: { type: 'string', minLength: 1, maxLength: 100 } },
  required: ['id'],
} as const;
const nsParams = {
  type: 'object',
  properties: { ns: { type: 'string', minLength: 1, maxLength: 100 } },
  required: ['ns'],
} as const;
const errors = { 400: errorSchema, 401: errorSchema, 403: errorSchema, 404: errorSchema, 409: errorSchema };
const date = { type: 'string', format: 'date-time' } as const;
const nullableDate = { type: 'string', format: 'date-time', nullable: true } as const;

const scheduleInfo = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    source: { type: 'string', enum: ['config', 'runtime'] },
    definition: { type: 'object', additionalProperties: true },
    paused: { type: 'boolean' },
    next_fire_at: nullableDate,
    last_fire_at: nullableDate,
    running: { type: 'integer' },
    buffered_fire_at: nullableDate,
    missed: { type: 'integer' },
    created_at: date,
    updated_at: date,
  },
} as const;

const fireInfo = {
  type: 'object',
  properties: {
    fire_at: date,
    status: { type: 'string', enum: ['pending', 'running', 'buffered', 'skipped', 'done', 'failed', 'interrupted'] },
    backfill: { type: 'boolean' },
    attempts: { type: 'integer' },
    started_at: nullableDate,
    finished_at: nullableDate,
    error: { type: 'string', nullable: true },
  },
} as const;

const jobInfo = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    target: { type: 'string', enum: ['machines', 'pipe_dead_letters'] },
    spec: { type: 'object', additionalProperties: true },
    status: { type: 'string', enum: ['running', 'done', 'cancelled'] },
    total: { type: 'integer' },
    matched: { type: 'integer' },
    succeeded: { type: 'integer' },
    failed: { type: 'integer' },
    progress: { type: 'number' },
    errors: {
      type: 'array',
      items: {
        type: 'object',
        properties: { item: { type: 'string' }, code: { type: 'string' }, message: { type: 'string' } },
      },
    },
    created_at: date,
    updated_at: date,
    finished_at: nullableDate,
  },
} as const;

/** A job, or the count of a dry run. */
const startAnswer = { ...jobInfo, properties: { ...jobInfo.properties, dry_run: { type: 'boolean' } } } as const;
const page = (item: object) => ({
  type: 'object',
  properties: { items: { type: 'array', items: item }, next_cursor: { type: 'string', nullable: true } },
});
/** Bodies are checked by the face (one set of rules for HTTP and the config file). */
const anyBody = { type: 'object' } as const;

const pauseInfo = {
  type: 'object',
  properties: {
    kind: { type: 'string', enum: ['namespace', 'machine', 'subscription', 'pipe_kind', 'exporter'] },
    name: { type: 'string' },
    paused_at: date,
    reason: { type: 'string', nullable: true },
  },
} as const;
const resumeAnswer = {
  type: 'object',
  properties: { kind: { type: 'string' }, name: { type: 'string' }, resumed: { type: 'boolean' } },
} as const;
const pauseBody = {
  type: 'object',
  additionalProperties: false,
  properties: { reason: { type: 'string', maxLength: 500 } },
} as const;

/** Empty POST bodies count as `{}`. */
async function defaultBody(req: { body: unknown }): Promise<void> {
  if (req.body === undefined || req.body === null) req.body = {};
}

/** Schedules, bulk jobs, pause and resume (the ops face). */
export function registerOpsRoutes(app: FastifyInstance, ops: OpsFace): void {
  const s = ops.schedules;
  let tags = ['schedules'];
  app.get<{ Querystring: { limit?: number; cursor?: string } }>(
    '/v1/schedules',
    {
      schema: {
        operationId: 'listSchedules',
        summary: 'Schedules, by name, paged',
        tags,
        querystring: pageQuery(),
        response: { 200: page(scheduleInfo), ...errors },
      },
    },
    async (req) => s.list(req.query),
  );
  app.put<{ Params: { name: string }; Body: unknown }>(
    '/v1/schedules/:name',
    {
      schema: {
        operationId: 'putSchedule',
        summary: 'Create or replace a schedule (cron or interval, jitter, action, overlap policy, catch-up window)',
        tags,
        params: nameParams,
        body: anyBody,
        response: { 200: scheduleInfo, 201: scheduleInfo, ...errors },
      },
    },
    async (req, reply) => {
      const r = await s.put(req.params.name, req.body);
      return reply.status(r.created ? 201 : 200).send(r.schedule);
    },
  );
  app.get<{ Params: { name: string } }>(
    '/v1/schedules/:name',
    {
      schema: {
        operationId: 'getSchedule',
        summary: 'A schedule with its state: paused, next and last fire, running and buffered fires, missed fires',
        tags,
        params: nameParams,
        response: { 200: scheduleInfo, ...errors },
      },
    },
    async (req) => s.get(req.params.name),
  );
  app.delete<{ Params: { name: string } }>(
    '/v1/schedules/:name',
    {
      schema: {
        operationId: 'deleteSchedule',
        summary: 'Delete a schedule and its fire records (running fires finish)',
        tags,
        params: nameParams,
        response: { 204: { type: 'null' }, ...errors },
      },
    },
    async (req, reply) => {
      await s.remove(req.params.name);
      return reply.status(204).send();
    },
  );
  for (const op of ['pause', 'resume'] as const) {
    app.post<{ Params: { name: string } }>(
      `/v1/schedules/:name/${op}`,
      {
        schema: {
          operationId: `${op}Schedule`,
          summary:
            op === 'pause'
              ? 'Pause a schedule: no fire until resumed'
              : 'Resume a schedule from its next fire time after now',
          tags,
          params: nameParams,
          response: { 200: scheduleInfo, ...errors },
        },
      },
      async (req) => s[op](req.params.name),
    );
  }
  app.get<{ Params: { name: string }; Querystring: { count: number } }>(
    '/v1/schedules/:name/next',
    {
      schema: {
        operationId: 'nextScheduleFires',
        summary: 'The next fire times from now (nominal, and due with the jitter)',
        tags,
        params: nameParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { count: { type: 'integer', minimum: 1, maximum: 1000, default: 10 } },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              items: { type: 'array', items: { type: 'object', properties: { fire_at: date, due_at: date } } },
            },
          },
          ...errors,
        },
      },
    },
    async (req) => ({ items: await s.next(req.params.name, req.query.count) }),
  );
  app.get<{ Params: { name: string }; Querystring: { limit?: number; cursor?: string } }>(
    '/v1/schedules/:name/fires',
    {
      schema: {
        operationId: 'listScheduleFires',
        summary: 'Recorded fires of a schedule, newest first, paged',
        tags,
        params: nameParams,
        querystring: pageQuery(),
        response: { 200: page(fireInfo), ...errors },
      },
    },
    async (req) => s.fires(req.params.name, req.query),
  );
  app.post<{ Params: { name: string }; Body: { from: string; to: string } }>(
    '/v1/schedules/:name/backfill',
    {
      schema: {
        operationId: 'backfillSchedule',
        summary: 'Run the action for each fire time in [from, to] not fired yet (at most 1000 fire times)',
        tags,
        params: nameParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['from', 'to'],
          properties: { from: { type: 'string', maxLength: 40 }, to: { type: 'string', maxLength: 40 } },
        },
        response: {
          202: {
            type: 'object',
            properties: { fire_times: { type: 'integer' }, queued: { type: 'integer' }, already: { type: 'integer' } },
          },
          ...errors,
        },
      },
    },
    async (req, reply) => reply.status(202).send(await s.backfill(req.params.name, req.body.from, req.body.to)),
  );

  const b = ops.bulk;
  tags = ['bulk'];
  app.post<{ Params: { ns: string }; Body: unknown }>(
    '/v1/namespaces/:ns/bulk-jobs',
    {
      schema: {
        operationId: 'startMachineBulkJob',
        summary:
          'Act on every machine of the namespace a filter matches (repair, simple repair, remove, notify), rate-limited; dry_run counts the matches',
        tags,
        params: nsParams,
        body: anyBody,
        response: { 200: startAnswer, 202: jobInfo, ...errors },
      },
    },
    async (req, reply) => {
      const r = await b.startMachines(req.params.ns, req.body);
      return reply.status('dry_run' in r ? 200 : 202).send(r);
    },
  );
  app.post<{ Body: unknown }>(
    '/v1/pipe/dead-letters/bulk-jobs',
    {
      schema: {
        operationId: 'startDeadLetterBulkJob',
        summary: 'Redrive or delete every pipe dead letter a filter matches, rate-limited; dry_run counts the matches',
        tags,
        body: anyBody,
        response: { 200: startAnswer, 202: jobInfo, ...errors },
      },
    },
    async (req, reply) => {
      const r = await b.startDeadLetters(req.body);
      return reply.status('dry_run' in r ? 200 : 202).send(r);
    },
  );
  app.get<{ Querystring: { limit?: number; cursor?: string } }>(
    '/v1/bulk-jobs',
    {
      schema: {
        operationId: 'listBulkJobs',
        summary: 'Bulk jobs, newest first, paged',
        tags,
        querystring: pageQuery(),
        response: { 200: page(jobInfo), ...errors },
      },
    },
    async (req) => b.list(req.query),
  );
  app.get<{ Params: { id: string } }>(
    '/v1/bulk-jobs/:id',
    {
      schema: {
        operationId: 'getBulkJob',
        summary: 'A bulk job: status, progress, counts and the first errors',
        tags,
        params: idParams,
        response: { 200: jobInfo, ...errors },
      },
    },
    async (req) => b.get(req.params.id),
  );
  app.post<{ Params: { id: string } }>(
    '/v1/bulk-jobs/:id/cancel',
    {
      schema: {
        operationId: 'cancelBulkJob',
        summary: 'Cancel a running bulk job: no target is acted on after the answer',
        tags,
        params: idParams,
        response: { 200: jobInfo, ...errors },
      },
    },
    async (req) => b.cancel(req.params.id),
  );

  const p = ops.pauses;
  tags = ['pause'];
  const targets: Array<{
    kind: 'namespace' | 'machine' | 'subscription' | 'pipe_kind' | 'exporter';
    path: string;
    params: object;
    what: string;
    op: string;
  }> = [
    {
      kind: 'namespace',
      path: '/v1/namespaces/:ns',
      params: nsParams,
      what: 'a machine namespace (calls refused or queued, timers and notifications wait)',
      op: 'Namespace',
    },
    {
      kind: 'machine',
      path: '/v1/namespaces/:ns/machines/:id',
      params: {
        type: 'object',
        properties: {
          ns: { type: 'string', minLength: 1, maxLength: 100 },
          id: { type: 'string', minLength: 1, maxLength: 100 },
        },
        required: ['ns', 'id'],
      },
      what: 'one machine (calls refused or queued, timers and notifications wait)',
      op: 'Machine',
    },
    {
      kind: 'subscription',
      path: '/v1/bus/subscriptions/:name',
      params: nameParams,
      what: 'a bus subscription (delivery stops, its position is kept)',
      op: 'Subscription',
    },
    {
      kind: 'pipe_kind',
      path: '/v1/pipe/kinds/:name',
      params: nameParams,
      what: 'a pipe kind (pushes to its handler wait)',
      op: 'PipeKind',
    },
    {
      kind: 'exporter',
      path: '/v1/bus/exporters/:name',
      params: nameParams,
      what: 'a RabbitMQ exporter (shipping waits, its position is kept)',
      op: 'Exporter',
    },
  ];
  for (const t of targets) {
    type P = { Params: { ns?: string; id?: string; name?: string }; Body: unknown };
    const nameOf = (q: P['Params']): string => (t.kind === 'namespace' || t.kind === 'machine' ? q.ns! : q.name!);
    app.post<P>(
      `${t.path}/pause`,
      {
        preValidation: defaultBody,
        schema: {
          operationId: `pause${t.op}`,
          summary: `Pause ${t.what}; stored, survives restarts`,
          tags,
          params: t.params,
          body: pauseBody,
          response: { 200: pauseInfo, ...errors },
        },
      },
      async (req) => p.pause(t.kind, nameOf(req.params), req.body, req.params.id),
    );
    app.post<P>(
      `${t.path}/resume`,
      {
        preValidation: defaultBody,
        schema: {
          operationId: `resume${t.op}`,
          summary: `Resume ${t.what.split(' (')[0]}`,
          tags,
          params: t.params,
          body: { type: 'object', additionalProperties: false, properties: {} },
          response: { 200: resumeAnswer, ...errors },
        },
      },
      async (req) => p.resume(t.kind, nameOf(req.params), req.params.id),
    );
  }
  app.get(
    '/v1/pauses',
    {
      schema: {
        operationId: 'listPauses',
        summary: 'Everything paused: namespaces, machines, subscriptions, pipe kinds, exporters',
        tags,
        response: { 200: { type: 'object', properties: { items: { type: 'array', items: pauseInfo } } }, ...errors },
      },
    },
    async () => ({ items: p.list() }),
  );
}
