import type { FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where `npm run build` puts the console (same path from `src/` and from `dist/`). */
export const UI_DIR =
  process.env.MILLRACE_UI_DIR ?? join(fileURLToPath(new URL('../../../', import.meta.url)), 'dist', 'ui');

/**
 * The web console at `/ui/`: the built single-page app, served as static
 * files. Without a build the node still starts and `/ui` says how to build it.
 */
export async function registerUiRoutes(app: FastifyInstance, dir: string = UI_DIR): Promise<void> {
  const built = existsSync(join(dir, 'index.html'));
  // A browser pointed at the node lands on the console.
  app.get('/', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/'));
  app.get('/ui', { schema: { hide: true } }, async (_req, reply) => {
    if (!built) return missing(reply);
    return reply.redirect('/ui/');
  });
  if (!built) {
    app.get('/ui/*', { schema: { hide: true } }, async (_req, reply) => missing(reply));
    return;
  }
  await app.register(fastifyStatic, {
    root: dir,
    prefix: '/ui/',
    index: ['index.html'],
    wildcard: true,
    cacheControl: false,
  });
}

function missing(reply: import('fastify').FastifyReply) {
  return reply
    .status(503)
    .type('text/plain; charset=utf-8')
    .send(
      'The millrace console is not built on this node: run `npm run build` (or `npm ci`) in the millrace checkout, then restart the node.\n',
    );
}
