/** HTTP clients of the four faces (fetch; errors are typed MillraceErrors with the server's code). */
import type { HistoryRange } from '../machines/config.js';
import type { MachineView } from '../machines/machines.js';
import type { SinkPage } from '../machines/sink.js';
import type { AccountQuery, BatchAnswer, BatchRequest, Ledger, LockMode } from '../ledger/ledger.js';
import type { SubscriptionInfo } from '../bus/bus.js';
import { errorFromCode } from './errors.js';
import { enc, HttpTransport, query, type CallOptions, type ClientOptions } from './transport.js';

export type { CallOptions, ClientOptions } from './transport.js';
export type { HistoryRange, MachineView, SinkPage, SubscriptionInfo };
export type MachineRef = { id: string } | { tag: string };

function machinePath(ns: string, ref: MachineRef): string {
  const base = `/v1/namespaces/${enc(ns)}`;
  return 'id' in ref ? `${base}/machines/${enc(ref.id)}` : `${base}/tags/${enc(ref.tag)}`;
}

/** The machines face: `/v1/namespaces/…` and `/v1/sinks/…`. */
export class MachinesClient {
  private readonly t: HttpTransport;

  constructor(baseUrl: string, opts: ClientOptions = {}) {
    this.t = new HttpTransport(baseUrl, opts);
  }

  start<R = unknown>(ns: string, id: string, args?: unknown, o: CallOptions = {}): Promise<{ response: R }> {
    return this.t.request('POST', `${machinePath(ns, { id })}/start`, { args: args ?? null }, o);
  }

  call<R = unknown>(ns: string, ref: MachineRef, args?: unknown, o: CallOptions = {}): Promise<{ response: R }> {
    return this.t.request('POST', `${machinePath(ns, ref)}/call`, { args: args ?? null }, o);
  }

  repair<R = unknown>(ns: string, ref: MachineRef, args?: unknown, o: CallOptions = {}): Promise<{ response: R }> {
    return this.t.request('POST', `${machinePath(ns, ref)}/repair`, { args: args ?? null }, o);
  }

  async simpleRepair(ns: string, ref: MachineRef, o: CallOptions = {}): Promise<void> {
    await this.t.request('POST', `${machinePath(ns, ref)}/simple-repair`, {}, o);
  }

  notify(ns: string, ref: MachineRef, args?: unknown, o: CallOptions = {}): Promise<{ id: number }> {
    return this.t.request('POST', `${machinePath(ns, ref)}/notify`, { args: args ?? null }, o);
  }

  get(ns: string, ref: MachineRef, range: Partial<HistoryRange> = {}): Promise<MachineView> {
    return this.t.request('GET', `${machinePath(ns, ref)}${query({ after: range.after, limit: range.limit, direction: range.direction })}`);
  }

  async remove(ns: string, ref: MachineRef, o: CallOptions = {}): Promise<void> {
    await this.t.request('DELETE', machinePath(ns, ref), undefined, o);
  }

  sinkEvents(sink: string, q: { after?: number; limit?: number; waitMs?: number; shard?: string } = {}): Promise<SinkPage> {
    return this.t.request('GET', `/v1/sinks/${enc(sink)}/events${query({ after: q.after, limit: q.limit, wait_ms: q.waitMs, shard: q.shard })}`);
  }
}

type Attrs = Record<string, string>;
type Answer<K extends keyof Ledger> = Ledger[K] extends (...a: never[]) => Promise<infer R> ? R : never;

/** The ledger face: `/v1/ledger/…` (bodies in the wire's snake_case, as in the README). */
export class LedgerClient {
  private readonly t: HttpTransport;

  constructor(baseUrl: string, opts: ClientOptions = {}) {
    this.t = new HttpTransport(baseUrl, opts);
  }

  batch(b: BatchRequest, o: CallOptions = {}): Promise<BatchAnswer> {
    return this.t.request('POST', '/v1/ledger/batches', b, o);
  }

  balances(q: { dt: string; accounts: AccountQuery[] }, o: CallOptions = {}): Promise<Answer<'balances'>> {
    return this.t.request('POST', '/v1/ledger/balances', q, o);
  }

  turnovers(q: { dt_from: string; dt_to: string; accounts: AccountQuery[] }, o: CallOptions = {}): Promise<Answer<'turnovers'>> {
    return this.t.request('POST', '/v1/ledger/turnovers', q, o);
  }

  events(q: { dt_from: string; dt_to: string; accounts: AccountQuery[]; limit: number; cursor?: string }, o: CallOptions = {}): Promise<Answer<'events'>> {
    return this.t.request('POST', '/v1/ledger/events', q, o);
  }

