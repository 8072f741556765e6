import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { RateLimiter } from '../../src/auth/rate-limit.js';
import { MillraceError } from '../../src/core/errors.js';
import { startNode, type Node } from '../../src/serve.js';
import { BusGrpcClient } from '../../src/sdk/grpc.js';
import { RateLimitedError } from '../../src/sdk/index.js';
import { createTestEnv, type TestEnv } from '../support/env.js';
import { bearer } from './support.js';

const ADMIN = 'rate-admin-token-0123456789abcdef';

describe('RateLimiter', () => {
  it('allows a burst, then refuses with the seconds until the next request, and refills at the rate', () => {
    let t = 0;
    const rl = new RateLimiter({ requestsPerS: 0.5, burst: 2 }, () => t);
    rl.take('a');
    rl.take('a');
    let err: unknown;
    try {
      rl.take('a');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MillraceError);
    expect(err).toMatchObject({ code: 'rate_limited', retryAfterS: 2, httpStatus: 429 });
    // Another principal has its own bucket.
    rl.take('b');
    t = 1000;
    expect(() => rl.take('a')).toThrow(/rate limit/);
    t = 2000; // the refused requests took nothing: one request's worth has come back
    rl.take('a');
    expect(() => rl.take('a')).toThrow(/rate limit/);
  });
});

describe('auth.rate_limit configuration', () => {
  it('refuses a non-positive rate or burst with config_invalid', () => {
    expect(() => buildConfig({ auth: { rate_limit: { requests_per_s: 0 } } })).toThrow(
      expect.objectContaining({
        code: 'config_invalid',
        message: expect.stringContaining('auth.rate_limit.requests_per_s'),
      }),
    );
    expect(() => buildConfig({ auth: { rate_limit: { requests_per_s: 5, burst: 0 } } })).toThrow(
      expect.objectContaining({ code: 'config_invalid' }),
    );
    expect(() => buildConfig({ auth: { rate_limit: { requests_per_s: 5, burst: 10 } } })).not.toThrow();
  });
});

describe('rate limit per principal on HTTP and gRPC', () => {
  let env: TestEnv;
  let node: Node;
  let tokenA: string;
  let tokenB: string;

  beforeAll(async () => {
    env = await createTestEnv('sqlite');
    // One request per 1000 s after a burst of 4: the test never waits for a refill.
    const input = {
      ...env.input,
      http: { port: 0, drain_timeout_ms: 300 },
      grpc: { enabled: true, port: 0 },
      bus: { topics: ['orders'] },
      auth: { rate_limit: { requests_per_s: 0.001, burst: 4 } },
    } as ConfigInput;
    node = await startNode(buildConfig(input), { env: { MILLRACE_ADMIN_TOKEN: ADMIN } });
    const make = async (name: string) => {
      const r = await fetch(`${node.url}/v1/auth/tokens`, {
        method: 'POST',
        headers: { ...bearer(ADMIN), 'content-type': 'application/json' },
        body: JSON.stringify({ name, permissions: ['bus:publish:orders', 'log:read'] }),
      });
      return ((await r.json()) as { token: string }).token;
    };
    tokenA = await make('a');
    tokenB = await make('b');
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  it('answers 429 rate_limited with Retry-After once a principal is over its limit, and writes nothing', async () => {
    const publish = (token: string) =>
      fetch(`${node.url}/v1/bus/topics/orders/events`, {
        method: 'POST',
        headers: { ...bearer(token), 'content-type': 'application/json' },
        body: JSON.stringify({ events: [{ type: 't' }] }),
      });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await publish(tokenA)).status);
    expect(statuses).toEqual([200, 200, 200, 200]);
    const refused = await publish(tokenA);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await refused.json()) as any).error.code).toBe('rate_limited');
    // Other principals are not affected.
    expect((await publish(tokenB)).status).toBe(200);
    // Only the four accepted events were stored.
    const events = (await (
      await fetch(`${node.url}/v1/shards/s0/events?limit=100`, { headers: bearer(ADMIN) })
    ).json()) as { events: Array<{ type: string }> };
    expect(events.events.filter((e) => e.type === 't')).toHaveLength(5);
  });

  it('on gRPC: RESOURCE_EXHAUSTED with code rate_limited', async () => {
    const c = new BusGrpcClient(`127.0.0.1:${node.grpc!.port}`, { token: tokenB });
    try {
      for (let i = 0; i < 3; i++) await c.publish([{ topic: 'orders', type: 'g' }]);
      const err = await c.publish([{ topic: 'orders', type: 'g' }]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RateLimitedError);
      expect(err).toMatchObject({ code: 'rate_limited', grpcStatus: 8 });
      expect((err as RateLimitedError).retryAfterS).toBeGreaterThan(0);
    } finally {
      c.close();
    }
  });
});
