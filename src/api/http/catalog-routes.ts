import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { definedInConfig, type Catalog, type CatalogKind } from '../../catalog/catalog.js';
import { badRequest, MillraceError, type ErrorCode } from '../../core/errors.js';
import { decodeCursor, encodeCursor, pageLimit, type Page } from '../../core/paging.js';
import { errorSchema, pageQuery, docBody, noContent, openObject, pageOf } from './schemas.js';

export interface Definition {
  name: string;
  source: 'config' | 'runtime';
  definition: unknown;
}

/** How one face exposes its runtime-definable things (topics, namespaces, kinds). */
export interface CatalogSpec {
  kind: CatalogKind;
  /** e.g. "/v1/bus/topics" */
  path: string;
  /** Human name, e.g. "topic". */
  what: string;
  /** The face it belongs to: its OpenAPI tag. */
  face: string;
  /** The error code of an unknown name. */
  notFound: ErrorCode;
  nameRe: RegExp;
  /** The same zod schema that validates the YAML entry. */
  schema: z.ZodType;
  /** Definitions from the config file (they win on conflict). */
  configured(): Map<string, unknown>;
  /** Further checks against the live state, after the schema (throw a typed error). */
  check?(name: string, parsed: unknown): void;
  /** Extra fields of a list item (e.g. machine counts). */
  decorate?(item: Definition): Promise<Record<string, unknown>>;
}

/** Turns a zod failure into a 400 naming the first offending field. */
export function zodBadRequest(what: string, err: z.ZodError): MillraceError {
  const issue = err.issues[0]!;
  const at = issue.path.length ? issue.path.join('.') : '(body)';
  return badRequest(`${what} definition: ${at}: ${issue.message}`, {
    issues: err.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
  });
}

/** Config definitions, then runtime definitions that the config does not shadow, by name. */
export function allDefinitions(catalog: Catalog, spec: CatalogSpec): Definition[] {
  const out = new Map<string, Definition>();
  for (const [name, definition] of spec.configured()) out.set(name, { name, source: 'config', definition });
  for (const d of catalog.list(spec.kind))
    if (!out.has(d.name)) out.set(d.name, { name: d.name, source: 'runtime', definition: d.definition });
  return [...out.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function registerCatalogRoutes(app: FastifyInstance, catalog: Catalog, spec: CatalogSpec): void {
  const errors = { 400: errorSchema, 404: errorSchema, 409: errorSchema };
  const params = {
    type: 'object',
    properties: { name: { type: 'string', minLength: 1, maxLength: 200 } },
    required: ['name'],
  } as const;
  const tags = [spec.face];
  // Operation ids from the human name: "pipe kind" gives listPipeKinds, getPipeKind, putPipeKind, deletePipeKind.
  const noun = spec.what
    .split(' ')
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join('');
  // The body is validated by the zod schema in the handler (its messages name the field); the document shows that same schema.
  const { $schema: _dialect, ...bodyDoc } = z.toJSONSchema(spec.schema, {
    io: 'input',
    unrepresentable: 'any',
  }) as Record<string, unknown>;
  const definition = openObject({
    name: { type: 'string' },
    source: { type: 'string', enum: ['config', 'runtime'] },
    definition: {},
  });
  const notFound = (name: string) =>
    new MillraceError(spec.notFound, `no ${spec.what} "${name}"`, { details: { name } });
  const checkName = (name: string) => {
    if (!spec.nameRe.test(name)) throw badRequest(`${spec.what} name must match ${String(spec.nameRe)}`);
  };
  const find = (name: string): Definition | null => {
    const c = spec.configured();
    if (c.has(name)) return { name, source: 'config', definition: c.get(name) };
    const d = catalog.get(spec.kind, name);
    return d ? { name, source: 'runtime', definition: d.definition } : null;
  };

  app.get<{ Querystring: { limit?: number; cursor?: string } }>(
    spec.path,
    {
      schema: {
        operationId: `list${noun}s`,
        summary: `${spec.what}s from the config file and defined at runtime, by name, paged`,
        tags,
        querystring: pageQuery(),
        response: { 200: pageOf(definition), ...errors },
      },
    },
    async (req): Promise<Page<Definition & Record<string, unknown>>> => {
      const limit = pageLimit(req.query.limit);
      const after = decodeCursor(req.query.cursor, (v): v is string => typeof v === 'string') ?? '';
      const rest = allDefinitions(catalog, spec).filter((d) => d.name > after);
      const page = rest.slice(0, limit);
      const items = [];
      for (const d of page) items.push({ ...d, ...(spec.decorate ? await spec.decorate(d) : {}) });
      return { items, next_cursor: rest.length > limit ? encodeCursor(page[page.length - 1]!.name) : null };
    },
  );

  app.get<{ Params: { name: string } }>(
    `${spec.path}/:name`,
    {
      schema: {
        operationId: `get${noun}`,
        summary: `One ${spec.what}`,
        tags,
        params,
        response: { 200: definition, ...errors },
      },
    },
    async (req) => {
      checkName(req.params.name);
      const d = find(req.params.name);
      if (d === null) throw notFound(req.params.name);
      return { ...d, ...(spec.decorate ? await spec.decorate(d) : {}) };
    },
  );

  app.put<{ Params: { name: string }; Body: unknown }>(
    `${spec.path}/:name`,
    {
      schema: {
        operationId: `put${noun}`,
        summary: `Define or redefine a ${spec.what} at runtime (stored; every node picks it up)`,
        tags,
        params,
        ...docBody(bodyDoc),
        response: { 200: definition, ...errors },
      },
    },
    async (req) => {
      const name = req.params.name;
      checkName(name);
      if (spec.configured().has(name)) throw definedInConfig(spec.what, name);
      const parsed = spec.schema.safeParse(req.body ?? {});
      if (!parsed.success) throw zodBadRequest(spec.what, parsed.error);
      spec.check?.(name, parsed.data);
      // The raw body is stored (defaults are applied on read, so later defaults apply too).
      await catalog.put(spec.kind, name, req.body ?? {});
      return { name, source: 'runtime', definition: req.body ?? {} } satisfies Definition;
    },
  );

  app.delete<{ Params: { name: string } }>(
    `${spec.path}/:name`,
    {
      schema: {
        operationId: `delete${noun}`,
        summary: `Delete a runtime ${spec.what}`,
        tags,
        params,
        response: { ...noContent, ...errors },
      },
    },
    async (req, reply) => {
      const name = req.params.name;
      checkName(name);
      if (spec.configured().has(name)) throw definedInConfig(spec.what, name);
      if (!(await catalog.delete(spec.kind, name))) throw notFound(name);
      return reply.status(204).send();
    },
  );
}
