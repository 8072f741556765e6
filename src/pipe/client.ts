import { credentials, type ClientDuplexStream } from '@grpc/grpc-js';
import { pipeService, type PipeRequest, type PipeResponse } from './grpc.js';

/**
 * A client of the pipe's streaming interface (`millrace.v1.Pipe/Session`):
 * one call multiplexes many sessions; requests are matched to answers by `req`.
 */
export class PipeStreamClient {
  private readonly call: ClientDuplexStream<PipeRequest, PipeResponse>;
  private readonly client: InstanceType<ReturnType<typeof pipeService>>;
  private next = 1;
  private readonly waiting = new Map<number, (r: PipeResponse) => void>();
  readonly ended: Promise<void>;

  constructor(address: string) {
    const Ctor = pipeService();
    this.client = new Ctor(address, credentials.createInsecure());
    this.call = (this.client as unknown as { Session(): ClientDuplexStream<PipeRequest, PipeResponse> }).Session();
    this.call.on('data', (r: PipeResponse) => {
      const w = this.waiting.get(r.req);
      this.waiting.delete(r.req);
      w?.(r);
    });
    this.ended = new Promise((resolve) => {
      this.call.on('error', () => resolve());
      this.call.on('end', () => resolve());
    });
  }

  send(op: Omit<PipeRequest, 'req'>): Promise<PipeResponse> {
    const req = this.next++;
    return new Promise((resolve) => {
      this.waiting.set(req, resolve);
      this.call.write({ req, ...op });
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

  store(session: string, timeout_s: number): Promise<PipeResponse> {
    return this.send({ store: { session, timeout_s } });
  }

  /** Half-closes: the server answers what is pending, then ends the call. */
  end(): void {
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
