/**
 * `definePipeHandler`: the handler a pipe kind pushes its unfinished sessions
 * to (`handler:` in the kind's config), as an HTTP handler.
 */
import {
  deadlineSignal,
  fail,
  handlers,
  json,
  requestDeadline,
  signed,
  traceparentOf,
  type Handlers,
  type RawAnswer,
  type RawRequest,
  type SignatureOptions,
} from './http-handlers.js';

/** What the handler answers about the pushed session. */
export type Verdict =
  /** Finished: the session is deleted. */
  | { action: 'delete' }
  /** Not finished: stored again, back after `timeoutS` seconds. */
  | { action: 'store'; timeoutS: number }
  /** No verdict: the handler finishes the session itself through the API, within the lease. */
  | { action: 'done' };

export const verdict = {
  delete: (): Verdict => ({ action: 'delete' }),
  store: (timeoutS: number): Verdict => ({ action: 'store', timeoutS }),
  done: (): Verdict => ({ action: 'done' }),
};

export interface PushedSession<K extends string = string> {
  id: string;
  kind: K;
  /** Pushes of this session before this one. */
  repeats: number;
}

export interface PushContext {
  /** Aborts when the node gives up on the push (its push timeout) or a deadline the request carries passes. */
  signal: AbortSignal;
  /** The W3C trace context of the push, when the node sent one. */
  traceparent: string | undefined;
}

export type PipeHandlerFn<K extends string> = (
  session: PushedSession<K>,
  records: Buffer[],
  ctx: PushContext,
) => Verdict | void | Promise<Verdict | void>;

const MAX_TIMEOUT_S = 365 * 24 * 3600;

/**
 * A handler for pipe sessions of `kind`. `fn` gets the session and its records
 * and returns a verdict (`verdict.delete()`, `verdict.store(s)`, or
 * `verdict.done()` / nothing when it used the API itself). A throw, or a push
 * of another kind, answers 500/400: a failed push, retried with backoff and in
 * the end dead-lettered. With `opts.publicKeys`, only requests signed by
 * millrace (auth.signing_key_file) reach `fn`; others are answered 401.
 */
export function definePipeHandler<K extends string>(
  kind: K,
  fn: PipeHandlerFn<K>,
  opts: SignatureOptions = {},
): Handlers {
  return handlers(signed((r) => push(kind, fn, r), opts));
}

async function push<K extends string>(kind: K, fn: PipeHandlerFn<K>, r: RawRequest): Promise<RawAnswer> {
  if (r.method !== 'POST') return fail(405, 'method_not_allowed', 'a pipe handler takes POST');
  let body: { session?: { id?: unknown; kind?: unknown; repeats?: unknown }; records?: unknown };
  try {
    body = JSON.parse(r.body) as typeof body;
  } catch {
    return fail(400, 'bad_json', 'the body is not JSON');
  }
  const s = body?.session;
  if (
    typeof s?.id !== 'string' ||
    typeof s.kind !== 'string' ||
    typeof s.repeats !== 'number' ||
    !Array.isArray(body.records) ||
    !body.records.every((x) => typeof x === 'string')
  ) {
    return fail(400, 'bad_request', 'expected {session: {id, kind, repeats}, records: [base64]}');
  }
  if (s.kind !== kind)
    return fail(
      400,
      'kind_not_found',
      `this handler takes sessions of kind ${JSON.stringify(kind)}, not ${JSON.stringify(s.kind)}`,
    );
  const records = (body.records as string[]).map((x) => Buffer.from(x, 'base64'));
  const { signal, done } = deadlineSignal(requestDeadline(r, 24 * 3600_000), r.closed);
  try {
    const v = await fn({ id: s.id, kind, repeats: s.repeats }, records, { signal, traceparent: traceparentOf(r) });
    if (v === undefined || v.action === 'done') return { status: 204, body: '' };
    if (v.action === 'delete') return json(200, { action: 'delete' });
    if (v.action === 'store') {
      if (!Number.isFinite(v.timeoutS) || v.timeoutS < 0 || v.timeoutS > MAX_TIMEOUT_S)
        throw new RangeError('verdict.store: timeoutS must be seconds between 0 and one year');
      return json(200, { action: 'store', timeout_s: v.timeoutS });
    }
    throw new TypeError(`unknown verdict ${JSON.stringify(v)}`);
  } catch (err) {
    return fail(500, 'handler_error', (err as Error)?.message ?? String(err));
  } finally {
    done();
  }
}
