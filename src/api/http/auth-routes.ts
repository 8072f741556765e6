import type { FastifyInstance } from 'fastify';
import type { TokenStore } from '../../auth/tokens.js';
import { permissionDenied, type Access } from '../../auth/access.js';
import type { AuditTrail } from '../../auth/audit.js';
import { holds, OPEN_PRINCIPAL } from '../../core/principal.js';
import { decodeCursor, encodeCursor, pageLimit } from '../../core/paging.js';
import { errorSchema, pageQuery } from './schemas.js';

const tokenInfo = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    permissions: { type: 'array', items: { type: 'string' } },
    created_at: { type: 'string', format: 'date-time' },
    expires_at: { type: ['string', 'null'], format: 'date-time' },
    revoked_at: { type: ['string', 'null'], format: 'date-time' },
  },
} as const;
const idParams = {
  type: 'object',
  properties: { id: { type: 'string', minLength: 1, maxLength: 100 } },
  required: ['id'],
} as const;

/** Runtime API tokens under /v1/auth/tokens (permission auth:admin). */
export function registerAuthRoutes(app: FastifyInstance, tokens: TokenStore): void {
  const tags = ['auth'];
  const errors = { 400: errorSchema, 401: errorSchema, 403: errorSchema, 404: errorSchema };
  app.post<{ Body: { name: string; permissions: string[]; expires_in_s?: number } }>(
    '/v1/auth/tokens',
    {
      schema: {
        operationId: 'createToken',
        summary:
          'Create an API token with at most the permissions of the caller; its secret is in this answer only (stored as a scrypt hash)',
        tags,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['name', 'permissions'],
          properties: {
            name: { type: 'string', minLength: 1, maxLength: 100 },
            permissions: {
              type: 'array',
              minItems: 1,
              maxItems: 200,
              items: { type: 'string', minLength: 1, maxLength: 300 },
            },
            expires_in_s: { type: 'integer', minimum: 1, maximum: 315_360_000 },
          },
        },
        response: {
          201: { type: 'object', properties: { ...tokenInfo.properties, token: { type: 'string' } } },
          ...errors,
        },
      },
    },
    async (req, reply) => {
      // No escalation: a token holds at most what its creator holds.
      const by = req.principal;
      if (by !== undefined && Array.isArray(req.body.permissions)) {
        for (const p of req.body.permissions) if (typeof p === 'string' && !holds(by, p)) throw permissionDenied(p, by);
      }
      const t = await tokens.create(req.body);
      req.log.info(
        { token_id: t.id, name: t.info.name, permissions: t.info.permissions, by: req.principal?.id },
        'API token created',
      );
      return reply.status(201).send({ ...t.info, token: t.token });
    },
  );

  app.get<{ Querystring: { limit?: number; cursor?: string } }>(
    '/v1/auth/tokens',
    {
      schema: {
        operationId: 'listTokens',
        summary: 'API tokens by id, without secrets (revoked and expired ones marked), paged',
        tags,
        querystring: pageQuery(),
        response: {
          200: {
            type: 'object',
            properties: { items: { type: 'array', items: tokenInfo }, next_cursor: { type: ['string', 'null'] } },
          },
          ...errors,
        },
      },
    },
    async (req) => {
      const after = decodeCursor(req.query.cursor, (v): v is string => typeof v === 'string') ?? '';
      const page = await tokens.list({ after, limit: pageLimit(req.query.limit) });
      return { items: page.items, next_cursor: page.next_cursor === null ? null : encodeCursor(page.next_cursor) };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/auth/tokens/:id',
    {
      schema: {
        operationId: 'getToken',
        summary: 'One API token, without its secret',
        tags,
        params: idParams,
        response: { 200: tokenInfo, ...errors },
      },
    },
    async (req) => tokens.get(req.params.id),
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/auth/tokens/:id',
    {
      schema: {
        operationId: 'revokeToken',
        summary: 'Revoke an API token: refused from the next request on, on every node',
        tags,
        params: idParams,
        response: { 204: { type: 'null' }, ...errors },
      },
    },
    async (req, reply) => {
      await tokens.revoke(req.params.id);
      req.log.info({ token_id: req.params.id, by: req.principal?.id }, 'API token revoked');
      return reply.status(204).send();
    },
  );
}

const auditRecord = {
  type: 'object',
  properties: {
    seq: { type: 'integer' },
    shard: { type: 'string' },
    pos: { type: 'integer', nullable: true },
    at: { type: 'string', format: 'date-time' },
    phase: { type: 'string', enum: ['requested', 'completed'] },
    principal: { type: 'string' },
    action: { type: 'string' },
    resource: { type: 'string' },
    permissions: { type: 'array', items: { type: 'string' } },
    method: { type: 'string' },
    request_id: { type: 'string' },
    status: { type: 'integer' },
  },
} as const;

/** The audit trail (`GET /v1/audit`, permission audit:read) and the caller's own principal (`GET /v1/auth/whoami`). */
export function registerAuditRoutes(app: FastifyInstance, audit: AuditTrail, access: Access): void {
  const errors = { 400: errorSchema, 401: errorSchema, 403: errorSchema };
  app.get<{ Querystring: { limit?: number; cursor?: string } }>(
    '/v1/audit',
    {
      schema: {
        operationId: 'listAudit',
        summary: 'The audit trail of sensitive actions, from the log stream millrace.audit, oldest first, paged',
        tags: ['auth'],
        querystring: pageQuery(),
        response: {
          200: {
            type: 'object',
            properties: {
              items: { type: 'array', items: auditRecord },
              next_cursor: { type: 'string', nullable: true },
            },
          },
          ...errors,
        },
      },
    },
    async (req) => {
      const after =
        decodeCursor(req.query.cursor, (v): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0) ?? 0;
      const limit = pageLimit(req.query.limit);
      const items = await audit.list(after, limit);
      return { items, next_cursor: items.length < limit ? null : encodeCursor(items[items.length - 1]!.seq) };
    },
  );

  app.get(
    '/v1/auth/whoami',
    {
      schema: {
        operationId: 'whoami',
        summary:
          "The caller's principal and permissions (any valid credentials), so a client can offer only what it may do",
        tags: ['auth'],
        response: {
          200: {
            type: 'object',
            properties: {
              authentication: { type: 'boolean' },
              principal: {
                type: 'object',
                properties: {
                  id: { type: 'string' },
                  source: { type: 'string' },
                  name: { type: 'string' },
                  permissions: { type: 'array', items: { type: 'string' } },
                },
              },
            },
          },
          401: errorSchema,
        },
      },
    },
    async (req) => {
      const p = req.principal ?? OPEN_PRINCIPAL;
      return {
        authentication: access.enabled,
        principal: { id: p.id, source: p.source, name: p.name, permissions: [...p.permissions] },
      };
    },
  );
}
