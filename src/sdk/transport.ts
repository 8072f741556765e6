import { connectionError, errorFromHttp, InternalError } from './errors.js';

export interface ClientOptions {
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
  /** Headers sent with every request (e.g. authentication added by a proxy). */
  headers?: Record<string, string>;
  /** An API token, admin token or JWT: sent as `Authorization: Bearer <token>`. */
  token?: string;
}

export interface CallOptions {
  /** Absolute deadline (sent as x-request-deadline). */
  deadline?: Date;
  /** Relative timeout in ms (sent as x-request-timeout). */
  timeoutMs?: number;
  /** W3C trace context to carry. */
  traceparent?: string;
  /** Aborts the request on the client side. */
  signal?: AbortSignal;
}

/** JSON over HTTP to one node; a non-2xx answer becomes a typed MillraceError. */
export class HttpTransport {
  private readonly base: string;

  constructor(
    baseUrl: string,
    private readonly opts: ClientOptions = {},
  ) {
    this.base = baseUrl.replace(/\/+$/, '');
  }

  async request<T>(method: string, path: string, body?: unknown, o: CallOptions = {}): Promise<T> {
    const res = await this.send(method, path, body, o);
    const text = await res.text();
    let json: unknown;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        if (res.status < 400)
          throw new InternalError('internal', `millrace answered ${res.status} with a body that is not JSON`, {
            httpStatus: res.status,
          });
      }
    }
    if (res.status >= 400) throw errorFromHttp(res.status, json, res.headers.get('retry-after'));
    return json as T;
  }

  /** The raw response of a successful request (for streams); errors as in `request`. */
  async stream(path: string, o: CallOptions = {}): Promise<Response> {
    const res = await this.send('GET', path, undefined, o, { accept: 'text/event-stream' });
    if (res.status >= 400) {
      const text = await res.text();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      throw errorFromHttp(res.status, json, res.headers.get('retry-after'));
    }
    return res;
  }

  private async send(
    method: string,
    path: string,
    body: unknown,
    o: CallOptions,
    extra: Record<string, string> = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...this.opts.headers, ...extra };
    if (this.opts.token !== undefined) headers.authorization = `Bearer ${this.opts.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (o.deadline) headers['x-request-deadline'] = o.deadline.toISOString();
    if (o.timeoutMs !== undefined) headers['x-request-timeout'] = String(Math.max(0, Math.floor(o.timeoutMs)));
    if (o.traceparent) headers.traceparent = o.traceparent;
    const init: RequestInit = { method, headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    if (o.signal) init.signal = o.signal;
    try {
      return await (this.opts.fetch ?? fetch)(`${this.base}${path}`, init);
    } catch (err) {
      if (o.signal?.aborted) throw err;
      throw connectionError(err);
    }
  }
}

export const enc = encodeURIComponent;

export function query(q: Record<string, string | number | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined) p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}
