/**
 * Every HTTP route of /openapi.json (plus the hidden node routes) and every
 * method of the protos goes through the permission table: for each, no token
 * gives 401 (gRPC UNAUTHENTICATED); a token holding every permission but the
 * one needed gives 403 permission_denied naming it (gRPC PERMISSION_DENIED)
 * and nothing is written; a token with just the needed permissions passes.
 */
import { readFileSync } from 'node:fs';
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { millraceService, type MillraceService } from '../../src/api/grpc/protos.js';
import { httpRule, PERMISSIONS } from '../../src/auth/permissions.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { AUDIENCE, bearer, ISSUER, jwtIssuer, settledDigest, shardDigest } from './support.js';

const ADMIN = 'coverage-admin-token-0123456789';
/**
 * Tables that background loops write on their own (leases, heartbeats, cursors of live readers;
 * role_leases: exclusive background roles such as the pruning job take and renew theirs on their own schedule).
 */
const VOLATILE = ['scheduler_timers', 'pipe_owners', 'node_claims', 'role_leases'];
const FACES = ['bus', 'machines', 'ledger', 'pipe', 'log', 'auth', 'schedules', 'ops', 'audit'];
const ACTIONS: Record<string, string[]> = {
  bus: ['publish', 'subscribe', 'admin'],
  machines: ['read', 'write', 'repair', 'admin', 'bulk'],
  ledger: ['read', 'write'],
  pipe: ['read', 'write', 'admin'],
  log: ['read', 'admin'],
  auth: ['admin'],
  schedules: ['read', 'admin'],
  ops: ['bulk'],
  audit: ['read'],
};

/**
 * What each route must need with the fixtures below: written out by hand,
 * independently of the table, so that a route mapped to the wrong action or
 * resource fails here (not only an unmapped one).
 */
