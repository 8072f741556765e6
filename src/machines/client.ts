import { isErrorCode, MillraceError } from '../core/errors.js';
import type { HistoryRange } from './config.js';
import type { MachineRef, MachineView } from './machines.js';
import type { SinkPage } from './sink.js';

export interface CallOptions {
  /** Absolute deadline (sent as x-request-deadline). */
  deadline?: Date;
  /** Relative timeout in ms (sent as x-request-timeout). */
  timeoutMs?: number;
  traceparent?: string;
}

/** The machines API over HTTP; errors come back as MillraceError with the server's code. */
export class MachinesClient {
  constructor(
    private readonly baseUrl: string,
    private readonly opts: { fetch?: typeof fetch } = {},
  ) {}

  start(ns: string, id: string, args?: unknown, o: CallOptions = {}): Promise<{ response: unknown }> {
    return this.req('POST', `${path(ns, { id })}/start`, { args: args ?? null }, o) as Promise<{ response: unknown }>;
  }

  call(ns: string, ref: MachineRef, args?: unknown, o: CallOptions = {}): Promise<{ response: unknown }> {
    return this.req('POST', `${path(ns, ref)}/call`, { args: args ?? null }, o) as Promise<{ response: unknown }>;
  }

  repair(ns: string, ref: MachineRef, args?: unknown, o: CallOptions = {}): Promise<{ response: unknown }> {
    return this.req('POST', `${path(ns, ref)}/repair`, { args: args ?? null }, o) as Promise<{ response: unknown }>;
  }

  async simpleRepair(ns: string, ref: MachineRef, o: CallOptions = {}): Promise<void> {
    await this.req('POST', `${path(ns, ref)}/simple-repair`, {}, o);
  }

  notify(ns: string, ref: MachineRef, args?: unknown): Promise<{ id: number }> {
    return this.req('POST', `${path(ns, ref)}/notify`, { args: args ?? null }, {}) as Promise<{ id: number }>;
  }

  get(ns: string, ref: MachineRef, range: Partial<HistoryRange> = {}): Promise<MachineView> {
    const q = new URLSearchParams();
    if (range.after !== undefined) q.set('after', String(range.after));
    if (range.limit !== undefined) q.set('limit', String(range.limit));
    if (range.direction !== undefined) q.set('direction', range.direction);
    const qs = q.toString();
    return this.req('GET', `${path(ns, ref)}${qs ? `?${qs}` : ''}`, undefined, {}) as Promise<MachineView>;
  }

  async remove(ns: string, ref: MachineRef, o: CallOptions = {}): Promise<void> {
    await this.req('DELETE', path(ns, ref), undefined, o);
  }

  sinkEvents(sink: string, q: { after?: number; limit?: number; waitMs?: number; shard?: string } = {}): Promise<SinkPage> {
    const p = new URLSearchParams();
    if (q.after !== undefined) p.set('after', String(q.after));
    if (q.limit !== undefined) p.set('limit', String(q.limit));
    if (q.waitMs !== undefined) p.set('wait_ms', String(q.waitMs));
    if (q.shard !== undefined) p.set('shard', q.shard);
    return this.req('GET', `/v1/sinks/${encodeURIComponent(sink)}/events?${p}`, undefined, {}) as Promise<SinkPage>;
  }

  private async req(method: string, p: string, body: unknown, o: CallOptions): Promise<unknown> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (o.deadline) headers['x-request-deadline'] = o.deadline.toISOString();
    if (o.timeoutMs !== undefined) headers['x-request-timeout'] = String(Math.max(0, Math.floor(o.timeoutMs)));
    if (o.traceparent) headers.traceparent = o.traceparent;
    const res = await (this.opts.fetch ?? fetch)(`${this.baseUrl}${p}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await res.text();
    const json = text ? (JSON.parse(text) as unknown) : undefined;
    if (res.status >= 400) {
      const e = (json as { error?: { code: string; message: string; details?: Record<string, unknown> } })?.error;
      const retry = res.headers.get('retry-after');
      const code = e?.code !== undefined && isErrorCode(e.code) ? e.code : 'internal';
      const details = code === e?.code ? e?.details : { ...e?.details, server_code: e?.code ?? null, http_status: res.status };
      throw new MillraceError(code, e?.message ?? `HTTP ${res.status}`, {
        ...(details ? { details } : {}),
        ...(retry ? { retryAfterS: Number(retry) } : {}),
      });
    }
    return json;
  }
}

function path(ns: string, ref: MachineRef): string {
  const base = `/v1/namespaces/${encodeURIComponent(ns)}`;
  return 'id' in ref ? `${base}/machines/${encodeURIComponent(ref.id)}` : `${base}/tags/${encodeURIComponent(ref.tag)}`;
}
