/** HTTP clients of the four faces (fetch; errors are typed MillraceErrors with the server's code). */
import type { HistoryRange, MachineView } from '../machines/wire.js';
import type { SinkPage as WireSinkPage } from '../machines/sink.js';
import type { SubscriptionConfig as WireSubscriptionConfig } from '../bus/subscription.js';
import type { SubscriptionInfo as WireSubscriptionInfo } from '../bus/bus.js';
import { errorFromCode, InvalidRequestError } from './errors.js';
import { machineOf, type Machine } from './machine.js';
import type { ArgsOf, AuxOf, EventOf, Processor, ProcessorTypes, ResponseOf } from './processor.js';
import { enc, HttpTransport, query, type CallOptions, type ClientOptions } from './transport.js';

export type { CallOptions, ClientOptions } from './transport.js';
/** A machine by its id or by one of its tags. */
export type MachineRef = { id: string } | { tag: string };

export interface SinkQuery {
  after?: number;
  limit?: number;
  waitMs?: number;
  shard?: string;
}

/** A machine event as a sink serves it, in log order. */
export interface SinkEvent {
  pos: number;
  shard: string;
  ns: string;
  machineId: string;
  /** The event's id within its machine. */
  eventId: number;
  createdAt: string;
  data: unknown;
  /** The log entry's chain hash (hex). */
  hash: string | null;
}

export interface SinkPage {
  events: SinkEvent[];
  /** The position to pass as `after` next time. */
  nextAfter: number;
  shard: string;
  /** The shard's retention horizon (0: nothing removed). */
  horizon: number;
}

/** A step's args and the call options: the args may be left out when the step's args type allows `undefined` or is `unknown`. */
export type ArgsAndOptions<A> = unknown extends A
  ? [args?: A, o?: CallOptions]
  : undefined extends A
    ? [args?: A, o?: CallOptions]
    : [args: A, o?: CallOptions];

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

  /** The machine with its history in `range` (default: the namespace's history range); `E` and `A` are the caller's to say. */
  async get<E = unknown, A = unknown>(ns: string, ref: MachineRef, range: HistoryRange = {}): Promise<Machine<E, A>> {
    return machineOf<E, A>(
      await this.t.request<MachineView>(
        'GET',
        `${machinePath(ns, ref)}${query({ after: range.after, limit: range.limit, direction: range.direction })}`,
      ),
    );
  }

  async remove(ns: string, ref: MachineRef, o: CallOptions = {}): Promise<void> {
    await this.t.request('DELETE', machinePath(ns, ref), undefined, o);
  }

  /**
   * A client of one namespace typed by a processor definition: `for(orders)`
   * (the definition's `namespace`) or `for(orders, 'orders-eu')`. Its args and
   * responses are the definition's; `get` answers the machine with the
   * definition's event and aux types. `for<Types>('orders')` takes the types
   * without the definition (a service that only calls the namespace).
   */
  for<T extends ProcessorTypes>(processor: Processor<T>, namespace?: string): NamespaceClient<T>;
  for<T extends ProcessorTypes = ProcessorTypes>(namespace: string): NamespaceClient<T>;
  for<T extends ProcessorTypes>(target: Processor<T> | string, namespace?: string): NamespaceClient<T> {
    const ns = typeof target === 'string' ? target : (namespace ?? target.namespace);
    if (typeof ns !== 'string' || ns.length === 0) {
      throw new InvalidRequestError(
        'bad_request',
        'for(): name the namespace, in the processor definition (`namespace`) or as the second argument',
        { details: { namespace: ns ?? null } },
      );
    }
    return new NamespaceClient<T>(this, ns);
  }

  /** A page of a sink's machine events on one shard, after position `after`; `waitMs` waits that long for one when there is none. */
  async sinkEvents(sink: string, q: SinkQuery = {}): Promise<SinkPage> {
    const p = await this.t.request<WireSinkPage>(
      'GET',
      `/v1/sinks/${enc(sink)}/events${query({ after: q.after, limit: q.limit, wait_ms: q.waitMs, shard: q.shard })}`,
    );
    return {
      events: p.events.map((e) => ({
        pos: e.pos,
        shard: e.shard,
        ns: e.ns,
        machineId: e.machine_id,
        eventId: e.event_id,
        createdAt: e.created_at,
        data: e.data,
        hash: e.hash,
      })),
      nextAfter: p.next_after,
      shard: p.shard,
      horizon: p.horizon,
    };
  }
}

