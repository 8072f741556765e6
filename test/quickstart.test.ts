import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import { startNode, type Node } from '../src/serve.js';

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
