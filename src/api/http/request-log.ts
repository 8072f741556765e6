import type { FastifyReply, FastifyRequest } from 'fastify';

export interface RequestLogSettings {
  /** Log every answered request at `info` (otherwise at `debug`). */
  requests: boolean;
  /** Answers slower than this are logged at `warn` (streams and long polls excepted). */
  slow_request_ms: number;
}

/**
 * One line per answered request: at `debug` unless `logging.requests` is on
 * (then `info`); server errors and slow answers at `warn` whatever the
 * setting. Streams (server-sent events) and long polls (`wait_ms`) are slow
 * by design and are not counted as slow.
 */
export function requestLogger(s: RequestLogSettings): (req: FastifyRequest, reply: FastifyReply) => void {
  return (req, reply) => {
    const ms = reply.elapsedTime;
    const status = reply.statusCode;
    const line = {
      method: req.method,
      route: req.routeOptions.url,
      url: req.url,
      status,
      ms: Math.round(ms * 10) / 10,
    };
    if (status >= 500) return req.log.warn(line, 'request failed');
    const waits = isStream(req) || Number((req.query as { wait_ms?: unknown } | undefined)?.wait_ms ?? 0) > 0;
    if (!waits && ms > s.slow_request_ms) return req.log.warn(line, 'slow request');
    if (s.requests) req.log.info(line, 'request completed');
    else req.log.debug(line, 'request completed');
  };
}

/** A route whose 200 answer is declared as server-sent events (it writes to the raw response, past Fastify's headers). */
function isStream(req: FastifyRequest): boolean {
  const ok = (
    req.routeOptions.schema?.response as Record<string, { content?: Record<string, unknown> }> | undefined
  )?.[200];
  return ok?.content?.['text/event-stream'] !== undefined;
}