  acquireLock(l: { type: string; attrs: Attrs; uid: string; mode: LockMode; timeout_s: number }, o: CallOptions = {}): Promise<Answer<'acquireLock'>> {
    return this.t.request('POST', '/v1/ledger/locks/acquire', l, o);
  }

  pingLock(l: { type: string; attrs: Attrs; uid: string; timeout_s: number }, o: CallOptions = {}): Promise<Answer<'pingLock'>> {
    return this.t.request('POST', '/v1/ledger/locks/ping', l, o);
  }

  releaseLock(l: { type: string; attrs: Attrs; uid: string }, o: CallOptions = {}): Promise<Answer<'releaseLock'>> {
    return this.t.request('POST', '/v1/ledger/locks/release', l, o);
  }

  getLock(l: { type: string; attrs: Attrs }, o: CallOptions = {}): Promise<Answer<'getLock'>> {
    return this.t.request('POST', '/v1/ledger/locks/get', l, o);
  }

  getState<S = unknown>(s: { type: string; attrs: Attrs }, o: CallOptions = {}): Promise<Omit<Answer<'getState'>, 'state'> & { state: S | null }> {
    return this.t.request('POST', '/v1/ledger/states/get', s, o);
  }
}

export interface PipeSessionView {
  id: string;
  kind: string;
  state: 'open' | 'stored' | 'delivering' | 'dead';
  repeats: number;
  created_at: string;
  due_at: string | null;
  last_error: string | null;
  /** Records, base64 as on the wire; `records()` of the client decodes them. */
  records: string[];
}

const b64 = (r: string | Uint8Array): string => (typeof r === 'string' ? Buffer.from(r, 'utf8') : Buffer.from(r)).toString('base64');

/** The pipe face over HTTP: sessions, records (strings are sent as UTF-8), dead letters. */
export class PipeClient {
  private readonly t: HttpTransport;

  constructor(baseUrl: string, opts: ClientOptions = {}) {
    this.t = new HttpTransport(baseUrl, opts);
  }

  async open(kind: string | number, o: CallOptions = {}): Promise<string> {
    return (await this.t.request<{ id: string }>('POST', '/v1/pipe/sessions', { kind }, o)).id;
  }

  append(id: string, record: string | Uint8Array, seq?: number, o: CallOptions = {}): Promise<{ duplicate: boolean }> {
    return this.t.request('POST', `/v1/pipe/sessions/${enc(id)}/append`, { record: b64(record), ...(seq === undefined ? {} : { seq }) }, o);
  }

  replace(id: string, record: string | Uint8Array, seq?: number, o: CallOptions = {}): Promise<{ duplicate: boolean }> {
    return this.t.request('POST', `/v1/pipe/sessions/${enc(id)}/replace`, { record: b64(record), ...(seq === undefined ? {} : { seq }) }, o);
  }

  store(id: string, timeoutS: number, o: CallOptions = {}): Promise<{ due_at: string }> {
    return this.t.request('POST', `/v1/pipe/sessions/${enc(id)}/store`, { timeout_s: timeoutS }, o);
  }

  async delete(id: string, o: CallOptions = {}): Promise<void> {
    await this.t.request('DELETE', `/v1/pipe/sessions/${enc(id)}`, undefined, o);
  }

  get(id: string, o: CallOptions = {}): Promise<PipeSessionView> {
    return this.t.request('GET', `/v1/pipe/sessions/${enc(id)}`, undefined, o);
  }

  /** The session's records, decoded. */
  async records(id: string, o: CallOptions = {}): Promise<Buffer[]> {
    return (await this.get(id, o)).records.map((r) => Buffer.from(r, 'base64'));
  }

  deadLetters(q: { kind?: string; after?: string; limit?: number } = {}): Promise<{ dead_letters: Array<{ id: string; kind: string; repeats: number; last_error: string | null; died_at: string }>; next_after: string | null }> {
    return this.t.request('GET', `/v1/pipe/dead-letters${query(q)}`);
  }

  deadLetter(id: string): Promise<PipeSessionView> {
    return this.t.request('GET', `/v1/pipe/dead-letters/${enc(id)}`);
  }

  async redrive(id: string): Promise<void> {
    await this.t.request('POST', `/v1/pipe/dead-letters/${enc(id)}/redrive`);
  }

  async deleteDeadLetter(id: string): Promise<void> {
    await this.t.request('DELETE', `/v1/pipe/dead-letters/${enc(id)}`);
  }
}

export interface BusEvent<D = unknown> {
  id?: string;
  key?: string;
  type: string;
  headers?: Record<string, string>;
  data?: D;
}

