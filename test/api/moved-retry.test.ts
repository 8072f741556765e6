/**
 * A request refused `shard_moved` (its key's range moved, or is moving, in a
 * shard split; nothing was written) is run again by the node against re-read
 * routing, and answered `shard_moved` (503, retryable) only when the
 * cut-over outlasts the retries. A request whose answer has begun is not run again.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildHttpServer } from '../../src/api/http/server.js';
import { MOVED_RETRIES } from '../../src/core/moved-retry.js';
import type { Server, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { guardedServer } from '../../src/api/grpc/access.js';
import { toGrpcError } from '../../src/api/grpc/errors.js';
import { Access, OPEN_SETTINGS } from '../../src/auth/access.js';
import { MillraceError } from '../../src/core/errors.js';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, type TestEnv } from '../support/env.js';

describe('a request refused shard_moved is run again by the node', () => {
  let env: TestEnv;
  let rt: Runtime;
  let app: FastifyInstance;
  const runs = new Map<string, number>();
  const moved = (): MillraceError => new MillraceError('shard_moved', 'shard s0 no longer owns this key; retry');
  const count = (k: string): number => {
    const n = (runs.get(k) ?? 0) + 1;
    runs.set(k, n);
    return n;
  };

  beforeAll(async () => {
    env = await createTestEnv('sqlite');
    rt = await Runtime.open(env.config);
    app = await buildHttpServer(rt, [
      (a) => {
        a.post<{ Body: { fail: number } }>('/test/moved', async (req) => {
          const n = count('moved');
          if (n <= req.body.fail) throw moved();
          return { runs: n };
        });
        a.post('/test/other', async () => {
          count('other');
          throw new MillraceError('bad_request', 'no');
        });
        a.get('/test/begun', async (_req, reply) => {
          count('begun');
          reply.raw.writeHead(200, { 'content-type': 'text/plain' });
          reply.raw.write('partial');
          reply.hijack();
          reply.raw.end();
          throw moved();
        });
      },
    ]);
  });
  afterAll(async () => {
    await app?.close();
    await rt?.close();
    await env?.cleanup();
  });

  it('runs it again after re-reading routing, and answers the run that passed', async () => {
    runs.clear();
    const refresh = vi.spyOn(rt.storage, 'refreshRouting');
    const r = await app.inject({ method: 'POST', url: '/test/moved', payload: { fail: 2 } });
    expect([r.statusCode, r.json()]).toEqual([200, { runs: 3 }]);
    expect(refresh.mock.calls.length).toBeGreaterThanOrEqual(2);
    refresh.mockRestore();
  });

  it('answers shard_moved (503, retryable) once the cut-over outlasts the retries', async () => {
    runs.clear();
    const r = await app.inject({ method: 'POST', url: '/test/moved', payload: { fail: 1000 } });
    expect(r.statusCode).toBe(503);
    expect((r.json() as { error: { code: string } }).error.code).toBe('shard_moved');
    expect(runs.get('moved')).toBe(MOVED_RETRIES);
  });

  it('does not run again on other errors, nor once the answer has begun', async () => {
    runs.clear();
    const bad = await app.inject({ method: 'POST', url: '/test/other', payload: {} });
    expect(bad.statusCode).toBe(400);
    expect(runs.get('other')).toBe(1);
    await app.inject({ method: 'GET', url: '/test/begun' });
    expect(runs.get('begun')).toBe(1);
  });
});

describe('a unary gRPC call refused shard_moved is run again by the node', () => {
  type Cb = (err: unknown, res?: unknown) => void;
  /** A service of one method, served through the access layer with a routing re-read that counts its calls. */
  const serve = (method: { requestStream: boolean }, fail: number) => {
    let runs = 0;
    let refreshes = 0;
    let impl: UntypedServiceImplementation = {};
    const fake = {
      addService: (_d: ServiceDefinition, i: UntypedServiceImplementation) => (impl = i),
    } as unknown as Server;
    const def = {
      Do: { path: '/test.T/Do', requestStream: method.requestStream, responseStream: false },
    } as unknown as ServiceDefinition;
    guardedServer(fake, new Access(OPEN_SETTINGS, null), () => {
      refreshes++;
      return Promise.resolve();
    }).addService(def, {
      Do: (_call: unknown, cb: Cb) => {
        runs++;
        // The faces answer errors as gRPC statuses (the error-code trailer names the code).
        if (runs <= fail) cb(toGrpcError(new MillraceError('shard_moved', 'moved; retry')));
        else cb(null, { runs });
      },
    } as unknown as UntypedServiceImplementation);
    const call = async (): Promise<{ err: unknown; res: unknown }> =>
      new Promise((resolve) => {
        const c = { metadata: { get: () => [] }, request: {}, cancelled: false, emit: () => true };
        (impl.Do as unknown as (c: unknown, cb: Cb) => void)(c, (err, res) => resolve({ err, res }));
      });
    return { call, runs: () => runs, refreshes: () => refreshes };
  };

  it('runs it again after re-reading routing, and answers the run that passed', async () => {
    const s = serve({ requestStream: false }, 2);
    const r = await s.call();
    expect([r.err, r.res]).toEqual([null, { runs: 3 }]);
    expect(s.refreshes()).toBe(2);
  });

  it('answers shard_moved once the cut-over outlasts the retries', async () => {
    const s = serve({ requestStream: false }, 1000);
    const r = await s.call();
    expect((r.err as { metadata: { get(k: string): unknown[] } }).metadata.get('error-code')).toEqual(['shard_moved']);
    expect(s.runs()).toBe(MOVED_RETRIES);
  });

  it('does not run a client-streaming call again (its messages are read)', async () => {
    const s = serve({ requestStream: true }, 1);
    const r = await s.call();
    expect((r.err as { metadata: { get(k: string): unknown[] } }).metadata.get('error-code')).toEqual(['shard_moved']);
    expect(s.runs()).toBe(1);
  });
});
