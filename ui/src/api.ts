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
        const res = await fetch(last !== undefined && resume ? resume(last) : path, { headers: { ...authHeaders(), accept: 'text/event-stream' }, signal: ctrl.signal });
        if (!res.ok || res.body === null) {
          const json: any = await res.json().catch(() => undefined);
          const err = new ApiError(json?.error?.code ?? `http_${res.status}`, json?.error?.message ?? res.statusText, res.status, json?.error?.details);
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
export async function api<T = any>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
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
  let json: any = undefined;
  if (text.length > 0) {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  if (!res.ok) {
    const err = json?.error;
    throw new ApiError(err?.code ?? `http_${res.status}`, err?.message ?? (text || res.statusText), res.status, err?.details);
  }
  return json as T;
}

/** True when the node does not serve this route at all (an older node). */
export const noRoute = (e: unknown): boolean => e instanceof ApiError && e.code === 'not_found' && e.message.startsWith('no route');

/** Items of a paged list (`{items,next_cursor}`), or of an older array-shaped answer under `key`. */
export function itemsOf<T>(r: any, key?: string): T[] {
  if (Array.isArray(r)) return r as T[];
  if (Array.isArray(r?.items)) return r.items as T[];
  if (key !== undefined && Array.isArray(r?.[key])) return r[key] as T[];
  return [];
}

export const enc = encodeURIComponent;