export interface BusPosition {
  shard: string;
  pos: number;
  duplicate: boolean;
}

export interface SubscriptionConfig {
  topics: string[];
  filter?: { types?: string[]; key_prefix?: string; headers?: Record<string, string> };
  start?: string;
  ack_wait_ms?: number;
  max_in_flight?: number;
  max_deliveries?: number;
  dead_letter_topic?: string;
}

export interface BusDelivery<D = unknown> {
  deliveryId: string;
  shard: string;
  pos: number;
  deliveryCount: number;
  createdAt: Date;
  event: { id: string; topic: string; key: string; type: string; headers: Record<string, string>; data: D };
}

/** The bus face over HTTP: publish, subscriptions, and delivery as server-sent events with acks. */
export class BusClient {
  private readonly t: HttpTransport;

  constructor(baseUrl: string, opts: ClientOptions = {}) {
    this.t = new HttpTransport(baseUrl, opts);
  }

  async publish(topic: string, events: BusEvent[], o: CallOptions = {}): Promise<BusPosition[]> {
    return (await this.t.request<{ positions: BusPosition[] }>('POST', `/v1/bus/topics/${enc(topic)}/events`, { events }, o)).positions;
  }

  putSubscription(name: string, config: SubscriptionConfig, o: CallOptions = {}): Promise<{ name: string; created: boolean; config: SubscriptionConfig }> {
    return this.t.request('PUT', `/v1/bus/subscriptions/${enc(name)}`, config, o);
  }

  /** Config, acked positions, lag and whether a subscriber is connected. */
  getSubscription(name: string): Promise<SubscriptionInfo> {
    return this.t.request('GET', `/v1/bus/subscriptions/${enc(name)}`);
  }

  /** Names of every subscription. */
  async listSubscriptions(): Promise<string[]> {
    return (await this.t.request<{ subscriptions: string[] }>('GET', '/v1/bus/subscriptions')).subscriptions;
  }

  async deleteSubscription(name: string): Promise<void> {
    await this.t.request('DELETE', `/v1/bus/subscriptions/${enc(name)}`);
  }

  ack(name: string, ids: string[], nack: { ids: string[]; delayMs?: number } = { ids: [] }): Promise<{ acked: number; nacked: number }> {
    return this.t.request('POST', `/v1/bus/subscriptions/${enc(name)}/ack`, { ids, ...(nack.ids.length ? { nack: nack.ids, delay_ms: nack.delayMs ?? 0 } : {}) });
  }

  /**
   * Connects to the subscription's event stream and yields its deliveries
   * (ack them with `ack`). Ends when the iteration stops, the signal aborts or
   * the node closes the stream; a refusal to open (e.g. `subscription_busy`)
   * throws on the first `next()`.
   */
  async *stream<D = unknown>(name: string, o: { signal?: AbortSignal } = {}): AsyncGenerator<BusDelivery<D>, void, undefined> {
    const ac = new AbortController();
    const onAbort = (): void => ac.abort();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const res = await this.t.stream(`/v1/bus/subscriptions/${enc(name)}/stream`, { signal: ac.signal });
      const decoder = new TextDecoder();
      let buf = '';
      const reader = res.body!.getReader();
      try {
        for (;;) {
          let chunk: Awaited<ReturnType<typeof reader.read>>;
          try {
            chunk = await reader.read();
          } catch (err) {
            if (ac.signal.aborted) return;
            throw err;
          }
          if (chunk.done) return;
          buf += decoder.decode(chunk.value as Uint8Array, { stream: true });
          let at: number;
          while ((at = buf.indexOf('\n\n')) >= 0) {
            const frame = buf.slice(0, at);
            buf = buf.slice(at + 2);
            let event = 'message';
            let data = '';
            for (const line of frame.split('\n')) {
              if (line.startsWith('event: ')) event = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (event === 'delivery') {
              const d = JSON.parse(data) as { delivery_id: string; shard: string; pos: number; delivery_count: number; created_at_ms: number; event: BusDelivery<D>['event'] };
              yield { deliveryId: d.delivery_id, shard: d.shard, pos: d.pos, deliveryCount: d.delivery_count, createdAt: new Date(d.created_at_ms), event: d.event };
            } else if (event === 'error') {
              const e = (JSON.parse(data) as { error?: { code?: string; message?: string; details?: Record<string, unknown> } }).error;
              throw errorFromCode(e?.code ?? 'internal', e?.message ?? 'the stream failed', e?.details);
            }
          }
        }
      } finally {
        ac.abort();
        reader.releaseLock();
      }
    } finally {
      o.signal?.removeEventListener('abort', onAbort);
    }
  }
}

