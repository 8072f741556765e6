import type { FastifyInstance } from 'fastify';
import { badRequest, MillraceError } from '../../core/errors.js';
import { registerCatalogRoutes } from './catalog-routes.js';
import { KIND_NAME, kindSchema } from '../../pipe/config.js';
import { errorSchema, pageQuery, noContent, openObject, pageOf } from './schemas.js';
import type { Pipe, SessionInfo } from '../../pipe/pipe.js';

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict base64 (standard alphabet, padded); anything else is a bad_request. */
export function decodeRecord(s: string): Buffer {
  if (!BASE64.test(s)) throw badRequest('record must be standard base64 (A-Z a-z 0-9 + /, padded with =)');
  return Buffer.from(s, 'base64');
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function sessionJson(s: SessionInfo): Record<string, unknown> {
  return {
    id: s.id,
    kind: s.kind,
    state: s.state,
    repeats: s.repeats,
    created_at: iso(s.createdAt),
    due_at: iso(s.dueAt),
    last_error: s.lastError,
    records: s.records.map((r) => r.toString('base64')),
  };
}

const idParams = { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } as const;
const writeBody = {
  type: 'object',
  additionalProperties: false,
  required: ['record'],
  properties: { record: { type: 'string' }, seq: { type: 'integer', minimum: 0 } },
} as const;
const writeResponse = { type: 'object', properties: { duplicate: { type: 'boolean' } } } as const;
const sessionResponse = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    kind: { type: 'string' },
    state: { type: 'string', enum: ['open', 'delivering', 'stored', 'dead'] },
    repeats: { type: 'integer' },
    created_at: { type: 'string' },
    due_at: { type: ['string', 'null'] },
    last_error: { type: ['string', 'null'] },
    records: { type: 'array', items: { type: 'string' } },
  },
} as const;
const errors = { 400: errorSchema, 404: errorSchema, 409: errorSchema } as const;

