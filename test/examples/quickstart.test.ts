import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';

// The README's quick start (examples/quickstart.sh) against a fresh node as `npm start` runs it (`serve --examples`: the
// example processor is served), with no config file but a data dir and a free port.
let node: Node;
let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mr-quick-'));
  node = await startNode(
    buildConfig({
      data_dir: dir,
      http: { port: 0, drain_timeout_ms: 300 },
      grpc: { enabled: false },
      machines: { examples: true },
    } as ConfigInput),
  );
});
afterAll(async () => {
  await node?.close();
  rmSync(dir, { recursive: true, force: true });
});

it("the quick start's `npm start` serves the example processor (`serve --examples`), as the node below does", () => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> };
  expect(pkg.scripts.start).toBe('node bin/millrace.js serve --examples');
  expect(readFileSync('README.md', 'utf8')).toContain('npm ci && npm start');
});

it('examples/quickstart.sh runs against a fresh node', async () => {
  const { stdout } = await promisify(execFile)('sh', ['examples/quickstart.sh'], {
    env: { ...process.env, MILLRACE_URL: node.url },
  });
  expect(stdout).toContain('"name":"orders","source":"runtime"');
  expect(stdout).toMatch(/event: delivery|"type":"created"/);
  expect(stdout).toContain('{"response":{"count":10}}');
  expect(stdout).toContain('{"response":{"count":15}}');
  expect(stdout).toContain('"id":"c1","status":"working"');
});