/**
 * The machines of one namespace, typed by its processor's types (from
 * `MachinesClient.for`): `start` takes the `init` args and answers the
 * `init` response, `call` the `call` ones, `notify` the `notification` args,
 * `repair` the `repair` ones; `get` answers the machine with its events and
 * aux state typed.
 */
export class NamespaceClient<T extends ProcessorTypes = ProcessorTypes> {
  constructor(
    private readonly client: MachinesClient,
    readonly namespace: string,
  ) {}

  /** Starts machine `id` (its `init` step); refused with `machine_already_exists` if it exists. */
  start(id: string, ...[args, o]: ArgsAndOptions<ArgsOf<T, 'init'>>): Promise<{ response: ResponseOf<T, 'init'> }> {
    return this.client.start<ResponseOf<T, 'init'>>(this.namespace, id, args, o);
  }

  /** Calls the machine (its `call` step). */
  call(ref: MachineRef, ...[args, o]: ArgsAndOptions<ArgsOf<T, 'call'>>): Promise<{ response: ResponseOf<T, 'call'> }> {
    return this.client.call<ResponseOf<T, 'call'>>(this.namespace, ref, args, o);
  }

  /** Queues a notification (its `notification` step runs later); answers the notification's id. */
  notify(ref: MachineRef, ...[args, o]: ArgsAndOptions<ArgsOf<T, 'notification'>>): Promise<{ id: number }> {
    return this.client.notify(this.namespace, ref, args, o);
  }

  /** Repairs a failed machine (its `repair` step). */
  repair(
    ref: MachineRef,
    ...[args, o]: ArgsAndOptions<ArgsOf<T, 'repair'>>
  ): Promise<{ response: ResponseOf<T, 'repair'> }> {
    return this.client.repair<ResponseOf<T, 'repair'>>(this.namespace, ref, args, o);
  }

  /** Sets a failed machine working again without a step. */
  simpleRepair(ref: MachineRef, o: CallOptions = {}): Promise<void> {
    return this.client.simpleRepair(this.namespace, ref, o);
  }

  /** The machine with its history in `range`, its events and aux state typed. */
  get(ref: MachineRef, range: HistoryRange = {}): Promise<Machine<EventOf<T>, AuxOf<T>>> {
    return this.client.get<EventOf<T>, AuxOf<T>>(this.namespace, ref, range);
  }

  remove(ref: MachineRef, o: CallOptions = {}): Promise<void> {
    return this.client.remove(this.namespace, ref, o);
  }
}

export interface PipeSessionView {
  id: string;
  kind: string;
  state: 'open' | 'stored' | 'delivering' | 'dead';
  repeats: number;
  createdAt: string;
  dueAt: string | null;
  lastError: string | null;
  /** Records, base64 as on the wire; `records()` of the client decodes them. */
  records: string[];
}

/** A dead-lettered session in a list. */
export interface DeadLetterSummary {
  id: string;
  kind: string;
  repeats: number;
  lastError: string | null;
  diedAt: string;
}

export interface DeadLetterPage {
  deadLetters: DeadLetterSummary[];
  /** Pass as `after` for the next page (null: the last). */
  nextAfter: string | null;
}

export interface DeadLetterQuery {
  kind?: string;
  after?: string;
  limit?: number;
}

interface WirePipeSession {
  id: string;
  kind: string;
  state: PipeSessionView['state'];
  repeats: number;
  created_at: string;
  due_at: string | null;
  last_error: string | null;
  records: string[];
}

const sessionOf = (s: WirePipeSession): PipeSessionView => ({
  id: s.id,
  kind: s.kind,
  state: s.state,
  repeats: s.repeats,
  createdAt: s.created_at,
  dueAt: s.due_at,
  lastError: s.last_error,
  records: s.records,
});

