import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { credentials, type ClientDuplexStream } from '@grpc/grpc-js';
import { pipeService, type PipeRequest, type PipeResponse } from '../../src/pipe/grpc.js';

export interface Push {
  path: string;
  id: string;
  kind: string;
  repeats: number;
  /** Records decoded as UTF-8. */
  records: string[];
}

export type Behaviour = (p: Push) => Promise<number> | number;

/** A real handler server: records every push and answers with what `behaviour` returns for its path. */
export class HandlerServer {
  readonly pushes: Push[] = [];
  readonly behaviours = new Map<string, Behaviour>();
  private server: Server | undefined;
  url = '';

  async start(): Promise<string> {
    this.server = createServer((req, res) => void this.onRequest(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { session: { id: string; kind: string; repeats: number }; records: string[] };
    const p: Push = {
      path: req.url ?? '/',
      id: body.session.id,
      kind: body.session.kind,
      repeats: body.session.repeats,
      records: body.records.map((r) => Buffer.from(r, 'base64').toString('utf8')),
    };
    this.pushes.push(p);
    let status = 200;
    try {
      status = await (this.behaviours.get(p.path) ?? (() => 200))(p);
    } catch {
      status = 500;
    }
    res.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : 'no');
  }

  of(id: string): Push[] {
    return this.pushes.filter((p) => p.id === id);
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

/** JSON over HTTP against a node. */
export async function api(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.headers = { 'content-type': 'application/json' };
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(`${base}${path}`, init);
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

export const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

/** A client of the streaming interface: one call, requests matched to answers by `req`. */
export class StreamClient {
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
