import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jsonRequest } from '../support/http.js';
import { spawnReady, writeConfigFile } from '../support/proc.js';

// The example processor `example.counter` is served only when asked for: `millrace serve --examples`
// (what `npm start`, the quick start, runs) or `machines.examples: true`; a plain `millrace serve` has none.
const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function serve(args: string[]): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'mr-examples-'));
  dirs.push(dir);
  const config = writeConfigFile(dir, {
    data_dir: dir,
    http: { port: 0, drain_timeout_ms: 300 },
    grpc: { enabled: false },
  });
  const { child, found } = await spawnReady(
    'test/support/cli.ts',
    ['--config', config, 'serve', ...args],
    /"http":"(http:\/\/[^"]+)"[^\n]*"msg":"millrace serving"/,
  );
  children.push(child);
  return found;
}

const counters = { processor: { in_process: 'example.counter' } };

describe('the example processor', () => {
  it('`millrace serve` without --examples has no example.counter: defining a namespace on it is refused and nothing is stored', async () => {
    const url = await serve([]);
    const put = await jsonRequest(url, 'PUT', '/v1/namespaces/counters', counters);
    expect(put.status).toBe(400);
    expect(put.body?.error).toMatchObject({ code: 'bad_request', message: expect.stringContaining('example.counter') });
    const get = await jsonRequest(url, 'GET', '/v1/namespaces/counters');
    expect([get.status, get.body?.error?.code]).toEqual([404, 'namespace_not_found']);
  });

  it('`millrace serve --examples` serves example.counter', async () => {
    const url = await serve(['--examples']);
    expect((await jsonRequest(url, 'PUT', '/v1/namespaces/counters', counters)).status).toBeLessThan(300);
    expect((await jsonRequest(url, 'POST', '/v1/namespaces/counters/machines/c1/start', { args: 10 })).body).toEqual({
      response: { count: 10 },
    });
    expect((await jsonRequest(url, 'POST', '/v1/namespaces/counters/machines/c1/call', { args: 5 })).body).toEqual({
      response: { count: 15 },
    });
  });
});
