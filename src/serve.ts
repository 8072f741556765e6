import type { FastifyInstance } from 'fastify';
import type { Config } from './core/config.js';
import { createLogger } from './core/logger.js';
import { buildHttpServer } from './api/http/server.js';
import { Runtime } from './runtime.js';

export interface Node {
  runtime: Runtime;
  http: FastifyInstance;
  /** Drains in-flight requests, stops background work, closes storage. */
  close(): Promise<void>;
}

/** Opens the runtime and starts the HTTP server; the node a `millrace serve` runs. */
export async function startNode(config: Config, opts: { logger?: ReturnType<typeof createLogger> } = {}): Promise<Node> {
  const logger = opts.logger ?? createLogger(config.logging.level);
  const runtime = await Runtime.open(config, { logger });
  let http: FastifyInstance;
  try {
    http = await buildHttpServer(runtime);
    await http.listen({ host: config.http.host, port: config.http.port });
  } catch (err) {
    await runtime.close();
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    runtime,
    http,
    close: () =>
      (closing ??= (async () => {
        await http.close();
        await runtime.close();
      })()),
  };
}

/** `millrace serve`: runs until SIGTERM/SIGINT, then drains and exits 0. */
export async function serve(config: Config): Promise<void> {
  const logger = createLogger(config.logging.level);
  const node = await startNode(config, { logger });
  const addr = node.http.server.address();
  logger.info({ address: typeof addr === 'object' && addr ? `http://${addr.address}:${addr.port}` : addr, dialect: config.storage.dialect, shards: config.storage.shards.length }, 'millrace serving');
  const stop = (signal: string) => {
    logger.info({ signal }, 'draining');
    const force = setTimeout(() => {
      logger.warn('drain timed out; exiting');
      process.exit(1);
    }, config.http.drain_timeout_ms + 5000);
    force.unref();
    node.close().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
