import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { collect, spawnTs } from '../support/proc.js';
import { bearer } from './support.js';

const ADMIN = 'tokens-admin-token-0123456789';

/** Every row of auth_tokens, read straight from the first shard. */
async function tokenRows(env: TestEnv): Promise<Array<Record<string, unknown>>> {
  const location = env.config.storage.shards[0]!.location;
  if (env.dialect === 'sqlite') {
    const db = new Database(location, { readonly: true });
    try {
      return db.prepare('SELECT * FROM auth_tokens ORDER BY id').all() as Array<Record<string, unknown>>;
    } finally {
      db.close();
    }
  }
  const c = new pg.Client({ connectionString: location });
  await c.connect();
  try {
    return (await c.query('SELECT * FROM auth_tokens ORDER BY id')).rows as Array<Record<string, unknown>>;
  } finally {
    await c.end();
  }
}

describe.each(DIALECTS)('API tokens (%s)', (dialect) => {
  let env: TestEnv;
  let a: Node;
  /** A second node on the same storage (PostgreSQL); on SQLite, the same node. */
  let b: Node;
  let offsetMs = 0;

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    const input = {
      ...env.input,
      http: { port: 0, drain_timeout_ms: 300 },
      bus: { topics: ['orders', 'other'] },
    } as ConfigInput;
    const envVars = { MILLRACE_ADMIN_TOKEN: ADMIN };
    a = await startNode(buildConfig(input), { env: envVars, clock: { now: () => Date.now() + offsetMs } });
    b =
      dialect === 'postgres'
        ? await startNode(buildConfig({ ...input, node_id: `${env.input.node_id}-b` } as ConfigInput), { env: envVars })
        : a;
  });
  afterAll(async () => {
    if (b !== a) await b?.close();
    await a?.close();
    await env?.cleanup();
  });

  const req = async (node: Node, method: string, path: string, token: string | null, body?: unknown) => {
    const r = await fetch(`${node.url}${path}`, {
      method,
      headers: {
        ...(token === null ? {} : bearer(token)),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await r.text();
    return { status: r.status, body: text ? (JSON.parse(text) as any) : null };
  };
  const publish = (node: Node, topic: string, token: string | null) =>
    req(node, 'POST', `/v1/bus/topics/${topic}/events`, token, { events: [{ type: 't', data: 1 }] });

  it('creates a token whose secret is shown once and stored only as a scrypt hash; it grants exactly its permissions', async () => {
    const made = await req(a, 'POST', '/v1/auth/tokens', ADMIN, {
      name: 'publisher',
      permissions: ['bus:publish:orders'],
    });
    expect(made.status).toBe(201);
    expect(made.body.token).toMatch(/^mr_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(made.body).toMatchObject({
      id: made.body.token.slice(3, 19),
      name: 'publisher',
      permissions: ['bus:publish:orders'],
      expires_at: null,
      revoked_at: null,
    });
    const secret = made.body.token.slice(20) as string;

    const rows = await tokenRows(env);
    expect(rows).toHaveLength(1);
    expect(String(rows[0]!.secret_hash)).toMatch(/^scrypt\$16384\$8\$1\$/);
    for (const v of Object.values(rows[0]!)) expect(String(v)).not.toContain(secret);

    expect((await publish(b, 'orders', made.body.token)).status).toBe(200);
    const other = await publish(b, 'other', made.body.token);
    expect([other.status, other.body.error.code, other.body.error.details.permission]).toEqual([
      403,
      'permission_denied',
      'bus:publish:other',
    ]);
    expect((await req(b, 'GET', '/v1/auth/tokens', made.body.token)).status).toBe(403);

    const list = await req(a, 'GET', '/v1/auth/tokens', ADMIN);
    expect(list.status).toBe(200);
    expect(list.body.items).toEqual([
      expect.objectContaining({ id: made.body.id, name: 'publisher', revoked_at: null }),
    ]);
    expect(JSON.stringify(list.body)).not.toContain(secret);
    expect((await req(a, 'GET', `/v1/auth/tokens/${made.body.id}`, ADMIN)).body).toMatchObject({
      id: made.body.id,
      permissions: ['bus:publish:orders'],
    });
  });

  it('revocation on one node is in force on every node for the next request', async () => {
    const made = await req(a, 'POST', '/v1/auth/tokens', ADMIN, { name: 'short-lived', permissions: ['bus:*'] });
    expect((await publish(b, 'orders', made.body.token)).status).toBe(200);
    expect((await publish(a, 'orders', made.body.token)).status).toBe(200);
    expect((await req(a, 'DELETE', `/v1/auth/tokens/${made.body.id}`, ADMIN)).status).toBe(204);
    // No wait: the very next request on either node is refused.
    const onB = await publish(b, 'orders', made.body.token);
    expect([onB.status, onB.body.error.code]).toEqual([401, 'unauthenticated']);
    expect((await publish(a, 'orders', made.body.token)).status).toBe(401);
    // Idempotent; an unknown id is a typed 404.
    expect((await req(b, 'DELETE', `/v1/auth/tokens/${made.body.id}`, ADMIN)).status).toBe(204);
    const unknown = await req(a, 'DELETE', '/v1/auth/tokens/0123456789abcdef', ADMIN);
    expect([unknown.status, unknown.body.error.code]).toEqual([404, 'token_not_found']);
    expect((await req(a, 'GET', `/v1/auth/tokens/${made.body.id}`, ADMIN)).body.revoked_at).not.toBeNull();
  });

  it('a token holds at most what its creator holds', async () => {
    const delegate = await req(a, 'POST', '/v1/auth/tokens', ADMIN, {
      name: 'delegate',
      permissions: ['auth:admin', 'bus:*'],
    });
    const ok = await req(a, 'POST', '/v1/auth/tokens', delegate.body.token, {
      name: 'sub',
      permissions: ['bus:publish:orders', 'bus:admin:*'],
    });
    expect(ok.status).toBe(201);
    const before = (await tokenRows(env)).length;
    for (const wanted of ['*', 'ledger:read:acc', 'auth:*']) {
      const r = await req(a, 'POST', '/v1/auth/tokens', delegate.body.token, {
        name: 'sub',
        permissions: ['bus:publish:orders', wanted],
      });
      expect([wanted, r.status, r.body.error.code, r.body.error.details.permission]).toEqual([
        wanted,
        403,
        'permission_denied',
        wanted,
      ]);
    }
    expect((await tokenRows(env)).length).toBe(before);
  });

  it('an expired token is refused', async () => {
    const made = await req(a, 'POST', '/v1/auth/tokens', ADMIN, {
      name: 'expiring',
      permissions: ['bus:*'],
      expires_in_s: 3600,
    });
    expect(made.body.expires_at).not.toBeNull();
    expect((await publish(a, 'orders', made.body.token)).status).toBe(200);
    offsetMs = 2 * 3600_000;
    try {
      expect((await publish(a, 'orders', made.body.token)).status).toBe(401);
    } finally {
      offsetMs = 0;
    }
  });

  it('refuses bad input with 400 and stores nothing; a forged secret is refused', async () => {
    const before = (await tokenRows(env)).length;
    for (const body of [
      { name: 'x', permissions: ['bus'] },
      { name: 'x', permissions: [] },
      { name: 'x', permissions: ['bus:publish:'] },
      { name: '', permissions: ['log:read'] },
      { name: 'x', permissions: ['log:read'], expires_in_s: 0 },
      { name: 'x', permissions: ['log:read'], extra: 1 },
    ]) {
      const r = await req(a, 'POST', '/v1/auth/tokens', ADMIN, body);
      expect([JSON.stringify(body), r.status, r.body.error.code]).toEqual([JSON.stringify(body), 400, 'bad_request']);
    }
    expect((await tokenRows(env)).length).toBe(before);
    const made = await req(a, 'POST', '/v1/auth/tokens', ADMIN, { name: 'forged', permissions: ['bus:*'] });
    const forged = `${made.body.token.slice(0, 20)}${'A'.repeat(43)}`;
    expect((await publish(a, 'orders', forged)).status).toBe(401);
    expect((await publish(a, 'orders', made.body.token)).status).toBe(200);
  });

  it.runIf(dialect === DIALECTS[0])('millrace tokens create | list | revoke', async () => {
    const cli = (args: string[], token?: string) =>
      collect(
        spawnTs('test/support/cli.ts', ['tokens', '--url', a.url, ...args], {
          MILLRACE_TOKEN: token ?? '',
          MILLRACE_ADMIN_TOKEN: '',
        }),
      );
    const created = await cli(['create', 'from-cli', 'log:read', 'bus:publish:orders', '--expires-in', '600'], ADMIN);
    expect(created.code, created.stderr).toBe(0);
    const made = JSON.parse(created.stdout) as { id: string; token: string; permissions: string[] };
    expect(made.permissions).toEqual(['log:read', 'bus:publish:orders']);
    expect((await req(a, 'GET', '/v1/shards', made.token)).status).toBe(200);
    const listed = await cli(['list'], ADMIN);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(made.id);
    expect(listed.stdout).not.toContain(made.token.slice(20));
    const revoked = await cli(['revoke', made.id], ADMIN);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect((await req(a, 'GET', '/v1/shards', made.token)).status).toBe(401);
    const refused = await cli(['list']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('unauthenticated');
  });
});
