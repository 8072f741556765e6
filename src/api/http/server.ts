import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import { Ajv } from 'ajv';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import { Histogram } from 'prom-client';
import { sleep } from '../../core/clock.js';
import { MillraceError } from '../../core/errors.js';
import { isShardMoved, MOVED_RETRIES, movedRetryDelayMs } from '../../core/moved-retry.js';
import { toHttpError } from './http-errors.js';
import type { Runtime } from '../../runtime.js';
import { registerCoreRoutes } from './core-routes.js';
import type { Span } from '@opentelemetry/api';
import { endSpan, SpanKind, startSpan, traceparentOf } from '../../core/telemetry.js';
import { registerUiRoutes } from './ui-routes.js';
import { Access, canonicalSubject, OPEN_SETTINGS } from '../../auth/access.js';
import { httpRule, isOpenRule, requiredPermissions, type PermissionRule } from '../../auth/permissions.js';
import { AuditTrail, type AuditEntry } from '../../auth/audit.js';
import type { Principal } from '../../core/principal.js';
import { registerAuditRoutes, registerAuthRoutes } from './auth-routes.js';
import { registerDocsRoutes, registerOpenApi } from './openapi.js';
import { requestLogger } from './request-log.js';

export interface HttpPlugin {
  (app: FastifyInstance): void | Promise<void>;
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

declare module 'fastify' {
  interface FastifyRequest {
    traceparent: string | undefined;
    span: Span | undefined;
    /** Who is calling, set once by the access check (undefined on open routes). */
    principal: Principal | undefined;
    /** The audit entry of a sensitive action, once its `requested` event is committed. */
    audit: AuditEntry | undefined;
  }
}

/**
 * Fastify over a Runtime. Bodies are validated strictly (no type coercion,
 * unknown fields refused by each schema's `additionalProperties: false`);
 * query strings and path parameters are coerced from text.
 */
export async function buildHttpServer(
  rt: Runtime,
  plugins: HttpPlugin[] = [],
  access: Access = new Access(OPEN_SETTINGS, null),
): Promise<FastifyInstance> {
  const tls = rt.config.http.tls;
  const app = Fastify({
    ...(tls === undefined ? {} : { https: tlsServerOptions(tls) }),
    loggerInstance: rt.logger as unknown as FastifyBaseLogger,
    bodyLimit: rt.config.http.body_limit_bytes,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && given.length > 0 && given.length <= 200 ? given : randomUUID();
    },
    forceCloseConnections: 'idle',
    // Each request is logged once, when answered, by the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
  });

  const strict = new Ajv({
    coerceTypes: false,
    removeAdditional: false,
    useDefaults: true,
    allErrors: false,
    strict: false,
  });
  const lenient = new Ajv({
    coerceTypes: 'array',
    removeAdditional: false,
    useDefaults: true,
    allErrors: false,
    strict: false,
  });
  app.setValidatorCompiler(({ schema, httpPart }) =>
    httpPart === 'body' ? strict.compile(schema) : lenient.compile(schema),
  );

  // A request routed by a table older than its shard's is refused `shard_moved` with nothing written
  // (a shard split moved or is moving its key): the node re-reads routing and runs it again against the
  // new table, answering `shard_moved` (retryable) only if the cut-over outlasts the retries.
  app.addHook('onRoute', (route) => {
    const handler = route.handler;
    route.handler = async function (this: FastifyInstance, req, reply) {
      for (let attempt = 1; ; attempt++) {
        try {
          return (await handler.call(this, req, reply)) as unknown;
        } catch (err) {
          if (!isShardMoved(err) || attempt >= MOVED_RETRIES || reply.sent || reply.raw.headersSent) throw err;
          await rt.storage.refreshRouting();
          await sleep(movedRetryDelayMs(attempt));
        }
      }
    };
  });

  await registerOpenApi(app);

  const httpDuration = new Histogram({
    name: 'millrace_http_request_duration_seconds',
    help: 'HTTP request duration',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [rt.metrics],
  });

  app.decorateRequest('traceparent', undefined);
  app.decorateRequest('span', undefined);
  app.addHook('onRequest', async (req, reply) => {
    const tp = req.headers.traceparent;
    req.traceparent = typeof tp === 'string' && TRACEPARENT.test(tp) ? tp : undefined;
    const span = startSpan(`HTTP ${req.method}`, req.traceparent, SpanKind.SERVER, {
      'http.request.method': req.method,
      'url.path': req.url.split('?')[0]!,
    });
    if (span !== undefined) {
      // Work done for the request (processor calls, pushes) is traced under its span.
      req.span = span;
      req.traceparent = traceparentOf(span);
    }
    // A child logger per request costs a few percent of a small request: only when there is a trace to name.
    if (req.traceparent !== undefined) req.log = req.log.child({ traceparent: req.traceparent });
    reply.header('x-request-id', req.id);
  });