const b64 = (r: string | Uint8Array): string =>
  (typeof r === 'string' ? Buffer.from(r, 'utf8') : Buffer.from(r)).toString('base64');

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
    return this.t.request(
      'POST',
      `/v1/pipe/sessions/${enc(id)}/append`,
      { record: b64(record), ...(seq === undefined ? {} : { seq }) },
      o,
    );
  }

  replace(id: string, record: string | Uint8Array, seq?: number, o: CallOptions = {}): Promise<{ duplicate: boolean }> {
    return this.t.request(
      'POST',
      `/v1/pipe/sessions/${enc(id)}/replace`,
      { record: b64(record), ...(seq === undefined ? {} : { seq }) },
      o,
    );
  }

  /** Stores the session: pushed to its handler again in `timeoutS` seconds, at `dueAt`. */
  async store(id: string, timeoutS: number, o: CallOptions = {}): Promise<{ dueAt: string }> {
    return {
      dueAt: (
        await this.t.request<{ due_at: string }>(
          'POST',
          `/v1/pipe/sessions/${enc(id)}/store`,
          { timeout_s: timeoutS },
          o,
        )
      ).due_at,
    };
  }

  async delete(id: string, o: CallOptions = {}): Promise<void> {
    await this.t.request('DELETE', `/v1/pipe/sessions/${enc(id)}`, undefined, o);
  }

  async get(id: string, o: CallOptions = {}): Promise<PipeSessionView> {
    return sessionOf(await this.t.request<WirePipeSession>('GET', `/v1/pipe/sessions/${enc(id)}`, undefined, o));
  }

  /** The session's records, decoded. */
  async records(id: string, o: CallOptions = {}): Promise<Buffer[]> {
    return (await this.get(id, o)).records.map((r) => Buffer.from(r, 'base64'));
  }

  async deadLetters(q: DeadLetterQuery = {}): Promise<DeadLetterPage> {
    const p = await this.t.request<{
      dead_letters: Array<{ id: string; kind: string; repeats: number; last_error: string | null; died_at: string }>;
      next_after: string | null;
    }>('GET', `/v1/pipe/dead-letters${query({ kind: q.kind, after: q.after, limit: q.limit })}`);
    return {
      deadLetters: p.dead_letters.map((d) => ({
        id: d.id,
        kind: d.kind,
        repeats: d.repeats,
        lastError: d.last_error,
        diedAt: d.died_at,
      })),
      nextAfter: p.next_after,
    };
  }

  async deadLetter(id: string): Promise<PipeSessionView> {
    return sessionOf(await this.t.request<WirePipeSession>('GET', `/v1/pipe/dead-letters/${enc(id)}`));
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

/** Which events a subscription gets: of these types, keys with this prefix, these header values. */
export interface SubscriptionFilter {
  types?: string[];
  keyPrefix?: string;
  headers?: Record<string, string>;
}

/** A subscription's config as given (left out: the node's defaults). */
export interface SubscriptionConfig {
  topics: string[];
  filter?: SubscriptionFilter;
  /** `earliest`, `latest` (default), a position or an RFC 3339 time. */
  start?: string;
  ackWaitMs?: number;
  maxInFlight?: number;
  maxDeliveries?: number;
  deadLetterTopic?: string;
  /** When retention removed events it had not acknowledged: `stop` (default) or `resume` after a gap notice. */
  onExpired?: 'stop' | 'resume';
}

/** A subscription's config as the node keeps it, defaults filled in. */
export interface SubscriptionSettings extends SubscriptionConfig {
  filter: SubscriptionFilter;
  start: string;
  ackWaitMs: number;
  maxInFlight: number;
  maxDeliveries: number;
}

/** A subscription: its settings, acknowledged positions, lag and whether a subscriber is connected. */
export interface SubscriptionInfo {
  name: string;
  config: SubscriptionSettings;
  /** Acknowledged position per shard. */
  positions: Record<string, number>;
  /** Events of its topics per shard between the acknowledged position and the head (filters aside). */
  lag: Record<string, number>;
  lagTotal: number;
  connected: boolean;
  paused: boolean;
  deadLetterTopic: string | null;
  /** ms since the epoch. */
  createdAt: number;
  updatedAt: number;
}

/** The wire's snake_case config of a subscription (the HTTP body and the gRPC message). */
export function subscriptionConfigWire(c: SubscriptionConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { topics: c.topics };
  if (c.filter !== undefined) {
    const f: Record<string, unknown> = {};
    if (c.filter.types !== undefined) f.types = c.filter.types;
    if (c.filter.keyPrefix !== undefined) f.key_prefix = c.filter.keyPrefix;
    if (c.filter.headers !== undefined) f.headers = c.filter.headers;
    out.filter = f;
  }
  if (c.start !== undefined) out.start = c.start;
  if (c.ackWaitMs !== undefined) out.ack_wait_ms = c.ackWaitMs;
  if (c.maxInFlight !== undefined) out.max_in_flight = c.maxInFlight;
  if (c.maxDeliveries !== undefined) out.max_deliveries = c.maxDeliveries;
  if (c.deadLetterTopic !== undefined) out.dead_letter_topic = c.deadLetterTopic;
  if (c.onExpired !== undefined) out.on_expired = c.onExpired;
  return out;
}

function settingsOf(c: WireSubscriptionConfig): SubscriptionSettings {
  const filter: SubscriptionFilter = {};
  if (c.filter.types !== undefined) filter.types = c.filter.types;
  if (c.filter.key_prefix !== undefined) filter.keyPrefix = c.filter.key_prefix;
  if (c.filter.headers !== undefined) filter.headers = c.filter.headers;
  const out: SubscriptionSettings = {
    topics: c.topics,
    filter,
    start: c.start,
    ackWaitMs: c.ack_wait_ms,
    maxInFlight: c.max_in_flight,
    maxDeliveries: c.max_deliveries,
  };
  if (c.dead_letter_topic !== undefined) out.deadLetterTopic = c.dead_letter_topic;
  if (c.on_expired !== undefined) out.onExpired = c.on_expired;
  return out;
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
    return (
      await this.t.request<{ positions: BusPosition[] }>('POST', `/v1/bus/topics/${enc(topic)}/events`, { events }, o)
    ).positions;
  }

  /** Creates the subscription, or changes its config; answers whether it was created and the settings it has. */
  async putSubscription(
    name: string,
    config: SubscriptionConfig,
    o: CallOptions = {},
  ): Promise<{ name: string; created: boolean; config: SubscriptionSettings }> {
    const r = await this.t.request<{ name: string; created: boolean; config: WireSubscriptionConfig }>(
      'PUT',
      `/v1/bus/subscriptions/${enc(name)}`,
      subscriptionConfigWire(config),
      o,
    );
    return { name: r.name, created: r.created, config: settingsOf(r.config) };
  }

  /** Config, acked positions, lag and whether a subscriber is connected. */
  async getSubscription(name: string): Promise<SubscriptionInfo> {
    const i = await this.t.request<WireSubscriptionInfo>('GET', `/v1/bus/subscriptions/${enc(name)}`);
    return {
      name: i.name,
      config: settingsOf(i.config),
      positions: i.positions,
      lag: i.lag,
      lagTotal: i.lag_total,
      connected: i.connected,
      paused: i.paused,
      deadLetterTopic: i.dead_letter_topic,
      createdAt: i.created_at,
      updatedAt: i.updated_at,
    };
  }

  /** Names of every subscription. */
  async listSubscriptions(): Promise<string[]> {
    return (await this.t.request<{ subscriptions: string[] }>('GET', '/v1/bus/subscriptions')).subscriptions;
  }

  async deleteSubscription(name: string): Promise<void> {
    await this.t.request('DELETE', `/v1/bus/subscriptions/${enc(name)}`);
  }

  ack(
    name: string,
    ids: string[],
    nack: { ids: string[]; delayMs?: number } = { ids: [] },
  ): Promise<{ acked: number; nacked: number }> {
    return this.t.request('POST', `/v1/bus/subscriptions/${enc(name)}/ack`, {
      ids,
      ...(nack.ids.length ? { nack: nack.ids, delay_ms: nack.delayMs ?? 0 } : {}),
    });
  }

  /**
   * Connects to the subscription's event stream and yields its deliveries
   * (ack them with `ack`). Ends when the iteration stops, the signal aborts or
   * the node closes the stream; a refusal to open (e.g. `subscription_busy`)
   * throws on the first `next()`.
   */
  async *stream<D = unknown>(
    name: string,
    o: { signal?: AbortSignal } = {},
  ): AsyncGenerator<BusDelivery<D>, void, undefined> {
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
              const d = JSON.parse(data) as {
                delivery_id: string;
                shard: string;
                pos: number;
                delivery_count: number;
                created_at_ms: number;
                event: BusDelivery<D>['event'];
              };
              yield {
                deliveryId: d.delivery_id,
                shard: d.shard,
                pos: d.pos,
                deliveryCount: d.delivery_count,
                createdAt: new Date(d.created_at_ms),
                event: d.event,
              };
            } else if (event === 'error') {
              const e = (
                JSON.parse(data) as { error?: { code?: string; message?: string; details?: Record<string, unknown> } }
              ).error;
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
