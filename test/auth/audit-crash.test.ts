/**
 * The audit trail's ordering claim under kill -9: an audited action's
 * `audit.requested` event is committed before the action runs. The node is
 * killed while a repair is inside the processor: after restart the log holds
 * the `requested` event (and no `completed`), and the machine is unchanged.
 */
import type { ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { AUDIT_STREAM } from '../../src/auth/audit.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/env.js';
import { spawnReady, writeConfigFile } from '../support/proc.js';

describe('audit.requested is durable before the action runs (kill -9)', () => {
  let env: TestEnv;
  let processor: Server;
  let child: ChildProcess | undefined;
  let node: Node | undefined;
  let repairsSeen = 0;

  beforeAll(async () => {
    // Steps: a start succeeds, a call fails the machine, a repair never answers.
    processor = createServer((req, res) => {
      let raw = '';
      req.setEncoding('utf8').on('data', (d: string) => (raw += d));
      req.on('end', () => {
        const body = JSON.parse(raw) as { kind: string };
        if (body.kind === 'signal')
          res
            .writeHead(200, { 'content-type': 'application/json' })
            .end(JSON.stringify({ events: [{ started: true }] }));
        else if (body.kind === 'call')
          res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'bug' }));
        else repairsSeen++; // never answered
      });
    });
    await new Promise<void>((r) => processor.listen(0, '127.0.0.1', r));
    env = await createTestEnv('sqlite');
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await node?.close();
    processor?.closeAllConnections();
    await new Promise((r) => processor?.close(r));
    await env?.cleanup();
  });

  it('keeps the requested event of a repair cut short by a crash, without its completed event', async () => {
    const port = (processor.address() as { port: number }).port;
    const input = {
      ...env.input,
      http: { host: '127.0.0.1', port: 0 },
      grpc: { enabled: false },
      machines: {
        namespaces: { pay: { processor: { url: `http://127.0.0.1:${port}/` }, default_timeout_ms: 60_000 } },
      },
    } as ConfigInput;
    const cfg = writeConfigFile(env.dataDir, input, 'node.json');
    let url: string;
    ({ child, found: url } = await spawnReady('test/auth/node-child.ts', [cfg], /ready (\S+)/));
    const post = (path: string, body: unknown, requestId?: string) =>
      fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(requestId ? { 'x-request-id': requestId } : {}) },
        body: JSON.stringify(body),
      });
    expect((await post('/v1/namespaces/pay/machines/m1/start', { args: null })).status).toBe(200);
    expect((await post('/v1/namespaces/pay/machines/m1/call', { args: 'x' })).status).toBeGreaterThanOrEqual(400);
    const pending = post('/v1/namespaces/pay/machines/m1/repair', { args: null }, 'repair-before-crash').catch(
      () => null,
    );
    await waitFor(async () => repairsSeen > 0, 20_000, 'the repair to reach the processor');
    child.kill('SIGKILL');
    child = undefined;
    expect(await pending).toBeNull(); // no answer: the node died

    node = await startNode(buildConfig({ ...input, http: { host: '127.0.0.1', port: 0 } } as ConfigInput));
    const audit = (await node.runtime.log.read(AUDIT_STREAM, { limit: 100 })).map(
      (e) => ({ type: e.type, ...(JSON.parse(e.data) as Record<string, unknown>) }) as Record<string, unknown>,
    );
    const repair = audit.filter((e) => e.request_id === 'repair-before-crash');
    expect(repair).toEqual([
      {
        type: 'audit.requested',
        principal: 'open',
        action: 'machine.repair',
        resource: '/v1/namespaces/pay/machines/m1/repair',
        permissions: ['machines:repair:pay'],
        method: 'POST',
        request_id: 'repair-before-crash',
      },
    ]);
    const m = await (await fetch(`${node.url}/v1/namespaces/pay/machines/m1`)).json();
    expect((m as { status: string }).status).toBe('failed');
  });
});
