/**
 * /openapi.json is a valid OpenAPI 3.1 document that generators accept:
 * swagger-parser validates it; every operation has what a generated client
 * needs (so a route added without them fails here); openapi-typescript
 * generates types from it, and the quick start written against those types
 * with openapi-fetch type-checks and runs against a real node.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import SwaggerParser from '@apidevtools/swagger-parser';
import openapiTS, { astToString } from 'openapi-typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';

const run = promisify(execFile);
const FACES = ['log', 'machines', 'ledger', 'pipe', 'bus', 'auth', 'schedules', 'bulk', 'pause'];
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];

type Doc = {
  openapi: string;
  servers?: unknown[];
  paths: Record<string, Record<string, any>>;
  components?: { schemas?: Record<string, unknown> };
};

/** What a generator needs of each operation, as a list of problems (empty when complete). */
export function problems(doc: Doc): string[] {
  const out: string[] = [];
  const ids = new Map<string, string>();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (!METHODS.includes(method)) continue;
      const at = `${method.toUpperCase()} ${path}`;
      if (typeof op.operationId !== 'string' || !/^[a-z][A-Za-z0-9]*$/.test(op.operationId))
        out.push(`${at}: no camelCase operationId`);
      else if (ids.has(op.operationId))
        out.push(`${at}: operationId ${op.operationId} also used by ${ids.get(op.operationId)}`);
      else ids.set(op.operationId, at);
      if (typeof op.summary !== 'string' || op.summary.length === 0) out.push(`${at}: no summary`);
      if (!Array.isArray(op.tags) || op.tags.length !== 1 || !FACES.includes(op.tags[0]))
        out.push(`${at}: tags ${JSON.stringify(op.tags)} are not one face of ${FACES.join(', ')}`);
      const responses = Object.entries<any>(op.responses ?? {});
      const ok = responses.filter(([code]) => code.startsWith('2'));
      if (ok.length === 0) out.push(`${at}: no 2xx answer`);
      for (const [code, r] of ok) {
        const schemas = Object.values<any>(r.content ?? {}).map((c) => c.schema);
        if (code !== '204' && (schemas.length === 0 || schemas.some((s) => s === undefined)))
          out.push(`${at}: ${code} answer without a schema`);
        if (code === '204' && schemas.length > 0) out.push(`${at}: 204 answer with a body`);
      }
      const errors = responses.filter(([code]) => /^[45]/.test(code));
      for (const [code, r] of errors) {
        const refs = Object.values<any>(r.content ?? {}).map((c) => c.schema?.$ref);
        if (refs.length === 0 || refs.some((ref) => ref !== '#/components/schemas/Error'))
          out.push(`${at}: ${code} answer is not the shared Error schema`);
      }
      if (!errors.some(([c]) => c.startsWith('4'))) out.push(`${at}: no 4xx answer`);
      if (!errors.some(([c]) => c.startsWith('5'))) out.push(`${at}: no 5xx answer`);
    }
  }
  // `nullable` is OpenAPI 3.0: in 3.1 it is ignored, so a nullable field must say type: [..., 'null'].
  const walk = (v: unknown, where: string): void => {
    if (v === null || typeof v !== 'object') return;
    if (!Array.isArray(v) && 'nullable' in v) out.push(`${where}: nullable (write type: [..., 'null'])`);
    for (const [k, c] of Object.entries(v)) walk(c, `${where}/${k}`);
  };
  walk(doc.paths, '#/paths');
  return out;
}

