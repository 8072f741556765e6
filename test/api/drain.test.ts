/**
 * Closing a node drains HTTP for `http.drain_timeout_ms`, then cuts off what
 * is still in flight: a client holding a server-sent-events stream open does
 * not keep the node from closing.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, type TestEnv } from '../support/env.js';
import { busInput } from '../bus/support.js';

describe('closing a node with a stream held open', () => {
  let env: TestEnv;
  let node: Node | undefined;
  beforeAll(async () => {
    env = await createTestEnv('sqlite');
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  it('cuts the stream off after the drain time and closes', async () => {
    node = await startNode(buildConfig(busInput(env)));
    const put = await fetch(`${node.url}/v1/bus/subscriptions/held`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ topics: ['orders'], start: 'earliest' }),
    });
    expect(put.status).toBe(201);
    // A client that reads the stream and never lets go of it.
    const ended = new Promise<string>((resolve, reject) => {
      const req = request(`${node!.url}/v1/bus/subscriptions/held/stream`, (res) => {
        expect(res.statusCode).toBe(200);
        res.on('data', () => {});
        res.on('close', () => resolve('closed by the server'));
      });
      req.on('error', reject);
      req.end();
    });
    // The stream is open (its head arrived) before the node closes.
    await new Promise((r) => setTimeout(r, 200));
    const closed = node.close().then(() => 'node closed');
    const first = await Promise.race([closed, ended]);
    expect(['node closed', 'closed by the server']).toContain(first);
    expect(await closed).toBe('node closed');
    expect(await ended).toBe('closed by the server');
    node = undefined;
  }, 30_000);
});