it('the CLI defines, shows, lists and deletes runtime definitions through a node', async () => {
  const run = async (args: string[]) => {
    try {
      const r = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'test/support/cli.ts', ...args], {
        env: { ...process.env, MILLRACE_URL: node.url },
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  expect((await run(['kinds', 'put', 'cli-kind', '{"max_repeats":2}'])).code).toBe(0);
  expect(JSON.parse((await run(['kinds', 'get', 'cli-kind'])).stdout)).toEqual({
    name: 'cli-kind',
    source: 'runtime',
    definition: { max_repeats: 2 },
    paused: false,
  });
  expect((await run(['kinds', 'list'])).stdout).toContain('"cli-kind"');
  const bad = await run(['namespaces', 'put', 'cli-ns', '{"processor":{}}']);
  expect([bad.code, JSON.parse(bad.stderr).error.code]).toEqual([1, 'bad_request']);
  expect((await run(['kinds', 'delete', 'cli-kind'])).code).toBe(0);
  const gone = await run(['kinds', 'get', 'cli-kind']);
  expect([gone.code, JSON.parse(gone.stderr).error.code]).toEqual([1, 'kind_not_found']);
});

/** Every `curl` line of the shell blocks in README.md and docs/*.md: its method, the host it names, and its path. */
function docCurls(): { file: string; line: string; method: string; host: string; path: string }[] {
  const files = [
    'README.md',
    ...readdirSync('docs')
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  const out: { file: string; line: string; method: string; host: string; path: string }[] = [];
  for (const file of files) {
    for (const block of readFileSync(file, 'utf8').matchAll(/^```sh\n([\s\S]*?)^```/gm)) {
      const vars = new Map<string, string>();
      const lines = block[1]!
        .replace(/\\\n/g, ' ')
        .split('\n')
        .map((l) => l.replace(/^\$ /, ''));
      for (const line of lines) {
        const assign = /^([A-Z_]+)=(\S+)$/.exec(line.trim());
        if (assign) vars.set(assign[1]!, assign[2]!);
        if (!line.startsWith('curl ')) continue;
        const words = line.replace(/\s#.*$/, '').match(/'[^']*'|"[^"]*"|\S+/g) ?? [];
        const strip = (w: string) => w.replace(/^['"]|['"]$/g, '');
        let method = '';
        let hasBody = false;
        let url = '';
        for (let i = 1; i < words.length; i++) {
          const w = words[i]!;
          if (w === '-X') method = words[++i]!;
          else if (w.startsWith('-X')) method = w.slice(2);
          else if (['-d', '--data', '--data-binary', '--data-raw', '--json'].includes(w)) {
            hasBody = true;
            i++;
          } else if (['-H', '--header', '--max-time', '-m', '-o', '-w', '-u'].includes(w)) i++;
          else if (!w.startsWith('-') && !url) url = strip(w);
        }
        // Known variables expand to their value; an unset one in front ($U) is the node on its default
        // address, any other ($ID, $LAST_ID) stands for one path segment.
        url = url.replace(/^\$\{?([A-Z_]+)\}?/, (m, v: string) => (vars.has(v) ? m : '127.0.0.1:7070'));
        url = url.replace(/\$\{?([A-Z_]+)\}?/g, (_m, v: string) => vars.get(v) ?? 'x');
        const m = /^(?:https?:\/\/)?([^/]+)(\/[^?]*)/.exec(url);
        out.push({ file, line, method: method || (hasBody ? 'POST' : 'GET'), host: m?.[1] ?? '', path: m?.[2] ?? '' });
      }
    }
  }
  return out;
}

it('every curl example in README.md and docs/ uses the default port and a route the node serves', async () => {
  const curls = docCurls();
  expect(curls.length).toBeGreaterThan(30);
  const spec = (await (await fetch(`${node.url}/openapi.json`, { headers: { connection: 'close' } })).json()) as {
    paths: Record<string, Record<string, unknown>>;
  };
  const routes = Object.entries(spec.paths).map(([p, ops]) => ({
    re: new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/]+')}$`),
    methods: Object.keys(ops).map((k) => k.toUpperCase()),
  }));
  const wrong: string[] = [];
  for (const c of curls) {
    if (!['localhost:7070', '127.0.0.1:7070'].includes(c.host))
      wrong.push(`${c.file}: not the default port: ${c.line}`);
    else if (routes.some((r) => r.re.test(c.path) && r.methods.includes(c.method))) continue;
    else if (c.method === 'GET') {
      // (connection: close, so no kept-alive socket holds the node's close.)
      // Routes kept out of the OpenAPI document (/healthz, /readyz, /metrics, /openapi.json) must still answer.
      const res = await fetch(`${node.url}${c.path}`, { headers: { connection: 'close' } });
      await res.body?.cancel();
      if (res.status === 404 && !spec.paths[c.path]) wrong.push(`${c.file}: no such route (${res.status}): ${c.line}`);
    } else wrong.push(`${c.file}: no such route: ${c.method} ${c.path}: ${c.line}`);
  }
  expect(wrong).toEqual([]);
});

/** Runs one documented curl line against the node: its status and body (a stream is cut after 3 s). */
async function runCurl(line: string): Promise<{ status: number; body: string }> {
  const host = node.url.replace(/^https?:\/\//, '');
  const cmd = `${line.replace(/\s#.*$/, '').replace(/(localhost|127\.0\.0\.1):7070/g, host)} -sS --max-time 3 -w '\\n%{http_code}'`;
  let stdout: string;
  try {
    stdout = (await promisify(execFile)('sh', ['-c', cmd])).stdout;
  } catch (err) {
    stdout = (err as { stdout: string }).stdout; // --max-time ends a stream with exit 28, after its answer
  }
  const cut = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) };
}

/** The shell blocks of one docs page, one command a line: joined across a trailing backslash and inside single quotes. */
function shBlocks(file: string): string[][] {
  return [...readFileSync(file, 'utf8').matchAll(/^```sh\n([\s\S]*?)^```/gm)].map((b) => {
    const out: string[] = [];
    let open = false;
    for (const raw of b[1]!.replace(/\\\n\s*/g, ' ').split('\n')) {
      if (open) out[out.length - 1] += ` ${raw.trim()}`;
      else out.push(raw);
      if ((raw.match(/'/g) ?? []).length % 2 === 1) open = !open;
    }
    return out;
  });
}

it('the inspection and error examples of docs/ run against a node and answer as documented', async () => {
  const ran: string[] = [];
  for (const file of ['docs/http-grpc-api.md', 'docs/errors.md']) {
    for (const lines of shBlocks(file)) {
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i]!.replace(/^\$ /, '');
        if (!line.startsWith('curl ')) continue;
        const { status, body } = await runCurl(line);
        ran.push(line);
        const shown = lines[i + 1]?.startsWith('{') ? lines[i + 1]! : undefined;
        if (!shown) {
          expect([line, status]).toEqual([line, 200]);
          continue;
        }
        // The answer shown under a `$ curl` line: the same top-level keys, and the same error code for an error.
        const got = JSON.parse(body) as Record<string, unknown>;
        const doc = JSON.parse(
          lines
            .slice(i + 1)
            .filter((l) => !l.startsWith('curl') && !l.startsWith('$'))
            .join(''),
        ) as Record<string, unknown>;
        expect([line, Object.keys(got).sort()]).toEqual([line, Object.keys(doc).sort()]);
        if ('error' in doc) expect((got.error as { code: string }).code).toBe((doc.error as { code: string }).code);
        else expect([line, status]).toEqual([line, 200]);
      }
    }
  }
  expect(ran.length).toBeGreaterThanOrEqual(8);
});

it('the bus examples of docs/bus.md run against a node', async () => {
  for (const t of ['orders', 'dlq']) {
    const res = await fetch(`${node.url}/v1/bus/topics/${t}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', connection: 'close' },
      body: '{}',
    });
    expect(res.status).toBeLessThan(300);
  }
  const lines = shBlocks('docs/bus.md').find((b) => b.some((l) => l.includes('/v1/bus/subscriptions/billing/ack')))!;
  const curls = lines.filter((l) => l.startsWith('curl '));
  expect(curls.length).toBeGreaterThanOrEqual(6);
  for (const line of curls) {
    const { status, body } = await runCurl(line);
    // The ack runs after the stream was cut, so it gets the refusal the page names for that case.
    if (line.includes('/ack')) {
      expect([status, (JSON.parse(body) as { error: { code: string } }).error.code]).toEqual([
        409,
        'subscription_not_connected',
      ]);
      expect(line).toContain('subscription_not_connected');
      continue;
    }
    expect([line, status >= 200 && status < 300 ? 'ok' : `${status} ${body}`]).toEqual([line, 'ok']);
    if (line.includes('/stream')) expect(body).toContain('event: delivery');
  }
});
