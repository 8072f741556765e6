import type { KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { SIGNATURE_HEADER, signatureVerifier } from '../core/request-signing.js';

/** A request as the handlers see it, whichever server delivered it. */
export interface RawRequest {
  method: string;
  /** Path with query, as the request line names it. */
  path: string;
  header(name: string): string | undefined;
  body: string;
  /** Aborts when the caller goes away. */
  closed: AbortSignal;
}

export interface RawAnswer {
  status: number;
  /** JSON text, or '' for none. */
  body: string;
}

export type Core = (r: RawRequest) => Promise<RawAnswer>;

/** Bodies above this are refused with 413 (processor requests carry the machine's history). */
export const MAX_BODY_BYTES = 64 * 1024 * 1024;

export interface Handlers {
  /** A node:http request listener: `http.createServer(p.handler)`. */
  handler: (req: IncomingMessage, res: ServerResponse) => void;
  /** A fetch-style handler, for servers built on the web Request/Response. */
  fetch: (req: Request) => Promise<Response>;
}

const tooLarge: RawAnswer = {
  status: 413,
  body: JSON.stringify({
    error: { code: 'payload_too_large', message: `the body is larger than ${MAX_BODY_BYTES} bytes` },
  }),
};

/** How a processor or pipe handler checks that requests come from millrace (see `signed`). */
export interface SignatureOptions {
  /**
   * The public keys (PEM, ed25519) of the nodes' `auth.signing_key_file`:
   * given, every request must carry a valid signature by one of them, made
   * within `maxSkewS`; an unsigned, forged or stale request is answered 401
   * and the callbacks never see it.
   */
  publicKeys?: ReadonlyArray<string | Buffer | KeyObject>;
  /** How far the signature's time may be from this clock, seconds (default 60). */
  maxSkewS?: number;
}

/** `core`, refusing requests without a valid signature when public keys are given. */
export function signed(core: Core, o: SignatureOptions = {}): Core {
  if (o.publicKeys === undefined) return core;
  const verifier = signatureVerifier(o.publicKeys, o.maxSkewS === undefined ? {} : { maxSkewS: o.maxSkewS });
  return async (r) => {
    const problem = verifier.check(r.header(SIGNATURE_HEADER), r.method, r.path, r.body);
    if (problem !== null)
      return fail(
        401,
        'unauthenticated',
        `the request signature is ${problem === 'missing' ? 'missing' : problem === 'malformed' ? 'malformed' : problem === 'stale' ? 'too old (or from the future)' : 'not valid for this request and these keys'}`,
      );
    return core(r);
  };
}

export function handlers(core: Core): Handlers {
  return {
    handler(req, res) {
      const ac = new AbortController();
      res.on('close', () => {
        if (!res.writableFinished) ac.abort();
      });
      const chunks: Buffer[] = [];
      let size = 0;
      let refused = false;
      const reply = (a: RawAnswer): void => {
        if (res.headersSent || res.destroyed) return;
        res.writeHead(
          a.status,
          a.body
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(a.body) }
            : { 'content-length': 0 },
        );
        res.end(a.body);
      };
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES && !refused) {
          refused = true;
          reply(tooLarge);
          req.resume();
          return;
        }
        if (!refused) chunks.push(c);
      });
      req.on('error', () => ac.abort());
      req.on('end', () => {
        if (refused) return;
        const raw: RawRequest = {
          method: req.method ?? 'GET',
          path: req.url ?? '/',
          header: (n) => {
            const v = req.headers[n.toLowerCase()];
            return Array.isArray(v) ? v[0] : v;
          },
          body: Buffer.concat(chunks).toString('utf8'),
          closed: ac.signal,
        };
        core(raw).then(reply, (err: unknown) => reply(internal(err)));
      });
    },
    async fetch(req) {
      const text = await req.text();
      if (Buffer.byteLength(text) > MAX_BODY_BYTES) return toResponse(tooLarge);
      const u = new URL(req.url);
      const a = await core({
        method: req.method,
        path: `${u.pathname}${u.search}`,
        header: (n) => req.headers.get(n) ?? undefined,
        body: text,
        closed: req.signal,
      }).catch(internal);
      return toResponse(a);
    },
  };
}

function toResponse(a: RawAnswer): Response {
  return new Response(a.body || null, {
    status: a.status,
    headers: a.body ? { 'content-type': 'application/json' } : {},
  });
}

function internal(err: unknown): RawAnswer {
  return {
    status: 500,
    body: JSON.stringify({ error: { code: 'internal', message: (err as Error)?.message ?? String(err) } }),
  };
}

export const json = (status: number, v: unknown): RawAnswer => ({ status, body: JSON.stringify(v) });

export const fail = (status: number, code: string, message: string): RawAnswer =>
  json(status, { error: { code, message } });

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** The deadline a request carries (x-request-deadline, else x-request-timeout), ms since the epoch. */
export function requestDeadline(r: RawRequest, fallbackMs: number): number {
  const d = r.header('x-request-deadline');
  if (d && RFC3339.test(d)) {
    const t = Date.parse(d);
    if (Number.isFinite(t)) return t;
  }
  const t = Number(r.header('x-request-timeout'));
  if (r.header('x-request-timeout') !== undefined && Number.isFinite(t) && t >= 0) return Date.now() + t;
  return Date.now() + fallbackMs;
}

/**
 * An AbortSignal that aborts at the deadline or when the caller goes away,
 * and a function that stops its timer once the work is over.
 */
export function deadlineSignal(deadline: number, closed: AbortSignal): { signal: AbortSignal; done: () => void } {
  const ac = new AbortController();
  const onClose = (): void => ac.abort(closed.reason ?? new Error('the caller went away'));
  const timer = setTimeout(() => ac.abort(new DeadlineError()), Math.max(0, deadline - Date.now()));
  if (closed.aborted) onClose();
  else closed.addEventListener('abort', onClose, { once: true });
  return {
    signal: ac.signal,
    done: () => {
      clearTimeout(timer);
      closed.removeEventListener('abort', onClose);
    },
  };
}

/** The reason a deadline signal aborts with. */
export class DeadlineError extends Error {
  constructor() {
    super('the request deadline passed');
    this.name = 'DeadlineError';
  }
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** The incoming W3C traceparent, when it is well-formed. */
export function traceparentOf(r: RawRequest): string | undefined {
  const t = r.header('traceparent')?.trim().toLowerCase();
  return t && TRACEPARENT.test(t) ? t : undefined;
}
