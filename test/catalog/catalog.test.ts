import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { jsonRequest } from '../support/http.js';

const catalogFn: ProcessorFn = (req) => ({ response: req.kind, events: [{ kind: req.kind }] });
const processors = new Map([['catalog-fn', catalogFn]]);

const req = (node: Node, method: string, path: string, body?: unknown) => jsonRequest(node.url, method, path, body);

const nodeInput = (env: TestEnv, id: string): ConfigInput =>
  ({
    ...env.input,
    node_id: id,
    http: { port: 0, drain_timeout_ms: 300 },
    grpc: { enabled: false },
    machines: { namespaces: { yaml_ns: { processor: { in_process: 'catalog-fn' } } } },
    pipe: { kinds: { yaml_kind: { code: 7 } } },
    bus: { topics: ['yaml_topic'] },
  }) as ConfigInput;

describe.each(DIALECTS)('runtime registration (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  beforeAll(async () => {
    env = await createTestEnv(dialect);
    node = await startNode(buildConfig(nodeInput(env, 'a')), { processors });
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  it('registers a topic, a namespace and a kind at runtime and uses them without restart', async () => {
    expect((await req(node, 'POST', '/v1/bus/topics/rt/events', { events: [{ type: 'x' }] })).body!.error.code).toBe(
      'topic_not_found',
    );
    expect(await req(node, 'PUT', '/v1/bus/topics/rt', { description: 'made at runtime' })).toEqual({
      status: 200,
      body: { name: 'rt', source: 'runtime', definition: { description: 'made at runtime' } },
    });
    expect((await req(node, 'POST', '/v1/bus/topics/rt/events', { events: [{ type: 'x' }] })).status).toBe(200);
    expect((await req(node, 'PUT', '/v1/bus/subscriptions/rs', { topics: ['rt'], start: 'earliest' })).status).toBe(
      201,
    );
    expect((await req(node, 'GET', '/v1/bus/topics')).body!.items.map((t: any) => [t.name, t.source])).toEqual([
      ['rt', 'runtime'],
      ['yaml_topic', 'config'],
    ]);

    expect(
      (await req(node, 'PUT', '/v1/namespaces/rns', { processor: { in_process: 'catalog-fn' }, retry: { base_ms: 5 } }))
        .status,
    ).toBe(200);
    expect((await req(node, 'POST', '/v1/namespaces/rns/machines/m1/start', {})).body).toEqual({ response: 'signal' });
    expect((await req(node, 'POST', '/v1/namespaces/rns/machines/m1/call', { args: 1 })).body).toEqual({
      response: 'call',
    });
    const nss = (await req(node, 'GET', '/v1/namespaces')).body!.items;
    expect(nss.map((n: any) => [n.name, n.source, n.machines])).toEqual([
      ['rns', 'runtime', { total: 1, failed: 0 }],
      ['yaml_ns', 'config', { total: 0, failed: 0 }],
    ]);

    expect((await req(node, 'PUT', '/v1/pipe/kinds/rk', { max_repeats: 3, concurrency: 2 })).status).toBe(200);
    expect((await req(node, 'POST', '/v1/pipe/sessions', { kind: 'rk' })).status).toBe(201);
    expect((await req(node, 'GET', '/v1/pipe/kinds/rk')).body).toEqual({
      name: 'rk',
      source: 'runtime',
      definition: { max_repeats: 3, concurrency: 2 },
      paused: false,
    });
    expect((await req(node, 'GET', '/v1/pipe/kinds/yaml_kind')).body!.source).toBe('config');
  });

  it('a namespace defined at runtime with a sink joins that sink at once, and leaves it when deleted', async () => {
    expect((await req(node, 'GET', '/v1/sinks/audit/events')).body!.error.code).toBe('sink_not_found');
    expect(
      (await req(node, 'PUT', '/v1/namespaces/sunk', { processor: { in_process: 'catalog-fn' }, sink: 'audit' }))
        .status,
    ).toBe(200);
    expect((await req(node, 'GET', '/v1/sinks')).body!.items).toEqual(
      expect.arrayContaining([{ name: 'audit', namespaces: ['sunk'] }]),
    );
    expect((await req(node, 'POST', '/v1/namespaces/sunk/machines/s1/start', {})).status).toBe(200);
    const page = await waitFor(async () => {
      const r = await req(node, 'GET', '/v1/sinks/audit/events?limit=10');
      return r.status === 200 && JSON.stringify(r.body).includes('s1') ? r.body : null;
    });
    expect(JSON.stringify(page)).toContain('sunk');
    expect((await req(node, 'DELETE', '/v1/namespaces/sunk')).status).toBe(204);
    expect((await req(node, 'GET', '/v1/sinks/audit/events')).body!.error.code).toBe('sink_not_found');
  });

  it('refuses bad definitions and YAML names with typed 4xx and stores nothing', async () => {
    const bad: Array<[string, string, unknown, number, string]> = [
      ['PUT', '/v1/namespaces/b1', { processor: { url: 'ftp://x' } }, 400, 'bad_request'],
      ['PUT', '/v1/namespaces/b2', { processor: { in_process: 'catalog-fn' }, extra: 1 }, 400, 'bad_request'],
      ['PUT', '/v1/namespaces/b3', { processor: { in_process: 'no-such-fn' } }, 400, 'bad_request'],
      ['PUT', '/v1/namespaces/bad%20name', { processor: { in_process: 'catalog-fn' } }, 400, 'bad_request'],
      ['PUT', '/v1/pipe/kinds/b4', { concurrency: 0 }, 400, 'bad_request'],
      ['PUT', '/v1/pipe/kinds/b5', { code: 7 }, 409, 'defined_in_config'],
      ['PUT', '/v1/pipe/kinds/7', {}, 409, 'defined_in_config'],
      ['PUT', '/v1/bus/topics/b6', { partitions: 3 }, 400, 'bad_request'],
      ['PUT', '/v1/bus/topics/yaml_topic', {}, 409, 'defined_in_config'],
      ['DELETE', '/v1/namespaces/yaml_ns', undefined, 409, 'defined_in_config'],
      ['DELETE', '/v1/pipe/kinds/nope', undefined, 404, 'kind_not_found'],
      ['GET', '/v1/bus/topics/nope', undefined, 404, 'topic_not_found'],
      ['GET', '/v1/bus/topics?limit=0', undefined, 400, 'bad_request'],
    ];
    for (const [method, path, body, status, code] of bad) {
      const r = await req(node, method, path, body);
      expect([method, path, r.status, r.body?.error?.code]).toEqual([method, path, status, code]);
    }
    const names = (await req(node, 'GET', '/v1/namespaces')).body!.items.map((n: any) => n.name);
    expect(names.some((n: string) => n.startsWith('b'))).toBe(false);
    expect((await req(node, 'GET', '/v1/pipe/kinds/b5')).status).toBe(404);
    expect((await req(node, 'GET', '/v1/bus/topics/b6')).status).toBe(404);
  });

  it('deleting: a namespace answers namespace_not_found and its machines come back when redefined', async () => {
    expect((await req(node, 'DELETE', '/v1/namespaces/rns')).status).toBe(204);
    expect((await req(node, 'POST', '/v1/namespaces/rns/machines/m1/call', { args: 1 })).body!.error.code).toBe(
      'namespace_not_found',
    );
    expect((await req(node, 'DELETE', '/v1/namespaces/rns')).body!.error.code).toBe('namespace_not_found');
    expect((await req(node, 'PUT', '/v1/namespaces/rns', { processor: { in_process: 'catalog-fn' } })).status).toBe(
      200,
    );
    expect((await req(node, 'GET', '/v1/namespaces/rns/machines/m1')).body!.history).toHaveLength(2);
    expect((await req(node, 'DELETE', '/v1/bus/topics/rt')).status).toBe(204);
    expect((await req(node, 'POST', '/v1/bus/topics/rt/events', { events: [{ type: 'x' }] })).body!.error.code).toBe(
      'topic_not_found',
    );
    expect((await req(node, 'GET', '/v1/bus/subscriptions/rs')).status).toBe(200);
  });
});