/** HTTP routes of the pipe, under /v1/pipe. */
export function registerPipeRoutes(app: FastifyInstance, pipe: Pipe): void {
  registerCatalogRoutes(app, pipe.catalog, {
    kind: 'pipe.kind',
    path: '/v1/pipe/kinds',
    what: 'pipe kind',
    face: 'pipe',
    notFound: 'kind_not_found',
    nameRe: KIND_NAME,
    schema: kindSchema,
    configured: () => new Map(Object.entries(pipe.config.kinds)),
    decorate: async (d) => ({ paused: pipe.kindPaused(d.name) }),
    check: (name, parsed) => {
      const clash = pipe.kindClash(name, (parsed as { code?: number }).code);
      if (clash !== null)
        throw new MillraceError('defined_in_config', `pipe kind "${name}": ${clash}`, { details: { name } });
    },
  });

  const tags = ['pipe'];

  app.post<{ Body: { kind: string | number } }>(
    '/v1/pipe/sessions',
    {
      schema: {
        operationId: 'createSession',
        summary: 'Open a session of a kind',
        tags,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['kind'],
          properties: { kind: { type: ['string', 'integer'], description: 'kind name or code' } },
        },
        response: { 201: { type: 'object', properties: { id: { type: 'string' } } }, ...errors },
      },
    },
    async (req, reply) => reply.status(201).send({ id: await pipe.create(req.body.kind) }),
  );

  for (const op of ['append', 'replace'] as const) {
    app.post<{ Params: { id: string }; Body: { record: string; seq?: number } }>(
      `/v1/pipe/sessions/:id/${op}`,
      {
        schema: {
          operationId: op === 'append' ? 'appendRecord' : 'replaceRecords',
          summary:
            op === 'append' ? 'Append a record (base64) to a session' : "Replace a session's records with this one",
          tags,
          params: idParams,
          body: writeBody,
          response: { 200: writeResponse, ...errors },
        },
      },
      async (req) => {
        const record = decodeRecord(req.body.record);
        return pipe[op](req.params.id, record, req.body.seq);
      },
    );
  }

  app.post<{ Params: { id: string }; Body: { timeout_s: number } }>(
    '/v1/pipe/sessions/:id/store',
    {
      schema: {
        operationId: 'storeSession',
        summary: 'Close writing; the session comes back to its handler after timeout_s (plus jitter)',
        tags,
        params: idParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['timeout_s'],
          properties: { timeout_s: { type: 'number', minimum: 0, maximum: 31_536_000 } },
        },
        response: { 200: { type: 'object', properties: { due_at: { type: 'string' } } }, ...errors },
      },
    },
    async (req) => ({ due_at: iso(await pipe.store(req.params.id, req.body.timeout_s)) }),
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/pipe/sessions/:id',
    {
      schema: {
        operationId: 'finishSession',
        summary: 'Finish a session: it and its records are deleted',
        tags,
        params: idParams,
        response: { ...noContent, ...errors },
      },
    },
    async (req, reply) => {
      await pipe.delete(req.params.id);
      return reply.status(204).send();
    },
  );

  app.get<{ Querystring: { kind?: string; state?: string; limit?: number; cursor?: string } }>(
    '/v1/pipe/sessions',
    {
      schema: {
        operationId: 'listSessions',
        summary: 'Sessions by id, of one kind and in one state if asked, paged',
        tags,
        querystring: pageQuery({
          kind: { type: 'string', minLength: 1 },
          state: { type: 'string', enum: ['open', 'delivering', 'stored', 'dead'] },
        }),
        response: { 200: pageOf(openObject()), ...errors },
      },
    },
    async (req) => pipe.listSessions(req.query),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/pipe/sessions/:id',
    {
      schema: {
        operationId: 'getSession',
        summary: 'A session: kind, state, repeats, due time and records',
        tags,
        params: idParams,
        response: { 200: sessionResponse, ...errors },
      },
    },
    async (req) => sessionJson(await pipe.get(req.params.id)),
  );

  app.get<{ Querystring: { kind?: string; after?: string; limit: number } }>(
    '/v1/pipe/dead-letters',
    {
      schema: {
        operationId: 'listDeadLetters',
        summary: 'Sessions that exhausted max_repeats, by id',
        tags,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            kind: { type: 'string' },
            after: { type: 'string' },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              dead_letters: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: {
                    id: { type: 'string' },
                    kind: { type: 'string' },
                    repeats: { type: 'integer' },
                    last_error: { type: ['string', 'null'] },
                    died_at: { type: 'string' },
                  },
                },
              },
              next_after: { type: ['string', 'null'] },
            },
          },
          ...errors,
        },
      },
    },
    async (req) => {
      const list = await pipe.listDead({ kind: req.query.kind, after: req.query.after, limit: req.query.limit });
      return {
        dead_letters: list.map((d) => ({
          id: d.id,
          kind: d.kind,
          repeats: d.repeats,
          last_error: d.lastError,
          died_at: iso(d.diedAt),
        })),
        next_after: list.length === req.query.limit ? list[list.length - 1]!.id : null,
      };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/pipe/dead-letters/:id',
    {
      schema: {
        operationId: 'getDeadLetter',
        summary: 'Inspect a dead-lettered session with its records',
        tags,
        params: idParams,
        response: { 200: sessionResponse, ...errors },
      },
    },
    async (req) => sessionJson(await pipe.getDead(req.params.id)),
  );

  app.post<{ Params: { id: string } }>(
    '/v1/pipe/dead-letters/:id/redrive',
    {
      schema: {
        operationId: 'redriveDeadLetter',
        summary: 'Send a dead-lettered session back to its handler, with a fresh count of repeats',
        tags,
        params: idParams,
        response: { 200: openObject({ id: { type: 'string' }, state: { type: 'string' } }), ...errors },
      },
    },
    async (req) => {
      await pipe.redrive(req.params.id);
      return { id: req.params.id, state: 'stored' };
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/pipe/dead-letters/:id',
    {
      schema: {
        operationId: 'deleteDeadLetter',
        summary: 'Delete a dead-lettered session',
        tags,
        params: idParams,
        response: { ...noContent, ...errors },
      },
    },
    async (req, reply) => {
      await pipe.deleteDead(req.params.id);
      return reply.status(204).send();
    },
  );
}
