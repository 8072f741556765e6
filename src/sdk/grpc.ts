/** gRPC clients: the bus (publish, subscribe with acks) and the pipe's session stream. */
import {
  credentials,
  Metadata,
  type ChannelCredentials,
  type ClientDuplexStream,
  type ClientOptions as GrpcClientOptions,
  type ServiceClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { millraceService } from '../api/grpc/protos.js';
import { bearerInterceptor, PipeStreamClient } from '../pipe/client.js';
import type { PipeResponse } from '../api/grpc/pipe-service.js';
import { connectionError, errorFromCode, errorFromGrpc, type MillraceError } from './errors.js';
import {
  subscriptionConfigWire,
  type BusDelivery,
  type BusEvent,
  type BusPosition,
  type SubscriptionConfig,
} from './clients.js';

export interface GrpcOptions {
  /** Default: insecure (plain TCP), as a node serves. */
  credentials?: ChannelCredentials;
  /** Channel options of @grpc/grpc-js. */
  channel?: GrpcClientOptions;
  /** An API token, admin token or JWT: sent as `authorization: Bearer <token>` metadata on every call. */
  token?: string;
}

function channelOptions(opts: GrpcOptions): GrpcClientOptions | undefined {
  if (opts.token === undefined) return opts.channel;
  return { ...opts.channel, interceptors: [...(opts.channel?.interceptors ?? []), bearerInterceptor(opts.token)] };
}

const busService = (): ServiceClientConstructor => millraceService('Bus');

function toError(err: unknown): MillraceError {
  const e = err as Partial<ServiceError>;
  return typeof e?.code === 'number' ? errorFromGrpc(e as ServiceError) : connectionError(err);
}

interface WireEvent {
  id: string;
  topic: string;
  key: string;
  type: string;
  headers: Record<string, string>;
  data: string;
}
interface WireDelivery {
  delivery_id: string;
  shard: string;
  pos: number;
  event: WireEvent;
  delivery_count: number;
  created_at_ms: number;
}
interface WireSubscribeResponse {
  kind: 'opened' | 'delivery' | 'batch';
  opened?: { subscription: string; positions: Record<string, number> };
  delivery?: WireDelivery;
  batch?: { deliveries: WireDelivery[] };
}

type Unary = (req: unknown, cb: (err: ServiceError | null, res: { positions: BusPosition[] }) => void) => void;

/** A delivery from a gRPC subscription; `ack()` / `nack(delayMs)` answer it on the same stream. */
export interface GrpcDelivery<D = unknown> extends BusDelivery<D> {
  ack(): void;
  nack(delayMs?: number): void;
}

/** The bus over gRPC (`millrace.v1.Bus`). */
export class BusGrpcClient {
  private readonly client: InstanceType<ServiceClientConstructor>;

  constructor(address: string, opts: GrpcOptions = {}) {
    const Ctor = busService();
    this.client = new Ctor(address, opts.credentials ?? credentials.createInsecure(), channelOptions(opts));
  }

  /** Publishes events (each names its topic); answers their positions once durable. */
  publish(events: Array<BusEvent & { topic: string }>, o: { deadline?: Date } = {}): Promise<BusPosition[]> {
    const req = { events: events.map(eventPb) };
    const publish = (
      this.client as unknown as { Publish: (r: unknown, md: unknown, opts: unknown, cb: Parameters<Unary>[1]) => void }
    ).Publish.bind(this.client);
    return new Promise((resolve, reject) => {
      publish(req, new Metadata(), o.deadline ? { deadline: o.deadline } : {}, (err, res) =>
        err ? reject(toError(err)) : resolve(res.positions),
      );
    });
  }

  /**
   * One long PublishBatches call for a steady publisher: each `publish()` is
   * a batch sent at once (without waiting for the previous answers) and
   * resolves with its positions once durable, in the order sent. A refused
   * batch rejects with its error and ends the call: every later batch rejects
   * too, and none of them was written. `end()` half-closes after the answers.
   */
  publisher(o: { deadline?: Date } = {}): BusPublisher {
    const call = (
      this.client as unknown as {
        PublishBatches: (md: unknown, opts: unknown) => ClientDuplexStream<unknown, { positions: BusPosition[] }>;
      }
    ).PublishBatches(new Metadata(), o.deadline ? { deadline: o.deadline } : {});
    return new BusPublisher(call);
  }

  /**
   * Opens a subscription (created with `config` on first connect). Iterate
   * the result for deliveries; `close()` half-closes, which stores the acked
   * position. `batch: true` asks for deliveries ready together in one message.
   */
  subscribe<D = unknown>(name: string, o: { config?: SubscriptionConfig; batch?: boolean } = {}): BusSubscription<D> {
    const call = (
      this.client as unknown as { Subscribe: () => ClientDuplexStream<unknown, WireSubscribeResponse> }
    ).Subscribe();
    return new BusSubscription<D>(call, name, o);
  }

  close(): void {
    this.client.close();
  }
}

const eventPb = (e: BusEvent & { topic: string }): WireEvent => ({
  id: e.id ?? '',
  topic: e.topic,
  key: e.key ?? '',
  type: e.type,
  headers: e.headers ?? {},
  data: e.data === undefined ? '' : JSON.stringify(e.data),
});

/** Batches published over one PublishBatches call; see `BusGrpcClient.publisher`. */
export class BusPublisher {
  private readonly waiting: Array<{ resolve: (p: BusPosition[]) => void; reject: (e: MillraceError) => void }> = [];
  private readonly idle: Array<() => void> = [];
  private failed: MillraceError | undefined;
  private readonly ended: Promise<void>;

  constructor(private readonly call: ClientDuplexStream<unknown, { positions: BusPosition[] }>) {
    call.on('data', (res: { positions: BusPosition[] }) => {
      this.waiting.shift()?.resolve(res.positions);
      if (this.waiting.length === 0) for (const f of this.idle.splice(0)) f();
    });
    this.ended = new Promise<void>((resolve) => {
      const fail = (err: unknown): void => {
        this.failed ??= toError(err);
        for (const w of this.waiting.splice(0)) w.reject(this.failed);
        resolve();
      };
      call.on('error', fail);
      call.on('end', () => {
        if (this.waiting.length > 0)
          fail(connectionError(new Error('the publish call ended before every batch was answered')));
        else resolve();
      });
    });
  }

  /** Sends one batch (each event names its topic); resolves with its positions once durable. */
  publish(events: Array<BusEvent & { topic: string }>): Promise<BusPosition[]> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<BusPosition[]>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.call.write({ events: events.map(eventPb) });
    });
  }

  /** Half-closes the call once every batch sent so far is answered (or the call failed). */
  async end(): Promise<void> {
    if (this.waiting.length > 0) await Promise.race([new Promise<void>((r) => this.idle.push(r)), this.ended]);
    this.call.end();
    await this.ended;
  }

  /** Cancels the call; unanswered batches reject (they may or may not have been written). */
  cancel(): void {
    this.call.cancel();
  }
}