const EXPECTED: Record<string, string[]> = {
  'GET /v1/shards': ['log:read'],
  'GET /v1/nodes': ['log:read'],
  'GET /v1/metrics/series': ['log:read'],
  'GET /v1/shards/:shard/events': ['log:read'],
  'POST /v1/shards/:shard/split': ['log:admin'],
  'GET /v1/sinks': ['log:read'],
  'GET /v1/sinks/:sink/events': ['log:read'],
  'GET /v1/sinks/:sink/stream': ['log:read'],
  'POST /v1/auth/tokens': ['auth:admin'],
  'GET /v1/auth/tokens': ['auth:admin'],
  'GET /v1/auth/tokens/:id': ['auth:admin'],
  'DELETE /v1/auth/tokens/:id': ['auth:admin'],
  // Any valid credentials: 401 without, no permission needed.
  'GET /v1/auth/whoami': [],
  'GET /v1/audit': ['audit:read'],
  'GET /v1/namespaces': ['machines:read:*'],
  'GET /v1/namespaces/:name': ['machines:read:x1'],
  'PUT /v1/namespaces/:name': ['machines:admin:x1'],
  'DELETE /v1/namespaces/:name': ['machines:admin:x1'],
  'GET /v1/namespaces/:ns/machines': ['machines:read:counters'],
  'POST /v1/namespaces/:ns/machines/:id/start': ['machines:write:counters'],
  'POST /v1/namespaces/:ns/machines/:id/call': ['machines:write:counters'],
  'POST /v1/namespaces/:ns/machines/:id/notify': ['machines:write:counters'],
  'POST /v1/namespaces/:ns/machines/:id/repair': ['machines:repair:counters'],
  'POST /v1/namespaces/:ns/machines/:id/simple-repair': ['machines:repair:counters'],
  'DELETE /v1/namespaces/:ns/machines/:id': ['machines:repair:counters'],
  'GET /v1/namespaces/:ns/machines/:id': ['machines:read:counters'],
  'POST /v1/namespaces/:ns/tags/:tag/call': ['machines:write:counters'],
  'POST /v1/namespaces/:ns/tags/:tag/notify': ['machines:write:counters'],
  'POST /v1/namespaces/:ns/tags/:tag/repair': ['machines:repair:counters'],
  'POST /v1/namespaces/:ns/tags/:tag/simple-repair': ['machines:repair:counters'],
  'DELETE /v1/namespaces/:ns/tags/:tag': ['machines:repair:counters'],
  'GET /v1/namespaces/:ns/tags/:tag': ['machines:read:counters'],
  'GET /v1/ledger/types': ['ledger:read:*'],
  'GET /v1/ledger/accounts': ['ledger:read:acc'],
  'POST /v1/ledger/batches': ['ledger:write:acc'],
  'POST /v1/ledger/balances': ['ledger:read:acc'],
  'POST /v1/ledger/turnovers': ['ledger:read:acc'],
  'POST /v1/ledger/events': ['ledger:read:acc'],
  'POST /v1/ledger/locks/acquire': ['ledger:write:lk'],
  'POST /v1/ledger/locks/ping': ['ledger:write:lk'],
  'POST /v1/ledger/locks/release': ['ledger:write:lk'],
  'POST /v1/ledger/locks/get': ['ledger:read:lk'],
  'POST /v1/ledger/states/get': ['ledger:read:st'],
  'GET /v1/pipe/kinds': ['pipe:admin:*'],
  'GET /v1/pipe/kinds/:name': ['pipe:admin:x1'],
  'PUT /v1/pipe/kinds/:name': ['pipe:admin:x1'],
  'DELETE /v1/pipe/kinds/:name': ['pipe:admin:x1'],
  'POST /v1/pipe/sessions': ['pipe:write:k1'],
  'POST /v1/pipe/sessions/:id/append': ['pipe:write:k1'],
  'POST /v1/pipe/sessions/:id/replace': ['pipe:write:k1'],
  'POST /v1/pipe/sessions/:id/store': ['pipe:write:k1'],
  'DELETE /v1/pipe/sessions/:id': ['pipe:write:k1'],
  'GET /v1/pipe/sessions': ['pipe:read:*'],
  'GET /v1/pipe/sessions/:id': ['pipe:read:k1'],
  'GET /v1/pipe/dead-letters': ['pipe:admin:*'],
  'GET /v1/pipe/dead-letters/:id': ['pipe:admin:k1'],
  'POST /v1/pipe/dead-letters/:id/redrive': ['pipe:admin:k1'],
  'DELETE /v1/pipe/dead-letters/:id': ['pipe:admin:k1'],
  'GET /v1/bus/topics': ['bus:admin:*'],
  'GET /v1/bus/topics/:name': ['bus:admin:x1'],
  'PUT /v1/bus/topics/:name': ['bus:admin:x1'],
  'DELETE /v1/bus/topics/:name': ['bus:admin:x1'],
  'POST /v1/bus/topics/:topic/events': ['bus:publish:orders'],
  'GET /v1/bus/topics/:topic/events': ['bus:admin:orders'],
  'GET /v1/bus/subscriptions': ['bus:admin:*'],
  'PUT /v1/bus/subscriptions/:name': ['bus:admin:sub1'],
  'DELETE /v1/bus/subscriptions/:name': ['bus:admin:sub1'],
  'GET /v1/bus/subscriptions/:name': ['bus:subscribe:sub1'],
  'POST /v1/bus/subscriptions/:name/ack': ['bus:subscribe:sub1'],
  'GET /v1/bus/subscriptions/:name/stream': ['bus:subscribe:sub1'],
  'GET /v1/schedules': ['schedules:read:*'],
  'GET /v1/schedules/:name': ['schedules:read:x1'],
  'GET /v1/schedules/:name/next': ['schedules:read:x1'],
  'GET /v1/schedules/:name/fires': ['schedules:read:x1'],
  'PUT /v1/schedules/:name': ['schedules:admin:x1', 'bus:publish:orders'],
  'DELETE /v1/schedules/:name': ['schedules:admin:x1'],
  'POST /v1/schedules/:name/pause': ['schedules:admin:x1'],
  'POST /v1/schedules/:name/resume': ['schedules:admin:x1'],
  'POST /v1/schedules/:name/backfill': ['schedules:admin:x1'],
  'POST /v1/namespaces/:ns/bulk-jobs': ['machines:bulk:counters'],
  'POST /v1/pipe/dead-letters/bulk-jobs': ['pipe:admin:*'],
  'GET /v1/bulk-jobs': ['ops:bulk'],
  'GET /v1/bulk-jobs/:id': ['ops:bulk'],
  'POST /v1/bulk-jobs/:id/cancel': ['ops:bulk'],
  'POST /v1/namespaces/:ns/pause': ['machines:admin:counters'],
  'POST /v1/namespaces/:ns/resume': ['machines:admin:counters'],
  'POST /v1/namespaces/:ns/machines/:id/pause': ['machines:admin:counters'],
  'POST /v1/namespaces/:ns/machines/:id/resume': ['machines:admin:counters'],
  'POST /v1/bus/subscriptions/:name/pause': ['bus:admin:sub1'],
  'POST /v1/bus/subscriptions/:name/resume': ['bus:admin:sub1'],
  'POST /v1/pipe/kinds/:name/pause': ['pipe:admin:x1'],
  'POST /v1/pipe/kinds/:name/resume': ['pipe:admin:x1'],
  'POST /v1/bus/exporters/:name/pause': ['bus:admin:x1'],
  'POST /v1/bus/exporters/:name/resume': ['bus:admin:x1'],
  'GET /v1/pauses': ['log:read'],
};

