import type { PipeKindConfig } from './config.js';
import type { Delivery, Pusher } from './pipe.js';

/** The JSON a handler receives: `{session: {id, kind, repeats}, records: [base64]}`. */
export function deliveryJson(d: Delivery): string {
  return JSON.stringify({ session: { id: d.id, kind: d.kind, repeats: d.repeats }, records: d.records.map((r) => r.toString('base64')) });
}

/**
 * POSTs a delivery to the kind's handler. Any 2xx is success: the handler
 * then finishes the session through the API (delete or store) within the
 * session lease. Anything else (status, network error, timeout) is a failed
 * push, retried with backoff.
 */
export const httpPusher: Pusher = async (handler: string, kind: PipeKindConfig, d: Delivery) => {
  const res = await fetch(handler, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-millrace-session': d.id },
    body: deliveryJson(d),
    signal: AbortSignal.timeout(kind.push_timeout_s * 1000),
  });
  // Drain the body so the connection is reused.
  const text = await res.text().catch(() => '');
  if (res.status < 200 || res.status >= 300) throw new Error(`handler answered ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`);
};