/** The config as the gRPC message: proto3 fields left out are their zero values, which the node reads as its defaults. */
const configPb = (c: SubscriptionConfig): Record<string, unknown> => {
  const w = subscriptionConfigWire(c) as { filter?: Record<string, unknown> };
  return { ...w, filter: w.filter ? { types: [], key_prefix: '', headers: {}, ...w.filter } : null };
};

/** One connection to a subscription: an async iterator of deliveries. */
export class BusSubscription<D = unknown> implements AsyncIterable<GrpcDelivery<D>> {
  /** The positions the subscription resumed from, once the node has opened it. */
  readonly opened: Promise<Record<string, number>>;
  private readonly queue: Array<GrpcDelivery<D>> = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private failure: MillraceError | undefined;

  constructor(
    private readonly call: ClientDuplexStream<unknown, WireSubscribeResponse>,
    name: string,
    o: { config?: SubscriptionConfig; batch?: boolean },
  ) {
    let resolveOpened!: (p: Record<string, number>) => void;
    let rejectOpened!: (e: MillraceError) => void;
    this.opened = new Promise((res, rej) => {
      resolveOpened = res;
      rejectOpened = rej;
    });
    // Marks `opened` handled: whoever awaits it gets the error.
    this.opened.catch(() => {});
    call.on('data', (m: WireSubscribeResponse) => {
      if (m.opened) resolveOpened(m.opened.positions);
      else if (m.delivery) this.push([m.delivery]);
      else if (m.batch) this.push(m.batch.deliveries);
    });
    call.on('error', (err) => {
      this.failure = toError(err);
      rejectOpened(this.failure);
      this.finish();
    });
    call.on('end', () => {
      rejectOpened(connectionError(new Error('the subscription stream ended before it opened')));
      this.finish();
    });
    call.write({ open: { subscription: name, config: o.config ? configPb(o.config) : null, batch: o.batch ?? false } });
  }

