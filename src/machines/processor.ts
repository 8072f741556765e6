import { randomBytes } from 'node:crypto';
import { jsonPost, PostError } from '../core/http-post.js';
import type { RequestSigner } from '../core/request-signing.js';
import type { NamespaceConfig } from './config.js';
import { eventJson } from './history-cache.js';
import { ProcessorUnavailable, type ProcessorRequest } from './wire.js';

export type { ProcessorRequest, ProcessorResult } from './wire.js';

export interface ProcessorContext {
  /** W3C trace context of the request that caused this step. */
  traceparent: string;
  /** Absolute deadline, ms since the epoch. */
  deadline: number;
  signal: AbortSignal;
}

/** An in-process processor: returns the result object (see the protocol). */
export type ProcessorFn = (req: ProcessorRequest, ctx: ProcessorContext) => unknown;

/**
 * A processor failure. Transient ones (unreachable, 502/503/504, timeout) are
 * retried and never change the machine; others fail it with `reason`.
 */
export class ProcessorError extends Error {
  constructor(
    readonly transient: boolean,
    readonly reason: Record<string, unknown>,
    readonly timedOut = false,
  ) {
    super(String(reason.message ?? reason.code));
  }
}

/** Throw from an in-process processor to signal a transient failure (retried); the SDK's class too, so either import works. */
export { ProcessorUnavailable };

export interface ProcessorClient {
  process(req: ProcessorRequest, ctx: ProcessorContext): Promise<unknown>;
}

/** Random hex from a pooled buffer: one randomBytes call per 4 KiB instead of one or two per step. */
let pool = Buffer.alloc(0);
let poolAt = 0;
function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    pool = randomBytes(4096);
    poolAt = 0;
  }
  const s = pool.toString('hex', poolAt, poolAt + bytes);
  poolAt += bytes;
  return s;
}

export function newTraceparent(): string {
  return `00-${randomHex(16)}-${randomHex(8)}-01`;
}

/** A child span id under the caller's trace. */
export function childTraceparent(parent: string | undefined): string {
  if (parent === undefined) return newTraceparent();
  const [v, trace, , flags] = parent.split('-');
  return `${v}-${trace}-${randomHex(8)}-${flags}`;
}

export function processorClient(
  ns: string,
  cfg: NamespaceConfig,
  local: ReadonlyMap<string, ProcessorFn> = new Map(),
  signer: RequestSigner | null = null,
): ProcessorClient {
  const p = cfg.processor;
  if ('url' in p) return httpProcessor(p.url, signer);
  return {
    async process(req, ctx) {
      const fn = local.get(p.in_process);
      if (fn === undefined)
        throw new ProcessorError(true, {
          code: 'processor_not_registered',
          message: `no in-process processor "${p.in_process}" for namespace ${ns}`,
        });
      try {
        return await fn(req, ctx);
      } catch (err) {
        if (err instanceof ProcessorError) throw err;
        if (err instanceof ProcessorUnavailable)
          throw new ProcessorError(true, { code: 'processor_unavailable', message: err.message });
        throw new ProcessorError(false, { code: 'processor_error', message: (err as Error)?.message ?? String(err) });
      }
    },
  };
}

const TRANSIENT_STATUS = new Set([502, 503, 504]);

/** Stands for the history while the rest of a request is serialised; random, so no value of a caller's spells it. */
const HOLE = `\u0000history-${randomHex(16)}`;
const HOLE_JSON = JSON.stringify(HOLE);

/**
 * A request as JSON. A long history of cached events is not serialised
 * again at every step: each event keeps its JSON text, and the history is
 * their join, spliced into the rest of the request.
 */
export function requestJson(req: ProcessorRequest<unknown>): string {
  const machine = req.machine as { history?: unknown } | null;
  const history = machine?.history;
  if (!Array.isArray(history) || history.length < 8) return JSON.stringify(req);
  const parts = new Array<string>(history.length);
  for (let i = 0; i < history.length; i++) {
    const t = eventJson(history[i]);
    if (t === undefined) return JSON.stringify(req);
    parts[i] = t;
  }
  const body = JSON.stringify({ ...req, machine: { ...machine, history: HOLE } });
  const at = body.indexOf(HOLE_JSON);
  if (at < 0 || body.indexOf(HOLE_JSON, at + 1) >= 0) return JSON.stringify(req);
  return `${body.slice(0, at)}[${parts.join(',')}]${body.slice(at + HOLE_JSON.length)}`;
}

/** JSON POST over node:http(s) with a keep-alive agent (several times cheaper per call than fetch). */
function httpProcessor(url: string, signer: RequestSigner | null): ProcessorClient {
  const post = jsonPost(url, signer);
  return {
    async process(req, ctx) {
      const left = ctx.deadline - Date.now();
      if (left <= 0) throw new ProcessorError(true, { code: 'processor_timeout', message: 'deadline passed' }, true);
      let status: number;
      let text: string;
      try {
        ({ status, text } = await post(
          requestJson(req),
          {
            traceparent: ctx.traceparent,
            'x-request-deadline': new Date(ctx.deadline).toISOString(),
            'x-request-timeout': String(left),
          },
          left,
        ));
      } catch (err) {
        const timedOut = err instanceof PostError && err.timedOut;
        throw new ProcessorError(
          true,
          { code: timedOut ? 'processor_timeout' : 'processor_unreachable', message: (err as Error).message },
          timedOut,
        );
      }
      if (TRANSIENT_STATUS.has(status))
        throw new ProcessorError(true, { code: 'processor_unavailable', status, message: text.slice(0, 500) });
      if (status < 200 || status >= 300)
        throw new ProcessorError(false, { code: 'processor_error', status, message: text.slice(0, 2000) });
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new ProcessorError(false, {
          code: 'bad_processor_result',
          message: `the processor answered ${status} with a body that is not JSON`,
        });
      }
    },
  };
}
