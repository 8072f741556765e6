import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isLoopback, resolveAuth } from '../../src/auth/access.js';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { startNode } from '../../src/serve.js';
import { collect, spawnTs, writeConfigFile } from '../support/proc.js';

const TOKEN = 'secure-default-admin-0123456789';

describe('secure default', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'mr-secure-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = (extra: Record<string, unknown>) => buildConfig({ data_dir: dir, ...extra } as ConfigInput);
  const refusal = (f: () => unknown): string => {
    try {
      f();
    } catch (err) {
      if (isMillraceError(err, 'config_invalid')) return err.message;
      throw err;
    }
    return 'started';
  };

  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1'])
      expect([h, isLoopback(h)]).toEqual([h, true]);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.2', 'example.com', '::ffff:10.0.0.1'])
      expect([h, isLoopback(h)]).toEqual([h, false]);
  });

  it('loopback without credentials configured: open', () => {
    const s = resolveAuth(cfg({}), {});
    expect(s.enabled).toBe(false);
  });

  it('a non-loopback HTTP or gRPC address without authentication is refused, unless auth.insecure', () => {
    expect(refusal(() => resolveAuth(cfg({ http: { host: '0.0.0.0' } }), {}))).toMatch(
      /http\.host 0\.0\.0\.0.*auth\.insecure/,
    );
    expect(refusal(() => resolveAuth(cfg({ grpc: { host: '10.1.2.3' } }), {}))).toMatch(/grpc\.host 10\.1\.2\.3/);
    // gRPC off: its host does not matter.
    expect(resolveAuth(cfg({ grpc: { enabled: false, host: '0.0.0.0' } }), {}).enabled).toBe(false);
    expect(resolveAuth(cfg({ http: { host: '0.0.0.0' }, auth: { insecure: true } }), {}).enabled).toBe(false);
  });

  it('an admin token (environment or file), a JWT key or auth.enabled turns authentication on', () => {
    expect(resolveAuth(cfg({ http: { host: '0.0.0.0' } }), { MILLRACE_ADMIN_TOKEN: TOKEN }).enabled).toBe(true);
    const file = join(dir, 'admin-token');
    writeFileSync(file, `${TOKEN}\n`);
    const s = resolveAuth(cfg({ http: { host: '0.0.0.0' }, auth: { admin_token_file: file } }), {});
    expect([s.enabled, s.adminDigest?.length]).toEqual([true, 32]);
    expect(resolveAuth(cfg({ http: { host: '0.0.0.0' }, auth: { enabled: true } }), {}).enabled).toBe(true);
  });

  it('refuses an unreadable or weak admin token, and auth.enabled: false beside credentials', () => {
    expect(refusal(() => resolveAuth(cfg({ auth: { admin_token_file: join(dir, 'missing') } }), {}))).toMatch(
      /cannot read/,
    );
    expect(refusal(() => resolveAuth(cfg({}), { MILLRACE_ADMIN_TOKEN: 'short' }))).toMatch(/at least 16/);
    expect(refusal(() => resolveAuth(cfg({ auth: { enabled: false } }), { MILLRACE_ADMIN_TOKEN: TOKEN }))).toMatch(
      /auth\.enabled: false/,
    );
  });

  it('auth.open_metrics and auth.open_openapi open those routes only', async () => {
    const node = await startNode(
      cfg({
        data_dir: join(dir, 'd3'),
        http: { port: 0 },
        grpc: { enabled: false },
        logging: { level: 'silent' },
        auth: { open_metrics: true },
      }),
      { env: { MILLRACE_ADMIN_TOKEN: TOKEN } },
    );
    try {
      expect((await fetch(`${node.url}/metrics`)).status).toBe(200);
      expect((await fetch(`${node.url}/openapi.json`)).status).toBe(401);
      expect((await fetch(`${node.url}/v1/shards`)).status).toBe(401);
    } finally {
      await node.close();
    }
    const other = await startNode(
      cfg({
        data_dir: join(dir, 'd4'),
        http: { port: 0 },
        grpc: { enabled: false },
        logging: { level: 'silent' },
        auth: { open_openapi: true },
      }),
      { env: { MILLRACE_ADMIN_TOKEN: TOKEN } },
    );
    try {
      expect((await fetch(`${other.url}/openapi.json`)).status).toBe(200);
      expect((await fetch(`${other.url}/metrics`)).status).toBe(401);
    } finally {
      await other.close();
    }
  });

  it('millrace serve on 0.0.0.0 without authentication exits 2 with config_invalid; on loopback it serves and logs that authentication is off', async () => {
    const exposed = writeConfigFile(
      dir,
      { data_dir: join(dir, 'd1'), http: { host: '0.0.0.0', port: 0 }, grpc: { enabled: false } },
      'exposed.yaml',
    );
    const r = await collect(
      spawnTs('test/support/cli.ts', ['--config', exposed, 'serve'], { MILLRACE_ADMIN_TOKEN: '' }),
    );
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain('config_invalid');
    expect(r.stderr).toContain('auth.insecure');

    const local = writeConfigFile(
      dir,
      { data_dir: join(dir, 'd2'), http: { host: '127.0.0.1', port: 0 }, grpc: { enabled: false } },
      'local.yaml',
    );
    const child = spawnTs('test/support/cli.ts', ['--config', local, 'serve'], { MILLRACE_ADMIN_TOKEN: '' });
    const done = collect(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 30_000;
    while (!out.includes('millrace serving') && Date.now() < deadline && child.exitCode === null)
      await new Promise((res) => setTimeout(res, 50));
    child.kill('SIGTERM');
    const end = await done;
    expect(end.code, end.stderr).toBe(0);
    expect(out).toContain('authentication is off');
  });
});