  private push(ds: WireDelivery[]): void {
    for (const d of ds) {
      let data: unknown = null;
      try {
        data = d.event.data ? JSON.parse(d.event.data) : null;
      } catch {
        data = d.event.data;
      }
      const id = d.delivery_id;
      this.queue.push({
        deliveryId: id,
        shard: d.shard,
        pos: d.pos,
        deliveryCount: d.delivery_count,
        createdAt: new Date(d.created_at_ms),
        event: { ...d.event, data: data as D },
        ack: () => this.ack([id]),
        nack: (delayMs = 0) => this.nack(id, delayMs),
      });
    }
    this.wakeUp();
  }

  private finish(): void {
    this.ended = true;
    this.wakeUp();
  }

  private wakeUp(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  ack(ids: string[]): void {
    if (!this.ended && this.call.writable) this.call.write({ ack: { delivery_ids: ids } });
  }

  nack(id: string, delayMs = 0): void {
    if (!this.ended && this.call.writable) this.call.write({ nack: { delivery_id: id, delay_ms: delayMs } });
  }

  /** Half-closes: the node stores the acked position and ends the call; iteration then ends. */
  close(): void {
    if (this.call.writable) this.call.end();
  }

  /** Breaks the call at once (unacked deliveries come again later). */
  cancel(): void {
    this.call.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<GrpcDelivery<D>, void, undefined> {
    try {
      for (;;) {
        const d = this.queue.shift();
        if (d) {
          yield d;
          continue;
        }
        if (this.ended) {
          if (this.failure && this.failure.code !== 'unavailable' && this.failure.grpcStatus !== 1) throw this.failure;
          return;
        }
        await new Promise<void>((r) => (this.wake = r));
      }
    } finally {
      if (!this.ended) this.close();
    }
  }
}

/** One pipe session opened on a stream: its operations are answered once durable. */
export class PipeStreamSession {
  constructor(
    private readonly c: PipeGrpcClient,
    readonly id: string,
  ) {}

  async append(record: string | Uint8Array, seq?: number): Promise<{ duplicate: boolean }> {
    const r = await this.c.op({ append: { session: this.id, record: Buffer.from(record), seq: seq ?? 0 } });
    return { duplicate: r.duplicate ?? false };
  }

  async replace(record: string | Uint8Array, seq?: number): Promise<{ duplicate: boolean }> {
    const r = await this.c.op({ replace: { session: this.id, record: Buffer.from(record), seq: seq ?? 0 } });
    return { duplicate: r.duplicate ?? false };
  }

  /** Closes writing; the session comes back to the kind's handler after `timeoutS`. Answers the due time. */
  async store(timeoutS: number): Promise<Date> {
    return new Date((await this.c.op({ store: { session: this.id, timeout_s: timeoutS } })).due_at_ms ?? 0);
  }

  /** Finished: the session is gone. */
  async delete(): Promise<void> {
    await this.c.op({ delete: { session: this.id } });
  }
}

/**
 * The pipe's streaming interface (`millrace.v1.Pipe`): one call carries many
 * sessions. Sessions opened here belong to this stream; when it ends or
 * breaks, those left open become unfinished and come back to the handler.
 */
export class PipeGrpcClient {
  private readonly stream: PipeStreamClient;

  constructor(address: string, opts: { batched?: boolean; token?: string } = {}) {
    this.stream = new PipeStreamClient(address, opts);
  }

  /** @internal */
  async op(o: Parameters<PipeStreamClient['send']>[0]): Promise<PipeResponse> {
    let r: PipeResponse;
    try {
      r = await this.stream.send(o);
    } catch (err) {
      throw toError(err);
    }
    if (r.error) throw errorFromCode(r.error.code, r.error.message);
    return r;
  }

  async open(kind: string | number): Promise<PipeStreamSession> {
    const r = await this.op({ new: { kind: String(kind) } });
    return new PipeStreamSession(this, r.session!);
  }

  /** A handle on a session this stream may write (e.g. one pushed to a handler). */
  session(id: string): PipeStreamSession {
    return new PipeStreamSession(this, id);
  }

  /** Half-closes once queued requests are sent; resolves when the node has answered them and ended the call. */
  async end(): Promise<void> {
    this.stream.end();
    await this.stream.ended;
    this.stream.close();
  }

  /** Breaks the stream at once. */
  cancel(): void {
    this.stream.cancel();
  }
}
