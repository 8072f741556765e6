import type { Paged } from './types';

/** A refusal from the node: its stable error code, message and HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** Where the console keeps the bearer token of its API calls. */
export const TOKEN_KEY = 'millrace.token';

/** With authentication on, the node wants a bearer token; the console keeps one in sessionStorage (never in a URL). */
function authHeaders(): Record<string, string> {
  const token = typeof sessionStorage === 'undefined' ? null : sessionStorage.getItem(TOKEN_KEY);
  return token ? { authorization: `Bearer ${token}` } : {};
}

/**
 * Server-sent events over fetch, so that the bearer token travels in a header
 * as on every other call (EventSource cannot send one). Reconnects after a
 * broken connection from the last event id (`resume` builds that URL); a
 * refusal (4xx) is reported and ends it. Returns a function that closes it.
 */
export function eventStream(
  path: string,
  on: { open?(): void; event(type: string, data: string): void; error?(e: unknown): void },
  resume?: (lastId: string) => string,
): () => void {
  let closed = false;
  let ctrl: AbortController | null = null;
  let last: string | undefined;
  const run = async (): Promise<void> => {
    while (!closed) {
      ctrl = new AbortController();
      try {
        const res = await fetch(last !== undefined && resume ? resume(last) : path, {
          headers: { ...authHeaders(), accept: 'text/event-stream' },
          signal: ctrl.signal,
        });
        if (!res.ok || res.body === null) {
          // A refusal's body is the shared error shape; a body that is not JSON leaves the status to speak.
          const json = errorBody(await res.json().catch((): undefined => undefined));
          const err = new ApiError(
            json?.code ?? `http_${res.status}`,
            json?.message ?? res.statusText,
            res.status,
            json?.details,
          );
          on.error?.(err);
          if (res.status >= 400 && res.status < 500) return;
        } else {
          on.open?.();
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
              const block = buf.slice(0, i);
              buf = buf.slice(i + 2);
              let type = 'message';
              const data: string[] = [];
              for (const line of block.split('\n')) {
                if (line.startsWith('event: ')) type = line.slice(7);
                else if (line.startsWith('data: ')) data.push(line.slice(6));
                else if (line.startsWith('id: ')) last = line.slice(4);
              }
              if (data.length > 0) on.event(type, data.join('\n'));
            }
          }
        }
      } catch (e) {
        if (closed) return;
        on.error?.(e);
      }
      if (!closed) await new Promise((r) => setTimeout(r, 1000));
    }
  };
  void run();
  return () => {
    closed = true;
    ctrl?.abort();
  };
}

/** Calls the node's HTTP API; any non-2xx answer becomes an ApiError with the server's code. */
export async function api<T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  const headers: Record<string, string> = authHeaders();
  let body: string | undefined;
  if (init.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(init.body);
  }
  let res: Response;
  try {
    res = await fetch(path, { method: init.method ?? 'GET', headers, body });
  } catch (e) {
    throw new ApiError('network_error', `cannot reach the node: ${(e as Error).message}`, 0);
  }
  const text = await res.text();
  let json: unknown = undefined;
  if (text.length > 0) {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  if (!res.ok) {
    const err = errorBody(json);
    throw new ApiError(
      err?.code ?? `http_${res.status}`,
      err?.message ?? (text || res.statusText),
      res.status,
      err?.details,
    );
  }
  return json as T;
}

/** True when the node does not serve this route at all (an older node). */
export const noRoute = (e: unknown): boolean =>
  e instanceof ApiError && e.code === 'not_found' && e.message.startsWith('no route');

/** The node's error shape (`{error: {code, message, details}}`), or undefined for any other body. */
function errorBody(json: unknown): { code?: string; message?: string; details?: unknown } | undefined {
  if (json === null || typeof json !== 'object' || !('error' in json)) return undefined;
  const e = (json as { error: unknown }).error;
  if (e === null || typeof e !== 'object') return undefined;
  const r = e as Record<string, unknown>;
  return {
    ...(typeof r.code === 'string' ? { code: r.code } : {}),
    ...(typeof r.message === 'string' ? { message: r.message } : {}),
    details: r.details,
  };
}

/** A list route's items (`{items, next_cursor}`). */
export async function items<T>(path: string): Promise<T[]> {
  return (await api<Paged<T>>(path)).items;
}

/** A list route's items, or `fallback` when the node does not serve the route (an older node). */
export function itemsOr<T, F>(path: string, fallback: F): Promise<T[] | F> {
  return items<T>(path).catch((e: unknown) => (noRoute(e) ? fallback : Promise.reject(e)));
}

export const enc = encodeURIComponent;
