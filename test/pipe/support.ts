import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Push {
  path: string;
  id: string;
  kind: string;
  repeats: number;
  /** Records decoded as UTF-8. */
  records: string[];
}

export type Answer = number | { status: number; body: string };
export type Behaviour = (p: Push) => Promise<Answer> | Answer;

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
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
      session: { id: string; kind: string; repeats: number };
      records: string[];
    };
    const p: Push = {
      path: req.url ?? '/',
      id: body.session.id,
      kind: body.session.kind,
      repeats: body.session.repeats,
      records: body.records.map((r) => Buffer.from(r, 'base64').toString('utf8')),
    };
    this.pushes.push(p);
    let answer: Answer = 200;
    try {
      answer = await (this.behaviours.get(p.path) ?? (() => 200))(p);
    } catch {
      answer = 500;
    }
    if (typeof answer === 'number')
      res.writeHead(answer, { 'content-type': 'text/plain' }).end(answer < 300 ? 'ok' : 'no');
    else res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body);
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
export async function api(
  base: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: any }> {
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

export { PipeStreamClient as StreamClient } from '../../src/pipe/client.js';