  // Access, once at the edge: who is calling (before the body is read), then,
  // with the route's parameters and validated body at hand, whether the
  // permission table grants it. Both run before any handler, so a refused
  // request writes nothing.
  app.decorateRequest('principal', undefined);
  const ruleOf = (req: FastifyRequest) =>
    req.routeOptions.url === undefined ? undefined : httpRule(req.method, req.routeOptions.url);
  app.addHook('onRequest', async (req) => {
    if (access.isOpen(ruleOf(req))) return;
    req.principal = await access.authenticate(req.headers.authorization, peerSubject(req));
    access.limit(req.principal);
  });
  app.addHook('preHandler', async (req) => {
    const url = req.routeOptions.url;
    if (url === undefined) return; // no such route: answered 404 by the not-found handler
    const rule = ruleOf(req);
    if (access.isOpen(rule)) return;
    await access.authorize(
      req.principal!,
      rule,
      {
        params: (req.params ?? {}) as Record<string, unknown>,
        query: (req.query ?? {}) as Record<string, unknown>,
        body: req.body,
      },
      `${req.method} ${url}`,
    );
  });
  const logRequest = requestLogger(rt.config.logging);
  // The audit trail: an audited action's `requested` event is committed before
  // its handler runs, its `completed` event before the answer is sent.
  const audit = new AuditTrail(rt.log);
  app.decorateRequest('audit', undefined);
  app.addHook('preHandler', async (req) => {
    const rule = ruleOf(req);
    if (rule === undefined || isOpenRule(rule) || rule.audit === undefined) return;
    const input = {
      params: (req.params ?? {}) as Record<string, unknown>,
      query: (req.query ?? {}) as Record<string, unknown>,
      body: req.body,
    };
    const entry: AuditEntry = {
      principal: AuditTrail.principalId(req.principal),
      action: rule.audit,
      resource: req.url.split('?')[0]!,
      permissions: await requiredPermissions(rule as PermissionRule, input, access.lookup),
      method: req.method,
      request_id: req.id,
    };
    await audit.record('requested', entry);
    req.audit = entry;
  });
  app.addHook('onSend', async (req, reply, payload) => {
    const entry = req.audit;
    if (entry === undefined) return payload;
    req.audit = undefined;
    let resource = entry.resource;
    // A created token is named by the id in the answer (never its secret).
    if (entry.action === 'token.create' && reply.statusCode === 201 && typeof payload === 'string') {
      try {
        resource = `${resource}/${String((JSON.parse(payload) as { id: unknown }).id)}`;
      } catch {
        /* keep the collection path */
      }
    }
    try {
      await audit.record('completed', { ...entry, resource, status: reply.statusCode });
    } catch (err) {
      // The action is done: answer it; the `requested` event without its `completed` tells the audit reader so.
      req.log.error({ err, request_id: req.id, action: entry.action }, 'audit: the completed event was not written');
    }
    return payload;
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unknown';
    httpDuration.observe({ method: req.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    logRequest(req, reply);
    if (req.span !== undefined) {
      req.span.updateName(`HTTP ${req.method} ${route}`);
      endSpan(req.span, reply.statusCode >= 500 ? new Error(`status ${reply.statusCode}`) : undefined, {
        'http.route': route,
        'http.response.status_code': reply.statusCode,
      });
    }
  });

  app.setErrorHandler(async (err, req, reply) => {
    const e = toHttpError(err);
    if (e.httpStatus >= 500) req.log.error({ err, code: e.code }, 'request failed');
    if (e.retryAfterS !== undefined) reply.header('retry-after', String(Math.ceil(e.retryAfterS)));
    if (e.code === 'unauthenticated')
      reply.header(
        'www-authenticate',
        req.headers.authorization ? 'Bearer realm="millrace", error="invalid_token"' : 'Bearer realm="millrace"',
      );
    return reply.status(e.httpStatus).send({ error: e.toJSON() });
  });
  app.setNotFoundHandler(async (req, reply) => {
    return reply
      .status(404)
      .send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  registerCoreRoutes(app, rt);
  await registerDocsRoutes(app);
  if (access.tokens !== null) registerAuthRoutes(app, access.tokens);
  registerAuditRoutes(app, audit, access);
  await registerUiRoutes(app);
  for (const p of plugins) await p(app);
  return app;
}

/** Options of an HTTPS listener: with a client CA, a client certificate signed by it is required. */
export function tlsServerOptions(tls: { cert_file: string; key_file: string; client_ca_file?: string | undefined }): {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  requestCert: boolean;
  rejectUnauthorized: boolean;
} {
  const read = (what: string, f: string) => {
    try {
      return readFileSync(f);
    } catch (err) {
      throw new MillraceError('config_invalid', `http.tls.${what}: cannot read ${f}: ${(err as Error).message}`);
    }
  };
  const out = {
    cert: read('cert_file', tls.cert_file),
    key: read('key_file', tls.key_file),
    requestCert: false,
    rejectUnauthorized: false,
  };
  if (tls.client_ca_file === undefined) return out;
  return { ...out, ca: read('client_ca_file', tls.client_ca_file), requestCert: true, rejectUnauthorized: true };
}

/** The canonical subject of the verified client certificate of the request's connection, if any. */
function peerSubject(req: FastifyRequest): string | null {
  const sock = req.raw.socket as TLSSocket;
  if (typeof sock.getPeerCertificate !== 'function' || sock.authorized !== true) return null;
  const cert = sock.getPeerCertificate();
  return cert?.subject === undefined ? null : canonicalSubject(cert.subject as unknown as Record<string, string>);
}

export function requestDeadlineHeader(req: FastifyRequest): string | undefined {
  const v = req.headers['x-request-deadline'];
  return typeof v === 'string' ? v : undefined;
}