describe.runIf(DIALECTS.includes('postgres'))('runtime registration across two nodes (postgres)', () => {
  let env: TestEnv;
  let a: Node;
  let b: Node;
  beforeAll(async () => {
    env = await createTestEnv('postgres');
    a = await startNode(buildConfig(nodeInput(env, 'a')), { processors });
    b = await startNode(buildConfig(nodeInput(env, 'b')), { processors });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await env?.cleanup();
  });

  it('a definition made on node A is used on node B without restart', async () => {
    expect((await req(b, 'GET', '/v1/namespaces/two')).status).toBe(404);
    expect((await req(a, 'PUT', '/v1/namespaces/two', { processor: { in_process: 'catalog-fn' } })).status).toBe(200);
    expect((await req(a, 'PUT', '/v1/bus/topics/two', {})).status).toBe(200);
    await waitFor(
      async () => (await req(b, 'POST', '/v1/namespaces/two/machines/x/start', {})).status === 200,
      10_000,
      'namespace on node B',
    );
    await waitFor(
      async () => (await req(b, 'POST', '/v1/bus/topics/two/events', { events: [{ type: 'x' }] })).status === 200,
      10_000,
      'topic on node B',
    );
    expect((await req(a, 'DELETE', '/v1/namespaces/two')).status).toBe(204);
    await waitFor(
      async () => (await req(b, 'POST', '/v1/namespaces/two/machines/x/call', {})).status === 404,
      10_000,
      'deletion on node B',
    );
  });
});