let node: Node;
let dir: string;
let doc: Doc;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mr-openapi-'));
  node = await startNode(
    buildConfig({
      data_dir: dir,
      http: { port: 0, drain_timeout_ms: 300 },
      grpc: { enabled: false },
      machines: { examples: true },
    } as ConfigInput),
  );
  const res = await fetch(`${node.url}/openapi.json`);
  expect(res.status).toBe(200);
  doc = (await res.json()) as Doc;
});
afterAll(async () => {
  await node?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('/openapi.json', () => {
  it('is a valid OpenAPI 3.1 document with servers and the shared Error schema (swagger-parser)', async () => {
    await expect(SwaggerParser.validate(structuredClone(doc) as never)).resolves.toBeDefined();
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.servers?.length).toBeGreaterThan(0);
    expect(doc.components?.schemas?.Error).toMatchObject({ type: 'object', required: ['error'] });
  });

  it('gives every operation an operationId, a summary, a face tag, a 2xx schema and Error for 4xx/5xx', () => {
    expect(Object.keys(doc.paths).length).toBeGreaterThan(40);
    expect(problems(doc)).toEqual([]);
  });

  it('the completeness check catches an operation missing what generators need', () => {
    const bad: Doc = {
      openapi: '3.1.0',
      paths: {
        '/v1/new': {
          get: {
            tags: ['catalog'],
            responses: {
              '200': { description: 'x' },
              '400': { content: { 'application/json': { schema: { type: 'object' } } } },
            },
          },
          post: {
            operationId: 'listShards',
            summary: 's',
            tags: ['log'],
            responses: { '201': { content: { 'application/json': { schema: { type: 'string', nullable: true } } } } },
          },
        },
        '/v1/shards': {
          get: {
            operationId: 'listShards',
            summary: 's',
            tags: ['log'],
            responses: {
              '204': {},
              '4XX': { content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
              '5XX': { content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
            },
          },
        },
      },
    };
    expect(problems(bad)).toEqual([
      'GET /v1/new: no camelCase operationId',
      'GET /v1/new: no summary',
      'GET /v1/new: tags ["catalog"] are not one face of log, machines, ledger, pipe, bus, auth, schedules, bulk, pause',
      'GET /v1/new: 200 answer without a schema',
      'GET /v1/new: 400 answer is not the shared Error schema',
      'GET /v1/new: no 5xx answer',
      'POST /v1/new: no 4xx answer',
      'POST /v1/new: no 5xx answer',
      'GET /v1/shards: operationId listShards also used by POST /v1/new',
      "#/paths//v1/new/post/responses/201/content/application/json/schema: nullable (write type: [..., 'null'])",
    ]);
  });

  it('generates types with openapi-typescript; the openapi-fetch quick start type-checks and runs against the node', async () => {
    // Inside the checkout (test-output/ is ignored), so that the client resolves openapi-fetch from node_modules.
    mkdirSync('test-output', { recursive: true });
    const work = mkdtempSync(join('test-output', 'openapi-client-'));
    try {
      writeFileSync(join(work, 'api.d.ts'), astToString(await openapiTS(structuredClone(doc) as never)));
      copyFileSync('examples/openapi-client/quickstart.ts', join(work, 'quickstart.ts'));
      writeFileSync(
        join(work, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            target: 'ES2022',
            module: 'NodeNext',
            moduleResolution: 'NodeNext',
            lib: ['ES2023', 'DOM'],
            types: ['node'],
            strict: true,
            noUncheckedIndexedAccess: true,
            noEmit: true,
            skipLibCheck: false,
          },
          files: ['quickstart.ts', 'api.d.ts'],
        }),
      );
      const tsc = await run(process.execPath, [
        'node_modules/typescript/bin/tsc',
        '-p',
        join(work, 'tsconfig.json'),
      ]).catch((e: { stdout: string }) => ({ stdout: e.stdout, failed: true }));
      expect(tsc.stdout).toBe('');
      const { stdout } = await run(process.execPath, ['--import', 'tsx', join(work, 'quickstart.ts')], {
        env: { ...process.env, MILLRACE_URL: node.url },
      });
      expect(stdout.trim().split('\n')).toEqual([
        'topic {"name":"orders","source":"runtime"}',
        'published 2',
        'subscription "billing"',
        'started {"count":10}',
        'called {"count":15}',
        'machines 1',
        'missing {"status":404,"code":"topic_not_found"}',
      ]);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    // tsc and tsx start in child processes: slow on a loaded machine (the bound only detects a hang).
  }, 240_000);
});
