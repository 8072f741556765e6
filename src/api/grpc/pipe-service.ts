import type { Server, ServerDuplexStream, ServiceClientConstructor } from '@grpc/grpc-js';
import { millraceService } from './protos.js';
import { toMillraceError } from '../../core/errors.js';
import { callGuard } from './call-guard.js';
import type { Pipe } from '../../pipe/pipe.js';

export interface PipeRequest {
  req: number;
  op?: 'new' | 'append' | 'replace' | 'store' | 'delete';
  new?: { kind: string };
  append?: { session: string; record: Buffer; seq: number };
  replace?: { session: string; record: Buffer; seq: number };
  store?: { session: string; timeout_s: number };
  delete?: { session: string };
}

export interface PipeResponse {
  req: number;
  session?: string;
  duplicate?: boolean;
  error?: { code: string; message: string } | null;
  due_at_ms?: number;
}

/** The `millrace.v1.Pipe` service definition (also a client constructor, for tests and benchmarks). */
export function pipeService(): ServiceClientConstructor {
  return millraceService('Pipe');
}

/** Requests of one stream handled at once; beyond this the stream is paused (backpressure). */
const MAX_PENDING = 4096;

export interface PipeRequestBatch {
  requests: PipeRequest[];
}

export interface PipeResponseBatch {
  responses: PipeResponse[];
}

/**
 * The streaming adapter: one call owns the sessions it opens; each request is
 * answered once durable (answers may come out of order: match them by `req`);
 * refusals come back as `error` without ending the stream. When the call ends
 * or breaks, its open sessions become unfinished. `Session` carries one
 * request per message; `Batches` many, answered in batches.
 */
export function registerPipeGrpc(server: Server, pipe: Pipe, closing: Set<Promise<void>>): void {
  const gather = new Gatherer();
  server.addService(pipeService().service, {
    Session: (call: ServerDuplexStream<PipeRequest, PipeResponse>) => {
      serveCall(call, pipe, closing, {
        requests: (m: PipeRequest) => [m],
        run: (fn) => gather.run(fn),
        reply: (r) => call.write(r),
      });
    },
    Batches: (call: ServerDuplexStream<PipeRequestBatch, PipeResponseBatch>) => {
      let out: PipeResponse[] = [];
      const flush = (): void => {
        const responses = out;
        out = [];
        if (!call.cancelled && call.writable) call.write({ responses });
      };
      serveCall(call, pipe, closing, {
        requests: (m: PipeRequestBatch) => m.requests ?? [],
        run: (fn) => fn(),
        // Answers that become durable together (one group commit) leave in one message.
        reply: (r) => {
          if (out.push(r) === 1) setImmediate(flush);
        },
        beforeEnd: flush,
      });
    },
  });
}

interface CallAdapter<In> {
  requests(m: In): PipeRequest[];
  run(fn: () => Promise<PipeResponse>): Promise<PipeResponse>;
  reply(r: PipeResponse): void;
  beforeEnd?(): void;
}

function serveCall<In, Out>(
  call: ServerDuplexStream<In, Out>,
  pipe: Pipe,
  closing: Set<Promise<void>>,
  a: CallAdapter<In>,
): void {
  const guard = callGuard(call);
  // Each request's access check (a session's kind may need a read) completes in
  // the order the requests came, so that they still reach the pipe in order.
  let checks: Promise<void> = Promise.resolve();
  const check = guard.active
    ? (m: PipeRequest): Promise<void> => {
        const p = checks.then(() => guard.checkAsync(m));
        // Only orders the checks: the caller gets this check's error from `p`.
        checks = p.catch(() => {});
        return p;
      }
    : null;
  const owner = pipe.openOwner();
  let pending = 0;
  let ended = false;
  let finished = false;
  let paused = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    // The call is over and has no one to answer; the stop waits on `closing` only for the closes to settle.
    const p = pipe.closeOwner(owner).catch(() => {});
    closing.add(p);
    void p.finally(() => closing.delete(p));
  };
  const maybeEnd = (): void => {
    if (ended && pending === 0) {
      a.beforeEnd?.();
      finish();
      call.end();
    }
  };
  const reply = (r: PipeResponse): void => {
    if (!finished && !call.cancelled && call.writable) a.reply(r);
  };
  const done = (): void => {
    pending--;
    if (paused && pending < MAX_PENDING / 2) {
      paused = false;
      call.resume();
    }
    maybeEnd();
  };
  call.on('data', (m: In) => {
    const reqs = a.requests(m);
    pending += reqs.length;
    if (pending >= MAX_PENDING && !paused) {
      paused = true;
      call.pause();
    }
    // In order: each operation reaches the pipe (and its shard's queue) before the next one starts.
    for (const r of reqs) {
      a.run(() => handle(pipe, owner, r, check))
        .then(reply, (err: unknown) => {
          const e = toMillraceError(err);
          reply({ req: r.req, error: { code: e.code, message: e.message } });
        })
        .finally(done);
    }
  });
  call.on('end', () => {
    ended = true;
    maybeEnd();
  });
  call.on('cancelled', finish);
  call.on('error', finish);
  call.on('close', finish);
}

async function handle(
  pipe: Pipe,
  owner: string,
  m: PipeRequest,
  check: ((m: PipeRequest) => Promise<void>) | null,
): Promise<PipeResponse> {
  const req = m.req;
  if (check !== null) await check(m);
  switch (m.op) {
    case 'new':
      return { req, session: await pipe.create(/^\d+$/.test(m.new!.kind) ? Number(m.new!.kind) : m.new!.kind, owner) };
    case 'append':
    case 'replace': {
      const w = m[m.op]!;
      const r = await pipe[m.op](w.session, Buffer.from(w.record), w.seq > 0 ? w.seq : undefined);
      return { req, duplicate: r.duplicate };
    }
    case 'store':
      return { req, due_at_ms: await pipe.store(m.store!.session, m.store!.timeout_s) };
    case 'delete':
      await pipe.delete(m.delete!.session);
      return { req };
    default:
      return {
        req,
        error: { code: 'bad_request', message: 'request has no operation (new, append, replace, store or delete)' },
      };
  }
}

/**
 * grpc-js hands a stream's messages over one at a time, spread over several
 * turns of the event loop, and an SQLite commit blocks the loop: submitted as
 * they arrive, writes would go to the group committer a few at a time. This
 * holds them until a turn passes with nothing new (at most `maxWaitMs`), then
 * submits them together, so they share one transaction and one fsync.
 */
class Gatherer {
  private queue: Array<() => void> = [];
  private seen = 0;
  private since = 0;
  private scheduled = false;

  constructor(private readonly maxWaitMs = 2) {}

  run<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push(() => void fn().then(resolve, reject));
      if (!this.scheduled) {
        this.scheduled = true;
        this.seen = 0;
        this.since = performance.now();
        setImmediate(this.check);
      }
    });
  }

  private readonly check = (): void => {
    if (this.queue.length > this.seen && performance.now() - this.since < this.maxWaitMs) {
      this.seen = this.queue.length;
      setImmediate(this.check);
      return;
    }
    this.scheduled = false;
    const q = this.queue;
    this.queue = [];
    for (const f of q) f();
  };
}
