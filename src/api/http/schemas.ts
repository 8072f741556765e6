/** Small schemas the route files share (document, validation and serializer alike). */

export { errorSchema } from './error-schema.js';

/** Query string of a paged list (`limit` 1..500, opaque `cursor`) plus its filters. */
export function pageQuery(filters: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      ...filters,
      limit: { type: 'integer', minimum: 1, maximum: 500 },
      cursor: { type: 'string', maxLength: 2000 },
    },
  };
}

/** An object answer naming its main fields; further fields pass through as they are. */
export const openObject = (properties: Record<string, unknown> = {}, description?: string) =>
  ({
    type: 'object',
    additionalProperties: true,
    properties,
    ...(description === undefined ? {} : { description }),
  }) as const;

/** A 204 answer without a body. */
export const noContent = { 204: { type: 'null', description: 'Done; no body' } } as const;

/** A server-sent-events answer (`text/event-stream`). */
export const eventStream = (description: string) =>
  ({ 200: { description, content: { 'text/event-stream': { schema: { type: 'string' } } } } }) as const;

/** A paged list: `items` and the opaque `next_cursor` of the next page (null on the last). */
export const pageOf = (item: Record<string, unknown>) =>
  openObject({ items: { type: 'array', items: item }, next_cursor: { type: ['string', 'null'] } });

/**
 * A route schema key for a request body that the handler validates itself
 * (with a zod schema, for its messages): the OpenAPI document shows it as
 * the body, Fastify does not validate with it.
 */
export const DOC_BODY = 'x-doc-body';

/** Spread into a route schema: `{ ...docBody(schema) }`. */
export const docBody = (schema: unknown): object => ({ [DOC_BODY]: schema });
