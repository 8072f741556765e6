import { credentials, InterceptingCall, type ClientDuplexStream, type Interceptor } from '@grpc/grpc-js';
import {
  pipeService,
  type PipeRequest,
  type PipeRequestBatch,
  type PipeResponse,
  type PipeResponseBatch,
} from '../api/grpc/pipe-service.js';

export interface PipeStreamClientOptions {
  /**
   * true (the default): the `Batches` call, sending every request queued in
   * one turn of the event loop as one message. false: the `Session` call, one
   * message per request.
   */
  batched?: boolean;
  /** Sent as `authorization: Bearer <token>` metadata. */
  token?: string;
}

/** A client interceptor adding `authorization: Bearer <token>` to every call. */
export function bearerInterceptor(token: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/**
 * A client of the pipe's streaming interface (`millrace.v1.Pipe`): one call
 * multiplexes many sessions; requests are matched to answers by `req`.
 */
export class PipeStreamClient {
  private readonly call: ClientDuplexStream<PipeRequest | PipeRequestBatch, PipeResponse | PipeResponseBatch>;
  private readonly client: InstanceType<ReturnType<typeof pipeService>>;
  private readonly batched: boolean;
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (r: PipeResponse) => void; reject: (err: Error) => void }>();
  private failure: Error | undefined;
  private queued: PipeRequest[] = [];
  readonly ended: Promise<void>;

  constructor(address: string, opts: PipeStreamClientOptions = {}) {
    this.batched = opts.batched ?? true;
    const Ctor = pipeService();
    this.client = new Ctor(
      address,
      credentials.createInsecure(),
      opts.token === undefined ? {} : { interceptors: [bearerInterceptor(opts.token)] },
    );
    const c = this.client as unknown as Record<
      'Session' | 'Batches',
      () => ClientDuplexStream<PipeRequest | PipeRequestBatch, PipeResponse | PipeResponseBatch>
    >;
    this.call = this.batched ? c.Batches() : c.Session();
    this.call.on('data', (m: PipeResponse | PipeResponseBatch) => {
      if ('responses' in m) for (const r of m.responses) this.answer(r);
      else this.answer(m);
    });
    this.ended = new Promise((resolve) => {
      this.call.on('error', (err: Error) => {
        this.fail(err);
        resolve();
      });
      this.call.on('end', () => {
        this.fail(new Error('the pipe stream ended'));
        resolve();
      });
    });
  }

  private answer(r: PipeResponse): void {
    const w = this.waiting.get(r.req);
    this.waiting.delete(r.req);
    w?.resolve(r);
  }

  /** The call is over: requests still waiting never get an answer, so they fail with why. */
  private fail(err: Error): void {
    this.failure ??= err;
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiting) w.reject(this.failure);
  }

  private readonly flush = (): void => {
    const requests = this.queued;
    if (requests.length === 0) return;
    this.queued = [];
    if (this.call.writable) this.call.write({ requests });
  };

  send(op: Omit<PipeRequest, 'req'>): Promise<PipeResponse> {
    const req = this.next++;
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.waiting.set(req, { resolve, reject });
      if (!this.batched) this.call.write({ req, ...op });
      else if (this.queued.push({ req, ...op }) === 1) setImmediate(this.flush);
    });
  }

  async newSession(kind: string): Promise<string> {
    const r = await this.send({ new: { kind } });
    if (r.error) throw new Error(`${r.error.code}: ${r.error.message}`);
    return r.session!;
  }

  append(session: string, record: string | Buffer, seq = 0): Promise<PipeResponse> {
    return this.send({ append: { session, record: Buffer.isBuffer(record) ? record : Buffer.from(record), seq } });
  }

  replace(session: string, record: string | Buffer, seq = 0): Promise<PipeResponse> {
    return this.send({ replace: { session, record: Buffer.isBuffer(record) ? record : Buffer.from(record), seq } });
  }

  store(session: string, timeout_s: number): Promise<PipeResponse> {
    return this.send({ store: { session, timeout_s } });
  }

  delete(session: string): Promise<PipeResponse> {
    return this.send({ delete: { session } });
  }

  /** Half-closes once what is queued is sent: the server answers what is pending, then ends the call. */
  end(): void {
    if (this.queued.length > 0) this.flush();
    this.call.end();
  }

  /** Breaks the call abruptly. */
  cancel(): void {
    this.call.cancel();
    this.client.close();
  }

  close(): void {
    this.client.close();
  }
}
