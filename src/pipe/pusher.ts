import { endSpan, SpanKind, startSpan, traceparentOf } from '../core/telemetry.js';
import { jsonPost, type JsonPost } from '../core/http-post.js';
import type { RequestSigner } from '../core/request-signing.js';
import type { PipeKindConfig } from './config.js';
import type { Delivery, Pusher, PushVerdict } from './pipe.js';

/** The JSON a handler receives: `{session: {id, kind, repeats}, records: [base64]}`. */
export function deliveryJson(d: Delivery): string {
  return JSON.stringify({
    session: { id: d.id, kind: d.kind, repeats: d.repeats },
    records: d.records.map((r) => r.toString('base64')),
  });
}

/**
 * Reads a handler's 2xx answer. An empty or non-JSON body, or one without
 * `action`, is no verdict: the handler finishes the session through the API
 * within the lease. `{"action":"delete"}` or `{"action":"store","timeout_s":N}`
 * finishes it now. A malformed verdict is a failed push (so the mistake
 * shows in last_error and, in the end, in the dead letters).
 */
export function parseVerdict(text: string): PushVerdict | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || !('action' in v)) return undefined;
  const o = v as { action: unknown; timeout_s?: unknown };
  if (o.action === 'delete') return { action: 'delete' };
  if (o.action === 'store') {
    const t = o.timeout_s;
    if (typeof t !== 'number' || !Number.isFinite(t) || t < 0 || t > 365 * 24 * 3600)
      throw new Error('handler verdict "store" needs timeout_s: seconds between 0 and one year');
    return { action: 'store', timeoutS: t };
  }
  throw new Error(`handler answered an unknown action ${JSON.stringify(o.action)}; expected "delete" or "store"`);
}

/**
 * POSTs a delivery to the kind's handler over a keep-alive connection. Any
 * 2xx is success; anything else (status, network error, timeout) is a failed
 * push, retried with backoff.
 */
export function httpPusher(signer: RequestSigner | null = null): Pusher {
  const posts = new Map<string, JsonPost>();
  return async (handler: string, kind: PipeKindConfig, d: Delivery) => {
    let post = posts.get(handler);
    if (post === undefined) {
      post = jsonPost(handler, signer);
      posts.set(handler, post);
    }
    const span = startSpan('millrace.pipe.push', undefined, SpanKind.CLIENT, {
      'millrace.session': d.id,
      'millrace.repeats': d.repeats,
    });
    const headers: Record<string, string> = { 'x-millrace-session': d.id };
    if (span !== undefined) headers.traceparent = traceparentOf(span);
    try {
      const { status, text } = await post(deliveryJson(d), headers, kind.push_timeout_s * 1000);
      if (status < 200 || status >= 300)
        throw new Error(`handler answered ${status}${text ? `: ${text.slice(0, 200)}` : ''}`);
      const verdict = parseVerdict(text);
      endSpan(span, undefined, { 'http.response.status_code': status });
      return verdict;
    } catch (err) {
      endSpan(span, err);
      throw err;
    }
  };
}
