import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';

// The README's quick start (examples/quickstart.sh) against a fresh node with no config file but a data dir and a free port.
let node: Node;
let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mr-quick-'));
  node = await startNode(buildConfig({ data_dir: dir, http: { port: 0, drain_timeout_ms: 300 }, grpc: { enabled: false } } as ConfigInput));
});
afterAll(async () => {
  await node?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('examples/quickstart.sh runs against a fresh node', async () => {
  const { stdout } = await promisify(execFile)('sh', ['examples/quickstart.sh'], { env: { ...process.env, MILLRACE_URL: node.url } });
  expect(stdout).toContain('"name":"orders","source":"runtime"');
  expect(stdout).toMatch(/event: delivery|"type":"created"/);
  expect(stdout).toContain('{"response":{"count":10}}');
  expect(stdout).toContain('{"response":{"count":15}}');
  expect(stdout).toContain('"id":"c1","status":"working"');
});

it('the CLI defines, shows, lists and deletes runtime definitions through a node', async () => {
  const run = async (args: string[]) => {
    try {
      const r = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'test/support/cli.ts', ...args], { env: { ...process.env, MILLRACE_URL: node.url } });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  expect((await run(['kinds', 'put', 'cli-kind', '{"max_repeats":2}'])).code).toBe(0);
  expect(JSON.parse((await run(['kinds', 'get', 'cli-kind'])).stdout)).toEqual({ name: 'cli-kind', source: 'runtime', definition: { max_repeats: 2 }, paused: false });
  expect((await run(['kinds', 'list'])).stdout).toContain('"cli-kind"');
  const bad = await run(['namespaces', 'put', 'cli-ns', '{"processor":{}}']);
  expect([bad.code, JSON.parse(bad.stderr).error.code]).toEqual([1, 'bad_request']);
  expect((await run(['kinds', 'delete', 'cli-kind'])).code).toBe(0);
  const gone = await run(['kinds', 'get', 'cli-kind']);
  expect([gone.code, JSON.parse(gone.stderr).error.code]).toEqual([1, 'kind_not_found']);
});
