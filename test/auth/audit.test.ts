import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { isOpenRule, PERMISSIONS } from '../../src/auth/permissions.js';
import { verifyShard } from '../../src/log/verify.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { bearer } from './support.js';

const ADMIN = 'audit-admin-token-0123456789abcdef';

describe.each(DIALECTS)('audit trail in the log (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    const input = {
      ...env.input,
      http: { port: 0, drain_timeout_ms: 300 },
      machines: { examples: true, namespaces: { counters: { processor: { in_process: 'example.counter' } } } },
      bus: { topics: ['orders'] },
    } as ConfigInput;
    node = await startNode(buildConfig(input), { env: { MILLRACE_ADMIN_TOKEN: ADMIN } });
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  const call = async (method: string, path: string, token: string | null, body?: unknown, requestId?: string) => {
    const r = await fetch(`${node.url}${path}`, {
      method,
      headers: {
        ...(token === null ? {} : bearer(token)),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(requestId ? { 'x-request-id': requestId } : {}),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await r.text();
    return { status: r.status, body: text ? (JSON.parse(text) as any) : null };
  };
  const audit = async (token = ADMIN) => {
    const items: any[] = [];
    let cursor: string | null = null;
    do {
      const r = await call('GET', `/v1/audit?limit=3${cursor ? `&cursor=${cursor}` : ''}`, token);
      expect(r.status).toBe(200);
      items.push(...r.body.items);
      cursor = r.body.next_cursor;
    } while (cursor !== null);
    return items;
  };

  it('the table audits every sensitive action the access-control design names', () => {
    const audited = Object.entries(PERMISSIONS).flatMap(([k, r]) =>
      !isOpenRule(r) && r.audit !== undefined ? [`${k} -> ${r.audit}`] : [],
    );
    for (const must of [
      'POST /v1/auth/tokens -> token.create',
      'DELETE /v1/auth/tokens/:id -> token.revoke',
      'PUT /v1/namespaces/:name -> namespace.put',
      'DELETE /v1/namespaces/:name -> namespace.delete',
      'PUT /v1/pipe/kinds/:name -> kind.put',
      'PUT /v1/bus/topics/:name -> topic.put',
      'PUT /v1/bus/subscriptions/:name -> subscription.put',
      'DELETE /v1/bus/subscriptions/:name -> subscription.delete',
      'POST /v1/namespaces/:ns/machines/:id/repair -> machine.repair',
      'POST /v1/namespaces/:ns/machines/:id/simple-repair -> machine.simple_repair',
      'DELETE /v1/namespaces/:ns/machines/:id -> machine.remove',
      'DELETE /v1/namespaces/:ns/tags/:tag -> machine.remove',
      'POST /v1/pipe/dead-letters/:id/redrive -> dead_letter.redrive',
      'DELETE /v1/pipe/dead-letters/:id -> dead_letter.delete',
    ]) {
      expect(audited).toContain(must);
    }
  });

  it('records who did what to which resource under which request id, before and after the action', async () => {
    const created = await call(
      'POST',
      '/v1/auth/tokens',
      ADMIN,
      { name: 'ops', permissions: ['bus:admin:*', 'machines:*', 'audit:read'] },
      'req-create-1',
    );
    expect(created.status).toBe(201);
    const ops = created.body.token as string;
    expect(
      (await call('PUT', '/v1/bus/subscriptions/billing', ops, { topics: ['orders'] }, 'req-sub-put')).status,
    ).toBeLessThan(300);
    expect((await call('DELETE', '/v1/bus/subscriptions/billing', ops, undefined, 'req-sub-del')).status).toBe(204);
    expect((await call('POST', '/v1/namespaces/counters/machines/m1/start', ops, {})).status).toBe(200);
    expect(
      (await call('DELETE', '/v1/namespaces/counters/machines/m1', ops, undefined, 'req-remove')).status,
    ).toBeLessThan(300);
    // A failed action is recorded with its status.
    expect((await call('DELETE', '/v1/auth/tokens/nosuchtoken', ADMIN, undefined, 'req-revoke-missing')).status).toBe(
      404,
    );
    expect((await call('DELETE', `/v1/auth/tokens/${created.body.id}`, ADMIN, undefined, 'req-revoke')).status).toBe(
      204,
    );

    const items = await audit();
    const brief = items.map((i) => [i.phase, i.principal, i.action, i.resource, i.request_id, i.status ?? null]);
    const tokenPrincipal = `token:${created.body.id}`;
    expect(brief).toEqual([
      ['requested', 'admin', 'token.create', '/v1/auth/tokens', 'req-create-1', null],
      ['completed', 'admin', 'token.create', `/v1/auth/tokens/${created.body.id}`, 'req-create-1', 201],
      ['requested', tokenPrincipal, 'subscription.put', '/v1/bus/subscriptions/billing', 'req-sub-put', null],
      [
        'completed',
        tokenPrincipal,
        'subscription.put',
        '/v1/bus/subscriptions/billing',
        'req-sub-put',
        expect.any(Number),
      ],
      ['requested', tokenPrincipal, 'subscription.delete', '/v1/bus/subscriptions/billing', 'req-sub-del', null],
      ['completed', tokenPrincipal, 'subscription.delete', '/v1/bus/subscriptions/billing', 'req-sub-del', 204],
      ['requested', tokenPrincipal, 'machine.remove', '/v1/namespaces/counters/machines/m1', 'req-remove', null],
      [
        'completed',
        tokenPrincipal,
        'machine.remove',
        '/v1/namespaces/counters/machines/m1',
        'req-remove',
        expect.any(Number),
      ],
      ['requested', 'admin', 'token.revoke', '/v1/auth/tokens/nosuchtoken', 'req-revoke-missing', null],
      ['completed', 'admin', 'token.revoke', '/v1/auth/tokens/nosuchtoken', 'req-revoke-missing', 404],
      ['requested', 'admin', 'token.revoke', `/v1/auth/tokens/${created.body.id}`, 'req-revoke', null],
      ['completed', 'admin', 'token.revoke', `/v1/auth/tokens/${created.body.id}`, 'req-revoke', 204],
    ]);
    expect(items[6].permissions).toEqual(['machines:repair:counters']);
    // The secret of the created token is nowhere in the trail.
    expect(JSON.stringify(items)).not.toContain(created.body.token);
    // Ordered like any stream: gapless seqs, positions on the shard.
    expect(items.map((i) => i.seq)).toEqual(items.map((_, k) => k + 1));
    expect(items.every((i) => typeof i.pos === 'number')).toBe(true);
  });

  it('a refused action writes no audit event; reading the trail needs audit:read', async () => {
    const before = (await audit()).length;
    const weak = (await call('POST', '/v1/auth/tokens', ADMIN, { name: 'weak', permissions: ['bus:publish:orders'] }))
      .body.token as string;
    const refused = await call('DELETE', '/v1/bus/subscriptions/anything', weak);
    expect(refused.status).toBe(403);
    expect((await call('DELETE', '/v1/bus/subscriptions/anything', null)).status).toBe(401);
    const after = await audit();
    expect(after.length).toBe(before + 2); // only the creation of `weak`
    expect(after.slice(-2).map((i) => i.action)).toEqual(['token.create', 'token.create']);
    const denied = await call('GET', '/v1/audit', weak);
    expect(denied.status).toBe(403);
    expect(denied.body.error.details.permission).toBe('audit:read');
    expect((await call('GET', '/v1/audit?limit=0', ADMIN)).status).toBe(400);
    expect((await call('GET', '/v1/audit?cursor=garbage', ADMIN)).status).toBe(400);
  });

  it('is hash-chained: editing an audit event breaks the chain', async () => {
    const shard = node.runtime.log.shardFor('millrace.audit');
    await waitFor(
      async () => (await verifyShard(shard)).checked > 0,
      10_000,
      'the sequencer to number the audit events',
    );
    expect((await verifyShard(shard)).ok).toBe(true);
    const location = env.config.storage.shards.find((s) => s.name === shard.name)!.location;
    const sql =
      'UPDATE events SET data = replace(data, \'"principal":"admin"\', \'"principal":"someone-else"\') WHERE stream = \'millrace.audit\' AND seq = 1';
    if (dialect === 'sqlite') {
      const db = new Database(location);
      try {
        db.prepare(sql).run();
      } finally {
        db.close();
      }
    } else {
      const c = new pg.Client({ connectionString: location });
      await c.connect();
      try {
        await c.query(sql);
      } finally {
        await c.end();
      }
    }
    const v = await verifyShard(shard);
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(/hash mismatch/);
  });

  it('whoami names the principal and its permissions', async () => {
    const t = (await call('POST', '/v1/auth/tokens', ADMIN, { name: 'reader', permissions: ['log:read'] })).body;
    const me = await call('GET', '/v1/auth/whoami', t.token);
    expect(me.status).toBe(200);
    expect(me.body).toEqual({
      authentication: true,
      principal: { id: `token:${t.id}`, source: 'token', name: 'reader', permissions: ['log:read'] },
    });
    expect((await call('GET', '/v1/auth/whoami', null)).status).toBe(401);
  });
});