/** Every permission except `missing` (and the same face and action on another resource). */
function allBut(missing: string): string[] {
  const [face, action, ...rest] = missing.split(':');
  const out: string[] = [];
  for (const f of FACES) {
    if (f !== face) out.push(`${f}:*`);
    else for (const a of ACTIONS[f]!) if (a !== action) out.push(`${f}:${a}:*`);
  }
  if (rest.length > 0) out.push(`${face}:${action}:zz-other-${rest.join(':')}`);
  return out;
}

/** The face a route's permission must belong to, from its path. */
function faceOfPath(path: string): string {
  if (path.startsWith('/v1/bus/')) return 'bus';
  if (path.startsWith('/v1/namespaces')) return 'machines';
  if (path.startsWith('/v1/ledger/')) return 'ledger';
  if (path.startsWith('/v1/pipe/')) return 'pipe';
  if (path.startsWith('/v1/auth/')) return 'auth';
  if (path.startsWith('/v1/schedules')) return 'schedules';
  if (path.startsWith('/v1/bulk-jobs')) return 'ops';
  if (path.startsWith('/v1/audit')) return 'audit';
  return 'log';
}

describe.each(DIALECTS)('every route and RPC maps to a permission, enforced (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  let mint: (p: string[]) => Promise<string>;
  let dbFile: string;
  const admin = bearer(ADMIN);

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    const issuer = await jwtIssuer(env.dataDir);
    mint = (p) => issuer.mint(p);
    const input = {
      ...env.input,
      http: { port: 0, drain_timeout_ms: 300 },
      grpc: { enabled: true, port: 0 },
      auth: { jwt: { key_file: issuer.keyFile, issuer: ISSUER, audience: AUDIENCE } },
      machines: {
        examples: true,
        namespaces: { counters: { processor: { in_process: 'example.counter' }, sink: 'sink1' } },
      },
      ledger: {
        accounts: { acc: { key: ['a'] } },
        locks: { lk: { key: ['a'] } },
        states: { st: { key: ['a'] } },
        aggregation: { enabled: false },
      },
      pipe: { kinds: { k1: {} } },
      bus: { topics: ['orders'] },
    } as ConfigInput;
    node = await startNode(buildConfig(input), { env: { MILLRACE_ADMIN_TOKEN: ADMIN } });
    dbFile = env.config.storage.shards[0]!.location;
    const put = (path: string, body: unknown) =>
      fetch(`${node.url}${path}`, {
        method: 'PUT',
        headers: { ...admin, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    expect((await put('/v1/bus/subscriptions/sub1', { topics: ['orders'] })).status).toBe(201);
    const started = await fetch(`${node.url}/v1/namespaces/counters/machines/m1/start`, {
      method: 'POST',
      headers: { ...admin, 'content-type': 'application/json' },
      body: JSON.stringify({ args: 1 }),
    });
    expect(started.status).toBe(200);
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  /** A fresh pipe session of kind k1 (made with the admin token). */
  const newSession = async (): Promise<string> => {
    const r = await fetch(`${node.url}/v1/pipe/sessions`, {
      method: 'POST',
      headers: { ...admin, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'k1' }),
    });
    expect(r.status).toBe(201);
    return ((await r.json()) as { id: string }).id;
  };
  const newTokenId = async (): Promise<string> => {
    const r = await fetch(`${node.url}/v1/auth/tokens`, {
      method: 'POST',
      headers: { ...admin, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'fixture', permissions: ['log:read'] }),
    });
    expect(r.status).toBe(201);
    return ((await r.json()) as { id: string }).id;
  };

  /** A valid request of each route: path parameters, query and body that would change something if allowed. */
  async function fixture(method: string, url: string): Promise<{ path: string; body?: unknown }> {
    let id: string | undefined;
    if (url.includes('/pipe/sessions/:id') || url.includes('/pipe/dead-letters/:id')) id = await newSession();
    if (url.includes('/auth/tokens/:id')) id = await newTokenId();
    const nameFor = url.startsWith('/v1/bus/subscriptions') ? 'sub1' : 'x1';
    const path = url
      .replace(':ns', 'counters')
      .replace(':tag', 't1')
      .replace(':topic', 'orders')
      .replace(':sink', 'sink1')
      .replace(':shard', 's0')
      .replace(':name', nameFor)
      .replace(':id', id ?? 'm1');
    const bodies: Record<string, unknown> = {
      'PUT /v1/namespaces/:name': { processor: { in_process: 'example.counter' } },
      'PUT /v1/pipe/kinds/:name': {},
      'PUT /v1/bus/topics/:name': {},
      'PUT /v1/bus/subscriptions/:name': { topics: ['orders'], start: 'latest' },
      'POST /v1/bus/topics/:topic/events': { events: [{ key: 'k', type: 'created', data: { n: 1 } }] },
      'POST /v1/bus/subscriptions/:name/ack': { ids: ['s0:1'] },
      'POST /v1/auth/tokens': { name: 'made', permissions: ['auth:admin'] },
      'POST /v1/pipe/sessions': { kind: 'k1' },
      // Daily (fires at midnight UTC): a schedule firing while the routes are checked would write between their digests.
      'PUT /v1/schedules/:name': {
        spec: { every_ms: 86_400_000 },
        action: { publish: { topic: 'orders', type: 'tick' } },
      },
      // Refused (this node has no spare shard) once permitted: nothing moves.
      'POST /v1/shards/:shard/split': { at: '8', to: 's1' },
      'POST /v1/schedules/:name/backfill': { from: '2026-01-01T00:00:00Z', to: '2026-01-01T00:10:00Z' },
      'POST /v1/namespaces/:ns/bulk-jobs': { action: { op: 'notify' }, dry_run: true },
      'POST /v1/pipe/dead-letters/bulk-jobs': { action: { op: 'redrive' }, dry_run: true },
      'POST /v1/pipe/sessions/:id/append': { record: 'AAEC' },
      'POST /v1/pipe/sessions/:id/replace': { record: 'AAEC' },
      'POST /v1/pipe/sessions/:id/store': { timeout_s: 60 },
      'POST /v1/ledger/batches': {
        events: [
          { account: { type: 'acc', attrs: { a: '1' } }, side: 'debit', amount: '1.00', dt: '2026-01-01T00:00:00Z' },
        ],
      },
      'POST /v1/ledger/balances': { dt: '2026-01-02T00:00:00Z', accounts: [{ type: 'acc', key: { a: '1' } }] },
      'POST /v1/ledger/turnovers': {
        dt_from: '2026-01-01T00:00:00Z',
        dt_to: '2026-01-02T00:00:00Z',
        accounts: [{ type: 'acc', key: { a: '1' } }],
      },
      'POST /v1/ledger/events': {
        dt_from: '2026-01-01T00:00:00Z',
        dt_to: '2026-01-02T00:00:00Z',
        accounts: [{ type: 'acc', key: { a: '1' } }],
        limit: 10,
      },
      'POST /v1/ledger/locks/acquire': { type: 'lk', attrs: { a: '1' }, uid: 'u1', mode: 'exclusive', timeout_s: 30 },
      'POST /v1/ledger/locks/ping': { type: 'lk', attrs: { a: '1' }, uid: 'u1', timeout_s: 30 },
      'POST /v1/ledger/locks/release': { type: 'lk', attrs: { a: '1' }, uid: 'u1' },
      'POST /v1/ledger/locks/get': { type: 'lk', attrs: { a: '1' } },
      'POST /v1/ledger/states/get': { type: 'st', attrs: { a: '1' } },
    };
    const key = `${method} ${url}`;
    if (key in bodies) return { path, body: bodies[key] };
    if (key === 'GET /v1/ledger/accounts') return { path: `${path}?type=acc` };
    if (method === 'POST')
      return {
        path,
        body:
          url.endsWith('/call') || url.endsWith('/start') || url.endsWith('/notify') || url.endsWith('/repair')
            ? { args: 1 }
            : {},
      };
    return { path };
  }

  /** Sends a request; streams (server-sent events) are cut once their head arrives. */
  /** Waits until every backfilled fire of a schedule has ended (done, failed, skipped or interrupted). */
  async function backfillDone(firesPath: string): Promise<void> {
    const ended = new Set(['done', 'failed', 'skipped', 'interrupted']);
    for (let i = 0; i < 200; i++) {
      const r = await send('GET', `${firesPath}?limit=100`, undefined, bearer(ADMIN));
      const items = ((r.json?.items ?? []) as Array<{ status: string; backfill: boolean }>).filter((x) => x.backfill);
      if (r.status === 200 && items.length > 0 && items.every((x) => ended.has(x.status))) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`${firesPath}: the backfilled fires did not end`);
  }

  async function send(
    method: string,
    path: string,
    body: unknown,
    headers: Record<string, string>,
  ): Promise<{ status: number; json: any; headers: Headers }> {
    const abort = new AbortController();
    const res = await fetch(`${node.url}${path}`, {
      method,
      signal: abort.signal,
      headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
      abort.abort();
      return { status: res.status, json: null, headers: res.headers };
    }
    const text = await res.text();
    let json: any = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return { status: res.status, json, headers: res.headers };
  }

  it('lists only routes the table maps, and maps only routes that exist', async () => {
    const spec = (await (await fetch(`${node.url}/openapi.json`, { headers: admin })).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const served = new Set<string>();
    for (const [p, ops] of Object.entries(spec.paths))
      for (const m of Object.keys(ops)) served.add(`${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ':$1')}`);
    expect(served.size).toBeGreaterThan(40);
    const unmapped = [...served].filter((k) => httpRule(k.split(' ')[0]!, k.split(' ')[1]!) === undefined);
    expect(unmapped).toEqual([]);
    const hidden = [
      'GET /healthz',
      'GET /readyz',
      'GET /metrics',
      'GET /openapi.json',
      'GET /ui',
      'GET /ui/',
      'GET /ui/*',
      'GET /',
    ];
    hidden.push(...Object.keys(PERMISSIONS).filter((k) => k.startsWith('GET /docs')));
    const stale = Object.keys(PERMISSIONS).filter(
      (k) => !k.startsWith('grpc ') && !served.has(k) && !hidden.includes(k),
    );
    expect(stale).toEqual([]);
  });

  it('HTTP: 401 without a token, 403 naming the permission with nothing written, and passes with it', async () => {
    const spec = (await (await fetch(`${node.url}/openapi.json`, { headers: admin })).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const routes: Array<[string, string]> = [];
    for (const [p, ops] of Object.entries(spec.paths))
      for (const m of Object.keys(ops)) routes.push([m.toUpperCase(), p.replace(/\{(\w+)\}/g, ':$1')]);
    // Deletions last, so that what they remove is there for the others.
    routes.sort((a, b) => Number(a[0] === 'DELETE') - Number(b[0] === 'DELETE'));
    const checked: string[] = [];
    for (const [method, url] of routes) {
      const what = `${method} ${url}`;
      const f = await fixture(method, url);
      const before = await settledDigest(dbFile, VOLATILE);

      const none = await send(method, f.path, f.body, {});
      expect([what, none.status, none.json?.error?.code]).toEqual([what, 401, 'unauthenticated']);
      expect(none.headers.get('www-authenticate'), what).toMatch(/^Bearer/);
      const garbage = await send(method, f.path, f.body, bearer('not-a-valid-token'));
      expect([what, garbage.status]).toEqual([what, 401]);

      // A token with no permission at all names what the route needs; then grant exactly that, one at a time.
      const needed: string[] = [];
      let r = await send(method, f.path, f.body, bearer(await mint(['nothing:none'])));
      for (let i = 0; i < 5 && r.status === 403; i++) {
        expect(r.json?.error?.code, what).toBe('permission_denied');
        const p = r.json.error.details.permission as string;
        expect(typeof p, what).toBe('string');
        // Defining a schedule also needs the right to do what its action does (here: publish on the bus).
        if (!(what === 'PUT /v1/schedules/:name' && p.startsWith('bus:publish:')))
          expect(p.split(':')[0], `${what} needs ${p}`).toBe(faceOfPath(url));
        needed.push(p);
        // Holding everything but this permission is not enough, and writes nothing.
        const lacking = await send(method, f.path, f.body, bearer(await mint(allBut(p))));
        expect([what, lacking.status, lacking.json?.error?.code, lacking.json?.error?.details?.permission]).toEqual([
          what,
          403,
          'permission_denied',
          p,
        ]);
        expect(await shardDigest(dbFile, VOLATILE), `${what}: a refused request wrote`).toEqual(before);
        r = await send(method, f.path, f.body, bearer(await mint(needed)));
      }
      if (EXPECTED[what]?.length !== 0) expect(needed.length, `${what} needs no permission`).toBeGreaterThan(0);
      expect([what, r.status, r.json?.error?.code]).not.toEqual([what, 401, 'unauthenticated']);
      expect([what, r.status === 403 ? r.json?.error : null]).toEqual([what, null]);
      expect([what, needed.sort()]).toEqual([
        what,
        [...(EXPECTED[what] ?? ['(no expectation written for this route)'])].sort(),
      ]);
      checked.push(what);
      // A backfill fires in the background and its actions write (here: publish); let them finish before the next route's digest.
      if (what === 'POST /v1/schedules/:name/backfill') await backfillDone(f.path.replace(/\/backfill$/, '/fires'));
    }
    expect(checked.length).toBe(routes.length);
  });

  it('docs/security.md lists every entry of the table', () => {
    const doc = readFileSync(new URL('../../docs/security.md', import.meta.url), 'utf8');
    expect(Object.keys(PERMISSIONS).filter((k) => !doc.includes(`| \`${k}\` |`))).toEqual([]);
  });

  it('open routes stay open; /metrics and /openapi.json need log:read unless configured open', async () => {
    for (const p of ['/healthz', '/readyz']) expect((await fetch(`${node.url}${p}`)).status, p).toBe(200);
    expect([200, 503]).toContain((await fetch(`${node.url}/ui/`)).status);
    // The console's entry and the API reference page are open; the document the page shows is /openapi.json's.
    expect((await fetch(`${node.url}/`, { redirect: 'manual' })).status).toBe(302);
    expect((await fetch(`${node.url}/docs/`)).status).toBe(200);
    expect((await fetch(`${node.url}/docs/static/swagger-ui-bundle.js`)).status).toBe(200);
    for (const p of ['/metrics', '/openapi.json', '/docs/json', '/docs/yaml']) {
      const none = await fetch(`${node.url}${p}`);
      expect(none.status, p).toBe(401);
      expect((await fetch(`${node.url}${p}`, { headers: bearer(await mint(['bus:*'])) })).status, p).toBe(403);
      expect((await fetch(`${node.url}${p}`, { headers: bearer(await mint(['log:read'])) })).status, p).toBe(200);
    }
    const unknown = await fetch(`${node.url}/v1/nothing-here`);
    expect(unknown.status).toBe(401);
    expect((await fetch(`${node.url}/v1/nothing-here`, { headers: admin })).status).toBe(404);
  });

  // ---- gRPC ----

  type Outcome = { code: number; data: any };

  /** Calls a method with one message and the given token; the status (0 ok) and the first answer. */
  function grpcCall(
    service: MillraceService,
    method: string,
    message: unknown,
    token: string | null,
  ): Promise<Outcome> {
    const Ctor = millraceService(service);
    const client = new Ctor(`127.0.0.1:${node.grpc!.port}`, credentials.createInsecure()) as any;
    const md = new Metadata();
    if (token !== null) md.set('authorization', `Bearer ${token}`);
    const def = Ctor.service[method]!;
    return new Promise<Outcome>((resolve) => {
      const done = (o: Outcome) => {
        client.close();
        resolve(o);
      };
      const timer = setTimeout(() => done({ code: -1, data: 'timeout' }), 10_000);
      const finish = (o: Outcome) => {
        clearTimeout(timer);
        done(o);
      };
      if (!def.requestStream) {
        client[method](message, md, (err: ServiceError | null, res: unknown) =>
          finish(err ? { code: err.code, data: err.details } : { code: 0, data: res }),
        );
        return;
      }
      if (!def.responseStream) {
        const call = client[method](md, (err: ServiceError | null, res: unknown) =>
          finish(err ? { code: err.code, data: err.details } : { code: 0, data: res }),
        );
        call.write(message);
        call.end();
        return;
      }
      const call = client[method](md);
      call.on('data', (d: unknown) => {
        finish({ code: 0, data: d });
        call.cancel();
      });
      call.on('error', (err: ServiceError) => finish({ code: err.code, data: err.details }));
      call.write(message);
    });
  }

  const grpcFixtures: Record<string, unknown> = {
    '/millrace.v1.Bus/Publish': { events: [{ topic: 'orders', key: 'k', type: 'created', data: '{}' }] },
    '/millrace.v1.Bus/PublishStream': { events: [{ topic: 'orders', key: 'k', type: 'created', data: '{}' }] },
    '/millrace.v1.Bus/PublishBatches': { events: [{ topic: 'orders', key: 'k', type: 'created', data: '{}' }] },
    '/millrace.v1.Bus/Subscribe': { open: { subscription: 'sub1' } },
    '/millrace.v1.Pipe/Session': { req: 1, new: { kind: 'k1' } },
    '/millrace.v1.Pipe/Batches': { requests: [{ req: 1, new: { kind: 'k1' } }] },
  };
  const expected: Record<string, string> = {
    '/millrace.v1.Bus/Publish': 'bus:publish:orders',
    '/millrace.v1.Bus/PublishStream': 'bus:publish:orders',
    '/millrace.v1.Bus/PublishBatches': 'bus:publish:orders',
    '/millrace.v1.Bus/Subscribe': 'bus:subscribe:sub1',
    '/millrace.v1.Pipe/Session': 'pipe:write:k1',
    '/millrace.v1.Pipe/Batches': 'pipe:write:k1',
  };
  /** A refusal of one request inside a pipe stream answer. */
  const pipeRefusal = (data: any): string | undefined => (data?.responses?.[0] ?? data)?.error?.code || undefined;

  it('gRPC: UNAUTHENTICATED without a token, PERMISSION_DENIED lacking the permission with nothing written, passes with it', async () => {
    const methods: Array<[MillraceService, string, string]> = [];
    for (const s of ['Bus', 'Pipe'] as const)
      for (const [name, def] of Object.entries(millraceService(s).service)) methods.push([s, name, def.path]);
    expect(methods.length).toBe(6);
    // The HTTP test deleted it last.
    const put = await fetch(`${node.url}/v1/bus/subscriptions/sub1`, {
      method: 'PUT',
      headers: { ...admin, 'content-type': 'application/json' },
      body: JSON.stringify({ topics: ['orders'] }),
    });
    expect(put.status).toBe(201);
    for (const [service, name, path] of methods) {
      expect(PERMISSIONS[`grpc ${path}`], `${path} is not in the permission table`).toBeDefined();
      const msg = grpcFixtures[path];
      expect(msg, `no fixture for ${path}`).toBeDefined();
      const need = expected[path]!;
      const before = await settledDigest(dbFile, VOLATILE);

      expect([path, (await grpcCall(service, name, msg, null)).code]).toEqual([path, 16]);
      expect([path, (await grpcCall(service, name, msg, 'mr_0000000000000000_' + 'A'.repeat(43))).code]).toEqual([
        path,
        16,
      ]);

      // Lacking the face and action entirely: refused when the call opens.
      const [face, action] = need.split(':');
      const noAction = allBut(need).filter((p) => !p.startsWith(`${face}:${action}:`));
      const refused = await grpcCall(service, name, msg, await mint(noAction));
      expect([path, refused.code, String(refused.data)]).toEqual([
        path,
        7,
        expect.stringContaining('permission_denied'),
      ]);
      // Holding it on another resource only: the message is refused (pipe: in its answer; bus: the call ends).
      const other = await grpcCall(service, name, msg, await mint(allBut(need)));
      if (service === 'Pipe')
        expect([path, other.code, pipeRefusal(other.data)]).toEqual([path, 0, 'permission_denied']);
      else expect([path, other.code, String(other.data)]).toEqual([path, 7, expect.stringContaining(need)]);
      expect(await shardDigest(dbFile, VOLATILE), `${path}: a refused call wrote`).toEqual(before);

      const ok = await grpcCall(service, name, msg, await mint([need]));
      expect([path, ok.code, pipeRefusal(ok.data)]).toEqual([path, 0, undefined]);
    }
  });

  it('gRPC Subscribe with a config also needs bus:admin on the subscription', async () => {
    const msg = { open: { subscription: 'sub1', config: { topics: ['orders'] } } };
    const r = await grpcCall('Bus', 'Subscribe', msg, await mint(['bus:subscribe:sub1']));
    expect([r.code, String(r.data)]).toEqual([7, expect.stringContaining('bus:admin:sub1')]);
    const ok = await grpcCall('Bus', 'Subscribe', msg, await mint(['bus:subscribe:sub1', 'bus:admin:sub1']));
    expect(ok.code).toBe(0);
  });
});
