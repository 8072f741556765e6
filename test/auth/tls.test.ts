import https from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { BusGrpcClient } from '../../src/sdk/grpc.js';
import { createTestEnv, type TestEnv } from '../support/env.js';
import { makeCa, pem, type TestCa } from '../support/certs.js';

const ADMIN = 'tls-admin-token-0123456789abcdef';

interface Answer {
  status: number;
  body: any;
}

/** One HTTPS request trusting `ca`, presenting `client` when given. */
function request(
  url: string,
  method: string,
  path: string,
  o: { ca: Buffer; client?: { cert: string; key: string }; token?: string; body?: unknown },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const body = o.body === undefined ? undefined : JSON.stringify(o.body);
    const r = https.request(
      `${url}${path}`,
      {
        method,
        ca: o.ca,
        ...(o.client ? { cert: pem(o.client.cert), key: pem(o.client.key) } : {}),
        agent: false,
        headers: {
          ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
          ...(body ? { 'content-type': 'application/json' } : {}),
        },
      },
      (res) => {
        let t = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (t += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: t ? JSON.parse(t) : null }));
      },
    );
    r.on('error', reject);
    r.end(body);
  });
}

describe('TLS on HTTP and gRPC, client certificates as principals', () => {
  let env: TestEnv;
  let dir: string;
  let ca: TestCa;
  let rogue: TestCa;
  let node: Node;
  let orders: { cert: string; key: string };
  let nobody: { cert: string; key: string };
  let forged: { cert: string; key: string };

  beforeAll(async () => {
    env = await createTestEnv('sqlite');
    dir = mkdtempSync(join(tmpdir(), 'mr-tls-'));
    ca = makeCa(dir);
    rogue = makeCa(dir, 'rogue', 'someone else');
    const server = ca.issue('server', '/CN=localhost', 'IP:127.0.0.1,DNS:localhost');
    orders = ca.issue('orders', '/CN=orders-svc/O=Example');
    nobody = ca.issue('nobody', '/CN=nobody/O=Example');
    // Same subject as a mapped certificate, signed by a CA the node does not trust.
    forged = rogue.issue('forged', '/CN=orders-svc/O=Example');
    const tls = { cert_file: server.cert, key_file: server.key, client_ca_file: ca.caCert };
    const input = {
      ...env.input,
      http: { port: 0, drain_timeout_ms: 300, tls },
      grpc: { enabled: true, port: 0, tls },
      bus: { topics: ['orders', 'other'] },
      auth: { client_certs: [{ subject: 'O=Example, CN=orders-svc', permissions: ['bus:publish:orders'] }] },
    } as ConfigInput;
    node = await startNode(buildConfig(input), { env: { MILLRACE_ADMIN_TOKEN: ADMIN } });
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const event = { events: [{ type: 'created', data: { n: 1 } }] };

  it('serves HTTPS; a mapped client certificate is a principal with its configured permissions', async () => {
    expect(node.url.startsWith('https://')).toBe(true);
    const ok = await request(node.url, 'POST', '/v1/bus/topics/orders/events', {
      ca: pem(ca.caCert),
      client: orders,
      body: event,
    });
    expect(ok.status).toBe(200);
    const denied = await request(node.url, 'POST', '/v1/bus/topics/other/events', {
      ca: pem(ca.caCert),
      client: orders,
      body: event,
    });
    expect(denied.status).toBe(403);
    expect(denied.body.error).toMatchObject({
      code: 'permission_denied',
      details: { permission: 'bus:publish:other', principal: 'cert:CN=orders-svc,O=Example' },
    });
  });

  it('a bearer token wins over the certificate', async () => {
    const r = await request(node.url, 'GET', '/v1/shards', { ca: pem(ca.caCert), client: orders, token: ADMIN });
    expect(r.status).toBe(200);
    const bad = await request(node.url, 'GET', '/v1/shards', {
      ca: pem(ca.caCert),
      client: orders,
      token: 'not-the-admin-token-at-all',
    });
    expect(bad.status).toBe(401);
  });

  it('a trusted certificate whose subject maps to no principal is 401', async () => {
    const r = await request(node.url, 'POST', '/v1/bus/topics/orders/events', {
      ca: pem(ca.caCert),
      client: nobody,
      body: event,
    });
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('unauthenticated');
  });

  it('refuses the handshake without a client certificate, or with one from another CA', async () => {
    await expect(request(node.url, 'GET', '/healthz', { ca: pem(ca.caCert) })).rejects.toThrow();
    await expect(
      request(node.url, 'POST', '/v1/bus/topics/orders/events', { ca: pem(ca.caCert), client: forged, body: event }),
    ).rejects.toThrow();
  });

  it('refuses plaintext HTTP on the TLS port', async () => {
    await expect(fetch(node.url.replace('https://', 'http://') + '/healthz')).rejects.toThrow();
  });

  it('gRPC over TLS: the client certificate is the principal', async () => {
    const addr = `localhost:${node.grpc!.port}`;
    const good = new BusGrpcClient(addr, {
      credentials: credentials.createSsl(pem(ca.caCert), pem(orders.key), pem(orders.cert)),
    });
    const none = new BusGrpcClient(addr, { credentials: credentials.createSsl(pem(ca.caCert)) });
    const plain = new BusGrpcClient(addr, { credentials: credentials.createInsecure() });
    try {
      const positions = await good.publish([{ topic: 'orders', type: 'created', data: { n: 2 } }]);
      expect(positions).toHaveLength(1);
      await expect(good.publish([{ topic: 'other', type: 'created' }])).rejects.toMatchObject({
        code: 'permission_denied',
      });
      const deadline = new Date(Date.now() + 5000);
      await expect(none.publish([{ topic: 'orders', type: 'created' }], { deadline })).rejects.toThrow();
      await expect(plain.publish([{ topic: 'orders', type: 'created' }], { deadline })).rejects.toThrow();
    } finally {
      good.close();
      none.close();
      plain.close();
    }
  });
});

describe('TLS configuration', () => {
  it('client_certs without a client CA is config_invalid', async () => {
    const env = await createTestEnv('sqlite');
    try {
      const input = {
        ...env.input,
        http: { port: 0 },
        auth: { client_certs: [{ subject: 'CN=x', permissions: ['log:read'] }] },
      } as ConfigInput;
      await expect(startNode(buildConfig(input))).rejects.toMatchObject({ code: 'config_invalid' });
      const badPermission = {
        ...env.input,
        http: { port: 0, tls: { cert_file: 'c.pem', key_file: 'k.pem', client_ca_file: 'ca.pem' } },
        auth: { client_certs: [{ subject: 'CN=x', permissions: ['nope'] }] },
      } as ConfigInput;
      await expect(startNode(buildConfig(badPermission))).rejects.toMatchObject({
        code: 'config_invalid',
        message: expect.stringContaining('auth.client_certs.0.permissions'),
      });
      const bad = {
        ...env.input,
        http: { port: 0, tls: { cert_file: '/nonexistent/cert.pem', key_file: '/nonexistent/key.pem' } },
      } as ConfigInput;
      await expect(startNode(buildConfig(bad))).rejects.toMatchObject({ code: 'config_invalid' });
    } finally {
      await env.cleanup();
    }
  });
});
