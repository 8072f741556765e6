/**
 * What a newcomer meets first: GET / leads to the console, /docs is an API
 * reference that needs no network, request logs stay out of the way at
 * `debug` unless `logging.requests` asks for them, and `millrace --version`.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { createLogger } from '../../src/core/logger.js';
import { isMillraceError } from '../../src/core/errors.js';
import { startNode, type Node } from '../../src/serve.js';

/** The browser the console tests use (test/ui/console.test.ts). */
const CHROMIUM = process.env.MILLRACE_CHROMIUM ?? '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let node: Node | undefined;
let dir: string | undefined;
afterEach(async () => {
  await node?.close();
  node = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** A node with no config file beyond a data dir and a free port, logging into `lines`. */
async function start(input: Record<string, unknown> = {}, lines: Array<Record<string, unknown>> = []): Promise<Node> {
  dir = mkdtempSync(join(tmpdir(), 'mr-newcomer-'));
  const config = buildConfig({
    data_dir: dir,
    http: { port: 0, drain_timeout_ms: 300 },
    grpc: { enabled: false },
    ...input,
  } as ConfigInput);
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  node = await startNode(config, { logger: createLogger('debug', sink) });
  return node;
}

describe('first contact', () => {
  it('GET / redirects to the console at /ui/', async () => {
    const n = await start();
    const r = await fetch(`${n.url}/`, { redirect: 'manual' });
    expect([r.status, r.headers.get('location')]).toEqual([302, '/ui/']);
  });

  it('/docs serves the API reference from the node itself (no other host) over the same document as /openapi.json', async () => {
    const n = await start();
    const page = await fetch(`${n.url}/docs/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    const html = await page.text();
    // Every script and style the page loads is relative (served by the node), none from a CDN.
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThan(1);
    expect(refs.filter((u) => /^(https?:)?\/\//.test(u))).toEqual([]);
    for (const u of refs) expect([u, (await fetch(new URL(u, `${n.url}/docs/`))).status]).toEqual([u, 200]);
    const init = await (await fetch(`${n.url}/docs/static/swagger-initializer.js`)).text();
    // Swagger UI would otherwise send the document to an online validator for its badge.
    expect(init).toMatch(/validatorUrl: null/);
    expect(init).toMatch(/url: resolveUrl\('\.\/json'\)/);
    expect(await (await fetch(`${n.url}/docs/json`)).json()).toEqual(
      await (await fetch(`${n.url}/openapi.json`)).json(),
    );
  });
});

describe('/docs in a browser', () => {
  it('renders every operation with no request leaving the node', async () => {
    const n = await start();
    const doc = (await (await fetch(`${n.url}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const operations = Object.values(doc.paths).reduce((k, ops) => k + Object.keys(ops).length, 0);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
    try {
      const page = await browser.newPage();
      const elsewhere: string[] = [];
      // Anything not served by the node is refused (and recorded): the page must not need it.
      await page.route('**/*', (route) => {
        const u = route.request().url();
        if (u.startsWith(`${n.url}/`) || u.startsWith('data:')) return route.continue();
        elsewhere.push(u);
        return route.abort();
      });
      await page.goto(`${n.url}/docs/`);
      await expect.poll(() => page.locator('.opblock').count(), { timeout: 30_000 }).toBe(operations);
      expect(await page.locator('.opblock-tag').allTextContents()).toEqual(
        expect.arrayContaining([
          expect.stringContaining('machines'),
          expect.stringContaining('ledger'),
          expect.stringContaining('bus'),
        ]),
      );
      expect(elsewhere).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});

describe('request logs', () => {
  const completed = (lines: Array<Record<string, unknown>>) =>
    lines.filter((l) => l.msg === 'request completed' && l.route === '/v1/shards');

  it('go to debug by default, one line per request, with method, route, status and time', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const n = await start({}, lines);
    expect((await fetch(`${n.url}/v1/shards`)).status).toBe(200);
    await n.close();
    node = undefined;
    expect(completed(lines)).toEqual([
      expect.objectContaining({ level: 20, method: 'GET', route: '/v1/shards', status: 200, ms: expect.any(Number) }),
    ]);
    // Fastify's own pair of lines per request (incoming / completed at info) is gone.
    expect(lines.filter((l) => l.msg === 'incoming request')).toEqual([]);
    expect(lines.filter((l) => l.level === 30 && l.reqId !== undefined)).toEqual([]);
  });

  it('go to info with logging.requests', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const n = await start({ logging: { requests: true } }, lines);
    expect((await fetch(`${n.url}/v1/shards`)).status).toBe(200);
    await n.close();
    node = undefined;
    expect(completed(lines)).toEqual([expect.objectContaining({ level: 30, status: 200 })]);
  });

  it('logging.requests and logging.slow_request_ms are validated', () => {
    for (const logging of [{ requests: 'yes' }, { slow_request_ms: 0 }, { slow_request_ms: 1.5 }, { request: true }]) {
      let err: unknown;
      try {
        buildConfig({ logging } as ConfigInput);
      } catch (e) {
        err = e;
      }
      expect([logging, isMillraceError(err, 'config_invalid')]).toEqual([logging, true]);
    }
    expect(buildConfig({} as ConfigInput).logging).toMatchObject({ requests: false, slow_request_ms: 1000 });
  });
});

describe('millrace --version', () => {
  it('prints the package version', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    for (const flag of ['--version', '-v']) {
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'test/support/cli.ts', flag]);
      expect(stdout.trim()).toBe(version);
    }
  });
});
