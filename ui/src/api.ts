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

/** Calls the node's HTTP API; any non-2xx answer becomes an ApiError with the server's code. */
export async function api<T = any>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  const headers: Record<string, string> = {};
  // With authentication on, the node wants a bearer token; the console keeps one in sessionStorage (never in a URL).
  const token = typeof sessionStorage === 'undefined' ? null : sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
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
