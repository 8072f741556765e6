/**
 * The web console in a real browser: playwright-core drives Debian's
 * chromium against a real node (HTTP, storage, faces) started here, with a
 * machine processor and a pipe handler served by this test. Without
 * /usr/bin/chromium these tests fail (they never skip). Screenshots go to
 * test-output/ui/.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import { chromium, type Browser, type Page } from 'playwright-core';
import { buildConfig } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { registerUiRoutes, UI_DIR } from '../../src/api/http/ui-routes.js';
import { DIALECTS, createTestEnv, waitFor, type TestEnv } from '../support/env.js';
import { ROOT } from '../support/proc.js';

export const CHROMIUM = process.env.MILLRACE_CHROMIUM ?? '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SHOTS = join(ROOT, 'test-output', 'ui');

/** A local HTTP server answering JSON from `fn`. */
async function jsonServer(
  fn: (body: any) => { status: number; body?: unknown },
): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8').on('data', (d: string) => (raw += d));
    req.on('end', () => {
      const r = fn(raw ? JSON.parse(raw) : undefined);
      res
        .writeHead(r.status, { 'content-type': 'application/json' })
        .end(r.body === undefined ? '' : JSON.stringify(r.body));
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const a = server.address() as { port: number };
  return { server, url: `http://127.0.0.1:${a.port}/` };
}

/** Waits for `target`; an error banner showing up first fails the test with its text. */
async function waitOrBanner(page: Page, target: ReturnType<Page['locator']>): Promise<void> {
  const banner = page.locator('.banner.error').first();
  await Promise.race([
    target.waitFor(),
    banner.waitFor().then(async () => {
      throw new Error(`error banner instead: ${await banner.textContent()}`);
    }),
  ]);
}

async function http(
  base: string,
  path: string,
  method = 'GET',
  body?: unknown,
): Promise<{ status: number; json: any }> {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

describe('console static serving', () => {
  it('answers /ui with a how-to-build message when the console is not built, and the node still serves', async () => {
    const app = Fastify();
    await registerUiRoutes(app, join(tmpdir(), 'millrace-no-such-ui'));
    app.get('/healthz', async () => ({ ok: true }));
    for (const p of ['/ui', '/ui/', '/ui/assets/x.js']) {
      const r = await app.inject({ url: p });
      expect(r.statusCode).toBe(503);
      expect(r.body).toMatch(/console is not built.*npm run build/);
    }
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
    await app.close();
  });

  it('serves a built console under /ui/ and redirects /ui there', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'millrace-ui-'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>millrace console</title>');
    const app = Fastify();
    await registerUiRoutes(app, dir);
    const r = await app.inject({ url: '/ui' });
    expect(r.statusCode).toBe(302);
    expect(r.headers.location).toBe('/ui/');
    const page = await app.inject({ url: '/ui/' });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('millrace console');
    expect((await app.inject({ url: '/ui/nope.js' })).statusCode).toBe(404);
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('console in chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(
        `no browser at ${CHROMIUM}: install it (apt-get install -y chromium) — the console tests do not skip`,
      );
    // The node serves what `npm run build` produced; build it now so the test sees this source.
    execFileSync('npx', ['vite', 'build', '--config', 'ui/vite.config.ts'], { cwd: ROOT, stdio: 'pipe' });
    expect(existsSync(join(UI_DIR, 'index.html'))).toBe(true);
    mkdirSync(SHOTS, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
  });

  describe.each(DIALECTS)('%s', (dialect) => {
    let env: TestEnv;
    let node: Node;
    let page: Page;
    let base: string;
    const servers: Server[] = [];
    let processorBroken = true;
    let handlerOk = false;
    const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${dialect}-${name}.png`), fullPage: true });

    beforeAll(async () => {
      // Processor: a call with "break" fails the machine (500) while broken; repair answers once fixed.
      const processor = await jsonServer((req) => {
        if (req.kind === 'signal') return { status: 200, body: { events: [{ started: true }] } };
        if (req.kind === 'call')
          return req.args === 'break'
            ? { status: 500, body: { error: 'processor bug' } }
            : { status: 200, body: { response: 'ok', events: [{ called: req.args }] } };
        if (req.kind === 'repair')
          return processorBroken
            ? { status: 200, body: { repair_failed: { reason: 'still broken' } } }
            : { status: 200, body: { response: 'fixed', events: [{ repaired: true }] } };
        return { status: 400 };
      });
      // Pipe handler: fails every push until told otherwise, then finishes the session.
      const handler = await jsonServer(() =>
        handlerOk ? { status: 200, body: { action: 'delete' } } : { status: 500, body: { error: 'handler down' } },
      );
      servers.push(processor.server, handler.server);
      env = await createTestEnv(dialect, {
        extra: {
          machines: {
            examples: true,
            namespaces: {
              orders: { processor: { url: processor.url }, retry: { base_ms: 10, max_ms: 50 }, sink: 'main' },
            },
          },
          ledger: {
            accounts: {
              cash: { key: ['client_id', 'currency'], aux: ['product'], groupings: [['product']], scale: 2 },
            },
          },
          // "held" has no handler: its sessions stay where the client leaves them.
          pipe: {
            kinds: {
              payments: {
                handler: handler.url,
                max_repeats: 1,
                retry_base_s: 0.02,
                retry_max_s: 0.05,
                default_delay_s: 0.02,
                push_timeout_s: 5,
              },
              held: {},
            },
          },
          bus: { topics: ['orders'] },
        },
      });
      node = await startNode(buildConfig({ ...env.input, http: { host: '127.0.0.1', port: 0 } }));
      base = node.url;
      page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    }, 120_000);

    /** Opens a console URL in a fresh document: a hash-only change would keep the previous page's state (and its error banner). */
    async function visit(url: string): Promise<void> {
      await page.goto('about:blank');
      await page.goto(url);
    }

    afterAll(async () => {
      await page?.close();
      await node?.close();
      for (const s of servers) await new Promise((r) => s.close(r));
      await env?.cleanup();
    });

    it('opens the overview with the shards and shows a server error code in a banner', async () => {
      await visit(`${base}/ui/`);
      await page.locator('[data-testid=shards] td code', { hasText: 's0' }).first().waitFor();
      // The nodes on the storage: this one, marked, with its sessions on PostgreSQL.
      const me = page.locator('[data-testid=nodes] tbody tr', { hasText: env.config.node_id });
      await me.locator('[data-badge="this node"]').waitFor();
      expect(await me.locator('td').nth(1).innerText()).toMatch(
        dialect === 'postgres' ? /s0: \d+ \/ \d+ \/ 1 \/ \d+/ : /embedded/,
      );
      await shot('overview');
      await visit(`${base}/ui/#/machines?ns=nope&id=x`);
      const banner = page.locator('[data-testid=machine] .banner.error', { hasText: 'namespace_not_found' });
      await banner.waitFor();
      expect(await banner.locator('.code').textContent()).toBe('namespace_not_found');
    });

    it('lists the event sinks over HTTP', async () => {
      expect((await http(base, '/v1/sinks')).json).toEqual({
        items: [{ name: 'main', namespaces: ['orders'] }],
        next_cursor: null,
      });
    });

    it('repairs a failed machine from the UI and shows it working', async () => {
      expect((await http(base, '/v1/namespaces/orders/machines/m-1/start', 'POST', { args: null })).status).toBe(200);
      const call = await http(base, '/v1/namespaces/orders/machines/m-1/call', 'POST', { args: 'break' });
      expect(call.status).toBeGreaterThanOrEqual(400);
      expect((await http(base, '/v1/namespaces/orders/machines/m-1')).json.status).toBe('failed');

      // Found through the list of failed machines, with its reason.
      await visit(`${base}/ui/#/machines?ns=orders&status=failed`);
      const listed = page.locator('[data-testid=machines] tbody tr', { hasText: 'm-1' });
      await waitOrBanner(page, listed);
      await listed.locator('[data-badge=failed]').waitFor();
      expect(await listed.locator('.reason').textContent()).not.toBe('');
      await shot('machines-failed-list');
      await listed.getByRole('link', { name: 'm-1' }).click();
      const panel = page.locator('[data-testid=machine]');
      await panel.locator('h2 [data-badge=failed]').waitFor();
      // While the processor cannot repair, the UI shows the server's refusal code.
      await panel.getByRole('button', { name: 'Repair', exact: true }).click();
      await panel.locator('.banner.error .code', { hasText: 'repair_failed' }).waitFor();
      await shot('machine-failed');

      processorBroken = false;
      await panel.getByRole('button', { name: 'Repair', exact: true }).click();
      await panel.locator('h2 [data-badge=working]').waitFor();
      await panel.locator('[data-testid=history] td', { hasText: 'repaired' }).first().waitFor();
      // The failed list no longer shows it, and a working machine offers no repair.
      await listed.waitFor({ state: 'detached' });
      expect(await panel.getByRole('button', { name: 'Repair', exact: true }).isDisabled()).toBe(true);
      expect(await panel.getByRole('button', { name: 'Simple repair' }).isDisabled()).toBe(true);
      await shot('machine-repaired');
      expect((await http(base, '/v1/namespaces/orders/machines/m-1')).json.status).toBe('working');
    });

    it("tails a sink's machine events live, and names an unknown sink by its error code", async () => {
      await visit(`${base}/ui/#/sinks`);
      await page.getByRole('link', { name: 'main' }).click();
      const rows = page.locator('[data-testid=sink-events] tbody tr', { hasText: 'm-1' });
      await rows.nth(1).waitFor();
      // A new event arrives over the open stream.
      expect((await http(base, '/v1/namespaces/orders/machines/m-2/start', 'POST', { args: null })).status).toBe(200);
      await page.locator('[data-testid=sink-events] tbody tr', { hasText: 'm-2' }).waitFor();
      await shot('sink-tail');
      await visit(`${base}/ui/#/sinks?sink=nope`);
      await page.locator('.banner.error .code', { hasText: 'sink_not_found' }).waitFor();
    });

    it('shows the balance and turnover of a typed account', async () => {
      const account = { type: 'cash', attrs: { client_id: 'c1', currency: 'RUB', product: 'taxi' } };
      const batch = await http(base, '/v1/ledger/batches', 'POST', {
        idempotency_key: 'ui-1',
        dt_default: '2026-01-05T10:00:00Z',
        events: [
          { account, side: 'debit', amount: '12.34' },
          { account, side: 'credit', amount: '2.30' },
        ],
      });
      expect(batch.status).toBe(200);
      await visit(`${base}/ui/#/ledger`);
      const form = page.locator('form.filters');
      // The type is a free input until GET /v1/ledger/types answers, then a list of them.
      await form.locator('select[name=type]').waitFor();
      await form.locator('[name=type]').selectOption('cash'); // offered from GET /v1/ledger/types
      await form.locator('[name=key]').fill('{"client_id":"c1","currency":"RUB"}');
      await form.locator('[name=group_by]').fill('product');
      await form.locator('[name=dt_from]').fill('2026-01-01T00:00:00Z');
      await form.locator('[name=dt]').fill('2026-02-01T00:00:00Z');
      await form.getByRole('button', { name: 'Show' }).click();
      const bal = page.locator('[data-testid=balances] tbody tr', { hasText: 'product=taxi' });
      await waitOrBanner(page, bal);
      expect((await bal.locator('td').allTextContents()).slice(1)).toEqual(['12.34', '2.30']);
      const turn = page.locator('[data-testid=turnovers] tbody tr', { hasText: 'product=taxi' });
      expect((await turn.locator('td').allTextContents()).slice(1)).toEqual(['0.00', '0.00', '12.34', '2.30']);
      await shot('ledger');
      // A key attribute missing: the server's code in the banner.
      await form.locator('[name=key]').fill('{"client_id":"c1"}');
      await form.getByRole('button', { name: 'Show' }).click();
      await page.locator('.banner.error .code').waitFor();
      expect(await page.locator('.banner.error .code').textContent()).not.toBe('client_error');
    });

    it('simple-repairs a failed machine, then removes it, from the UI', async () => {
      expect((await http(base, '/v1/namespaces/orders/machines/m-3/start', 'POST', { args: null })).status).toBe(200);
      expect(
        (await http(base, '/v1/namespaces/orders/machines/m-3/call', 'POST', { args: 'break' })).status,
      ).toBeGreaterThanOrEqual(400);
      await visit(`${base}/ui/#/machines?ns=orders&id=m-3`);
      const panel = page.locator('[data-testid=machine]');
      await panel.locator('h2 [data-badge=failed]').waitFor();
      await panel.getByRole('button', { name: 'Simple repair' }).click();
      await panel.locator('h2 [data-badge=working]').waitFor();
      expect((await http(base, '/v1/namespaces/orders/machines/m-3')).json.status).toBe('working');
      page.once('dialog', (d) => void d.accept());
      await panel.getByRole('button', { name: 'Remove' }).click();
      await panel.waitFor({ state: 'detached' });
      expect((await http(base, '/v1/namespaces/orders/machines/m-3')).json.error.code).toBe('machine_not_found');
    });

    it('deletes one pipe dead letter and redrives another from the UI, and sees them go', async () => {
      const dead: string[] = [];
      for (const rec of ['pay 10', 'pay 20']) {
        const open = await http(base, '/v1/pipe/sessions', 'POST', { kind: 'payments' });
        expect(open.status).toBe(201);
        const id = open.json.id as string;
        expect(
          (await http(base, `/v1/pipe/sessions/${id}/append`, 'POST', { record: Buffer.from(rec).toString('base64') }))
            .status,
        ).toBe(200);
        expect((await http(base, `/v1/pipe/sessions/${id}/store`, 'POST', { timeout_s: 0 })).status).toBe(200);
        dead.push(id);
      }
      for (const id of dead)
        await waitFor(
          async () => (await http(base, `/v1/pipe/dead-letters/${id}`)).status === 200,
          30_000,
          'the session to be dead-lettered',
        );
      const [gone, redriven] = dead as [string, string];

      await visit(`${base}/ui/#/pipe?kind=payments`);
      const rowOf = (id: string) => page.locator('[data-testid=dead-letters] tbody tr', { hasText: id });
      await rowOf(gone).waitFor();
      await rowOf(redriven).waitFor();
      await shot('dead-letters');

      page.once('dialog', (d) => void d.accept());
      await rowOf(gone).getByRole('button', { name: 'Delete' }).click();
      await rowOf(gone).waitFor({ state: 'detached' });
      expect((await http(base, `/v1/pipe/dead-letters/${gone}`)).json.error.code).toBe('dead_letter_not_found');

      handlerOk = true;
      await rowOf(redriven).getByRole('button', { name: 'Redrive' }).click();
      await page.locator('.banner.ok', { hasText: `redriven ${redriven}` }).waitFor();
      await rowOf(redriven).waitFor({ state: 'detached' });
      // Redriven, pushed again, and finished by the handler.
      await waitFor(
        async () => (await http(base, `/v1/pipe/sessions/${redriven}`)).status === 404,
        30_000,
        'the handler to finish the session',
      );
      expect((await http(base, `/v1/pipe/dead-letters/${redriven}`)).json.error.code).toBe('dead_letter_not_found');
      await page.locator('[data-testid=dead-letters] td.empty').waitFor();
      await shot('dead-letter-redriven');
    });

    it('lists pipe sessions of a kind, filtered by state, with their record counts', async () => {
      const openId = (await http(base, '/v1/pipe/sessions', 'POST', { kind: 'held' })).json.id as string;
      for (const rec of ['a', 'b'])
        expect(
          (
            await http(base, `/v1/pipe/sessions/${openId}/append`, 'POST', {
              record: Buffer.from(rec).toString('base64'),
            })
          ).status,
        ).toBe(200);
      const storedId = (await http(base, '/v1/pipe/sessions', 'POST', { kind: 'held' })).json.id as string;
      expect(
        (
          await http(base, `/v1/pipe/sessions/${storedId}/append`, 'POST', {
            record: Buffer.from('c').toString('base64'),
          })
        ).status,
      ).toBe(200);
      expect((await http(base, `/v1/pipe/sessions/${storedId}/store`, 'POST', { timeout_s: 3600 })).status).toBe(200);

      await visit(`${base}/ui/#/pipe?kind=held`);
      const rows = page.locator('[data-testid=sessions] tbody tr');
      const rowOf = (id: string) => rows.filter({ hasText: id });
      await rowOf(openId).waitFor();
      await rowOf(storedId).waitFor();
      expect(await rows.count()).toBe(2);
      // Columns: session, kind, state, records, due, updated.
      expect(await rowOf(openId).locator('td').nth(2).innerText()).toBe('open');
      expect(await rowOf(openId).locator('td').nth(3).innerText()).toBe('2');
      expect(await rowOf(storedId).locator('td').nth(2).innerText()).toBe('stored');

      await page.selectOption('select[name=state]', 'stored');
      await rowOf(openId).waitFor({ state: 'detached' });
      expect(await rows.count()).toBe(1);
      expect(await rowOf(storedId).locator('td').nth(3).innerText()).toBe('1');
      await shot('sessions-stored');

      await page.selectOption('select[name=state]', 'open');
      await rowOf(storedId).waitFor({ state: 'detached' });
      await rowOf(openId).waitFor();
      expect(await rows.count()).toBe(1);
    });

    it("shows a bus subscription's lag fall as its consumer acks", async () => {
      expect(
        (
          await http(base, '/v1/bus/subscriptions/billing', 'PUT', {
            topics: ['orders'],
            start: 'earliest',
            dead_letter_topic: 'orders',
          })
        ).status,
      ).toBe(201);
      const events = Array.from({ length: 20 }, (_, i) => ({
        id: `o-${i}`,
        key: `c-${i % 3}`,
        type: 'created',
        data: { n: i },
      }));
      expect((await http(base, '/v1/bus/topics/orders/events', 'POST', { events })).status).toBe(200);

      await visit(`${base}/ui/#/bus`);
      const lagCell = page.getByTestId('lag-billing');
      await lagCell.waitFor();
      const lagOf = async () => Number(await lagCell.textContent());
      await waitFor(async () => (await lagOf()) >= 20, 10_000, 'the lag to show the published events');
      const before = await lagOf();
      await shot('subscription-lagging');

      // A consumer over server-sent events: takes all 20 deliveries and acks them.
      const abort = new AbortController();
      const res = await fetch(`${base}/v1/bus/subscriptions/billing/stream`, { signal: abort.signal });
      expect(res.status).toBe(200);
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      const ids: string[] = [];
      let buf = '';
      while (ids.length < 20) {
        const { value, done } = await reader.read();
        if (done) throw new Error('stream ended early');
        buf += value;
        for (const m of buf.matchAll(/^event: delivery\ndata: (.*)$/gm)) {
          const d = JSON.parse(m[1]!) as { delivery_id: string };
          if (!ids.includes(d.delivery_id)) ids.push(d.delivery_id);
        }
      }
      await page.locator('[data-testid=subscriptions] [data-badge=connected]').waitFor();
      const ack = await http(base, '/v1/bus/subscriptions/billing/ack', 'POST', { ids });
      expect(ack.json.acked).toBe(20);
      await waitFor(async () => (await lagOf()) <= before - 20, 15_000, 'the lag shown to fall');
      await shot('subscription-caught-up');
      abort.abort();
      // Cancelling a stream that has already ended or failed is a no-op.
      await reader.cancel().catch(() => {});
    });

    it('publishes an event from the Bus page: the answer names its position, a repeated id is a duplicate, and the lag rises', async () => {
      await visit(`${base}/ui/#/bus`);
      const lagCell = page.getByTestId('lag-billing');
      await lagCell.waitFor();
      const before = Number(await lagCell.textContent());
      const form = page.getByTestId('publish');
      await form.locator('select[name=topic]').selectOption('orders');
      await form.locator('input[name=key]').fill('c-ui');
      await form.locator('input[name=type]').fill('created');
      await form.locator('input[name=id]').fill('ui-1');
      await form.locator('textarea[name=data]').fill('{"from": "console"}');
      await form.getByRole('button', { name: 'Publish' }).click();
      const published = await form.locator('.banner.ok', { hasText: 'published at' }).textContent();
      const at = /published at (\S+):(\d+)/.exec(published ?? '');
      expect(at).not.toBeNull();
      await waitFor(
        async () => Number(await lagCell.textContent()) === before + 1,
        10_000,
        'the lag to count the published event',
      );
      await form.getByRole('button', { name: 'Publish' }).click();
      await form.locator('.banner.ok', { hasText: `duplicate of the event at ${at![1]}:${at![2]}` }).waitFor();
      // Bad JSON is refused in the page; nothing is sent.
      await form.locator('textarea[name=data]').fill('{nope');
      await form.locator('input[name=id]').fill('ui-2');
      await form.getByRole('button', { name: 'Publish' }).click();
      await form.locator('.banner.error', { hasText: 'not valid JSON' }).waitFor();
      expect(Number(await lagCell.textContent())).toBe(before + 1);
      await shot('bus-published');
    });

    it('creates a subscription from the Bus page, refuses one on an unknown topic with its code, and deletes it', async () => {
      await visit(`${base}/ui/#/bus`);
      const form = page.getByTestId('new-subscription');
      await form.locator('input[name=name]').fill('ui-sub');
      await form.locator('input[name=topics]').fill('nope');
      await form.getByRole('button', { name: 'Create' }).click();
      const refused = await form.locator('.banner.error .code').textContent();
      expect(refused).toMatch(/not_found|bad_request/);
      expect((await http(base, '/v1/bus/subscriptions/ui-sub')).status).toBe(404);

      await form.locator('input[name=topics]').fill('orders');
      await form.locator('select[name=start]').selectOption('earliest');
      await form.getByRole('button', { name: 'Create' }).click();
      await form.locator('.banner.ok', { hasText: 'subscription ui-sub saved' }).waitFor();
      const row = page.locator('[data-testid=subscriptions] tbody tr', { hasText: 'ui-sub' });
      await row.waitFor();
      // From the earliest position it has everything on the topic ahead of it.
      await waitFor(
        async () => Number(await page.getByTestId('lag-ui-sub').textContent()) > 0,
        10_000,
        'the new subscription to show its lag',
      );
      expect((await http(base, '/v1/bus/subscriptions/ui-sub')).json.config.topics).toEqual(['orders']);
      await shot('subscription-created');

      page.once('dialog', (d) => void d.accept());
      await row.getByRole('button', { name: 'Delete' }).click();
      await row.waitFor({ state: 'detached' });
      expect((await http(base, '/v1/bus/subscriptions/ui-sub')).json.error.code).toBe('subscription_not_found');
    });

    it('defines a topic, a namespace and a pipe kind from the console; bad or config-owned definitions show their error code and store nothing', async () => {
      await visit(`${base}/ui/#/definitions`);
      const topics = page.getByTestId('defs-topics');
      const namespaces = page.getByTestId('defs-namespaces');
      const kinds = page.getByTestId('defs-kinds');
      // The config file's topic is listed, and offers no delete.
      const orders = topics.locator('tbody tr', { hasText: 'orders' });
      await orders.locator('[data-badge=config]').waitFor();
      expect(await orders.getByRole('button', { name: 'Delete' }).count()).toBe(0);

      await topics.locator('input[name=name]').fill('ui-topic');
      await topics.locator('textarea[name=definition]').fill('{"description": "from the console"}');
      await topics.getByRole('button', { name: 'Save' }).click();
      await topics.locator('tbody tr', { hasText: 'ui-topic' }).locator('[data-badge=runtime]').waitFor();
      expect((await http(base, '/v1/bus/topics/ui-topic')).status).toBe(200);

      // A topic of the config file cannot be redefined here.
      await topics.locator('input[name=name]').fill('orders');
      await topics.getByRole('button', { name: 'Save' }).click();
      await topics.locator('.banner.error .code', { hasText: 'defined_in_config' }).waitFor();

      // A namespace with the built-in example processor: its machines work at once.
      await namespaces.locator('input[name=name]').fill('ui-counters');
      await namespaces.getByRole('button', { name: 'Save' }).click();
      await namespaces.locator('tbody tr', { hasText: 'ui-counters' }).waitFor();
      expect((await http(base, '/v1/namespaces/ui-counters/machines/c1/start', 'POST', { args: 5 })).status).toBe(200);

      // A bad kind: the server's code in a banner, and nothing stored.
      await kinds.locator('input[name=name]').fill('bad-kind');
      await kinds.locator('textarea[name=definition]').fill('{"handler": "not a url"}');
      await kinds.getByRole('button', { name: 'Save' }).click();
      await kinds.locator('.banner.error .code', { hasText: 'bad_request' }).waitFor();
      expect((await http(base, '/v1/pipe/kinds/bad-kind')).status).toBe(404);
      await shot('definitions');

      page.once('dialog', (d) => void d.accept());
      await topics.locator('tbody tr', { hasText: 'ui-topic' }).getByRole('button', { name: 'Delete' }).click();
      await topics.locator('tbody tr', { hasText: 'ui-topic' }).waitFor({ state: 'detached' });
      expect((await http(base, '/v1/bus/topics/ui-topic')).status).toBe(404);

      // The new namespace's machines can be started and called from the Machines page.
      await visit(`${base}/ui/#/machines?ns=ui-counters&id=c2`);
      const panel = page.locator('[data-testid=machine]');
      await panel.locator('.banner', { hasText: 'No machine c2' }).waitFor();
      await panel.locator('input[name=args]').fill('10');
      await panel.getByRole('button', { name: 'Start' }).click();
      await panel.locator('h2 [data-badge=working]').waitFor();
      await panel.locator('input[name=args]').fill('5');
      await panel.getByRole('button', { name: 'Call' }).click();
      await panel.locator('.banner.ok', { hasText: 'response: {"count":15}' }).waitFor();
      // A call the processor cannot take fails the machine; the page says why and offers the repairs.
      await panel.locator('input[name=args]').fill('"x"');
      await panel.getByRole('button', { name: 'Call' }).click();
      await panel.locator('h2 [data-badge=failed]').waitFor();
      expect(await panel.getByRole('button', { name: 'Call' }).isDisabled()).toBe(true);
      expect(await panel.getByRole('button', { name: 'Simple repair' }).isDisabled()).toBe(false);
      await shot('machine-started-called');
      const h = (await http(base, '/v1/namespaces/ui-counters/machines/c2')).json;
      expect(h.status).toBe('failed');
      expect(h.history.map((e: { data: unknown }) => e.data)).toEqual([{ set: 10 }, { added: 5 }]);
    });

    it('opens Machines on a table of namespaces with totals, working, failed and step rates, and pauses and resumes one', async () => {
      await visit(`${base}/ui/#/machines`);
      const row = page.locator('[data-testid=namespaces] tbody tr', { hasText: 'orders' }).first();
      await waitOrBanner(page, row);
      const counts = (await http(base, '/v1/namespaces')).json.items.find((n: { name: string }) => n.name === 'orders')
        .machines as { total: number; failed: number };
      await waitFor(
        async () => (await row.locator('[data-col=total]').innerText()) === String(counts.total),
        10_000,
        'the total to show',
      );
      expect(await row.locator('[data-col=working]').innerText()).toBe(String(counts.total - counts.failed));
      expect(await row.locator('[data-col=failed]').innerText()).toBe(String(counts.failed));
      // Steps ran on this node in "orders" (the tests above): its rate column is a number.
      expect(Number.isFinite(Number(await row.locator('[data-col=rate]').innerText()))).toBe(true);
      await shot('namespaces');
      await row.getByRole('button', { name: 'Pause' }).click();
      await row.locator('[data-col=paused] [data-badge=paused]').waitFor();
      expect((await http(base, '/v1/pauses')).json.items).toContainEqual(
        expect.objectContaining({ kind: 'namespace', name: 'orders' }),
      );
      // While paused, calls are refused with the retryable code.
      expect((await http(base, '/v1/namespaces/orders/machines/m-2/call', 'POST', { args: 1 })).json.error.code).toBe(
        'paused',
      );
      await row.getByRole('button', { name: 'Resume' }).click();
      await row.locator('[data-col=paused] [data-badge=paused]').waitFor({ state: 'detached' });
      expect(
        (await http(base, '/v1/pauses')).json.items.filter((p: { kind: string }) => p.kind === 'namespace'),
      ).toEqual([]);

      // One machine: paused from its panel, and counted in its namespace's row.
      await visit(`${base}/ui/#/machines?ns=orders&id=m-2`);
      const panel = page.locator('[data-testid=machine]');
      await waitOrBanner(page, panel.getByRole('button', { name: 'Pause' }));
      await panel.getByRole('button', { name: 'Pause' }).click();
      await panel.locator('h2 [data-badge=paused]').waitFor();
      expect((await http(base, '/v1/namespaces/orders/machines/m-2')).json.paused).toBe(true);
      await visit(`${base}/ui/#/machines`);
      await row.locator('[data-col=paused]', { hasText: '1 machine' }).waitFor();
      await visit(`${base}/ui/#/machines?ns=orders&id=m-2`);
      await panel.getByRole('button', { name: 'Resume' }).click();
      await panel.locator('h2 [data-badge=paused]').waitFor({ state: 'detached' });
      expect((await http(base, '/v1/namespaces/orders/machines/m-2')).json.paused).toBeFalsy();

      // A pipe kind: its pushes paused from the Pipe page.
      await visit(`${base}/ui/#/pipe`);
      const kind = page.locator('[data-testid=kinds] tbody tr', { hasText: 'held' });
      await waitOrBanner(page, kind.getByRole('button', { name: 'Pause' }));
      await kind.getByRole('button', { name: 'Pause' }).click();
      await kind.locator('[data-badge=paused]').waitFor();
      expect((await http(base, '/v1/pauses')).json.items).toContainEqual(
        expect.objectContaining({ kind: 'pipe_kind', name: 'held' }),
      );
      await kind.getByRole('button', { name: 'Resume' }).click();
      await kind.locator('[data-badge=paused]').waitFor({ state: 'detached' });
      expect((await http(base, '/v1/pauses')).json.items).toEqual([]);
    });

    it("draws the node's rate, lag and p99 charts from its sampled counters", async () => {
      await visit(`${base}/ui/#/activity`);
      for (const id of ['chart-rates', 'chart-lag', 'chart-p99']) {
        const chart = page.getByTestId(id);
        await waitOrBanner(page, chart.locator('canvas'));
        // At least two samples (one interval) drawn.
        await waitFor(
          async () => Number(await chart.getAttribute('data-points')) >= 2,
          20_000,
          `${id} to have two samples`,
        );
      }
      const legend = (await page.getByTestId('chart-rates').locator('.u-legend').textContent()) ?? '';
      for (const label of ['publish', 'deliver', 'call', 'step', 'push']) expect(legend).toContain(label);
      // The node's own series: the events and steps of the tests above were counted.
      const s = (await http(base, '/v1/metrics/series')).json as { series: Record<string, Array<number | null>> };
      expect(s.series.publish_per_s!.some((v) => (v ?? 0) > 0)).toBe(true);
      await shot('activity');
    });

    it("browses a topic's events by key and type, a page at a time", async () => {
      await visit(`${base}/ui/#/topics?topic=orders&limit=5`);
      const rows = page.locator('[data-testid=topic-events] tbody tr');
      await waitOrBanner(page, rows.nth(4));
      expect(await rows.count()).toBe(5);
      const firstPage = await rows.allInnerTexts();
      await page.getByRole('button', { name: 'Next' }).click();
      await page.getByTestId('page-number').filter({ hasText: 'page 2' }).waitFor();
      await waitFor(
        async () => JSON.stringify(await rows.allInnerTexts()) !== JSON.stringify(firstPage),
        10_000,
        'the second page',
      );
      await page.getByRole('button', { name: 'Previous' }).click();
      await page.getByTestId('page-number').filter({ hasText: 'page 1' }).waitFor();
      // By key: the events of one key only (the lag test published c-0, c-1, c-2).
      const filters = page.getByTestId('topic-filters');
      await filters.locator('input[name=key]').fill('c-1');
      await filters.locator('input[name=type]').fill('created');
      await filters.getByRole('button', { name: 'Show' }).click();
      await page.waitForURL(/key=c-1/);
      await waitFor(
        async () => {
          const keys = await rows.locator('td:nth-child(2)').allInnerTexts();
          return keys.length > 0 && keys.every((k) => k === 'c-1');
        },
        10_000,
        'only key c-1',
      );
      const types = await rows.locator('td:nth-child(3)').allInnerTexts();
      expect(new Set(types)).toEqual(new Set(['created']));
      const byHttp = (await http(base, '/v1/bus/topics/orders/events?key=c-1&type=created&limit=5')).json
        .items as Array<{ pos: number }>;
      expect(await rows.locator('td:first-child').allInnerTexts()).toEqual(
        byHttp.map((e) => expect.stringContaining(`:${e.pos}`)),
      );
      await shot('topic-events');
      // An unknown topic: the server's code.
      await visit(`${base}/ui/#/topics?topic=nope`);
      await page.locator('.banner.error .code', { hasText: 'topic_not_found' }).waitFor();
    });

    it('lists the accounts of a ledger type with their balances, then the events of one', async () => {
      await visit(`${base}/ui/#/ledger`);
      await page.locator('select[name=browse_type] option', { hasText: 'cash' }).waitFor({ state: 'attached' });
      await page.locator('select[name=browse_type]').selectOption('cash');
      const row = page.locator('[data-testid=account-list] tbody tr', { hasText: 'client_id=c1' });
      await waitOrBanner(page, row);
      expect((await row.locator('td').allInnerTexts()).slice(1)).toEqual(['12.34', '2.30']);
      await row.getByRole('link').click();
      const events = page.locator('[data-testid=account-events] tbody tr');
      await waitOrBanner(page, events.nth(1));
      expect(await events.count()).toBe(2);
      expect((await events.locator('td:nth-child(3)').allInnerTexts()).sort()).toEqual(['12.34', '2.30']);
      await shot('ledger-accounts');
    });

    it('creates a schedule from the console and sees it fire', async () => {
      await visit(`${base}/ui/#/schedules`);
      const form = page.getByTestId('new-schedule');
      await form.locator('input[name=name]').fill('ui-tick');
      await form.locator('input[name=spec]').fill('1000');
      await form
        .locator('textarea[name=action]')
        .fill('{"publish": {"topic": "orders", "key": "ticks", "type": "tick", "data": {"at": "{{fire_time}}"}}}');
      await form.getByRole('button', { name: 'Save' }).click();
      await waitOrBanner(page, page.locator('[data-testid=schedules] tbody tr', { hasText: 'ui-tick' }));
      // Its page: the next fire times, then a fire done.
      await page.locator('[data-testid=next-fires] tbody tr').nth(2).waitFor();
      await page.locator('[data-testid=fires] [data-badge=done]').first().waitFor({ timeout: 30_000 });
      await shot('schedule-fired');
      const fires = (await http(base, '/v1/schedules/ui-tick/fires')).json.items as Array<{ status: string }>;
      expect(fires.some((f) => f.status === 'done')).toBe(true);
      // What it fired is on the topic.
      expect((await http(base, '/v1/bus/topics/orders/events?key=ticks&type=tick')).json.items.length).toBeGreaterThan(
        0,
      );
      // Pause it from its row; the schedule says so.
      const row = page.locator('[data-testid=schedules] tbody tr', { hasText: 'ui-tick' });
      await row.getByRole('button', { name: 'Pause' }).click();
      await row.locator('[data-badge=paused]').waitFor();
      expect((await http(base, '/v1/schedules/ui-tick')).json.paused).toBe(true);
      // A bad spec: the server's code, and nothing stored.
      await form.locator('input[name=name]').fill('ui-bad');
      await form.locator('input[name=spec]').fill('10');
      await form.getByRole('button', { name: 'Save' }).click();
      await form.locator('.banner.error .code').waitFor();
      expect((await http(base, '/v1/schedules/ui-bad')).status).toBe(404);
      page.once('dialog', (d) => void d.accept());
      await row.getByRole('button', { name: 'Delete' }).click();
      await row.waitFor({ state: 'detached' });
    });

    it('runs a bulk repair of failed machines and watches its progress reach 100%', async () => {
      processorBroken = false;
      const ids = ['bulk-1', 'bulk-2', 'bulk-3', 'bulk-4'];
      for (const id of ids) {
        expect((await http(base, `/v1/namespaces/orders/machines/${id}/start`, 'POST', { args: null })).status).toBe(
          200,
        );
        expect(
          (await http(base, `/v1/namespaces/orders/machines/${id}/call`, 'POST', { args: 'break' })).status,
        ).toBeGreaterThanOrEqual(400);
      }
      await visit(`${base}/ui/#/bulk?ns=orders`);
      const form = page.getByTestId('new-bulk-job');
      await form.locator('select[name=ns] option', { hasText: 'orders' }).first().waitFor({ state: 'attached' });
      await form.locator('select[name=ns]').selectOption('orders');
      await form.locator('select[name=status]').selectOption('failed');
      await form.locator('input[name=id_prefix]').fill('bulk-');
      await form.locator('select[name=op]').selectOption('repair');
      await form.locator('input[name=args]').fill('{"fix": true}');
      await form.locator('input[name=rate_per_s]').fill('2');
      await form.getByRole('button', { name: 'Count matches' }).click();
      await form.locator('.banner.ok', { hasText: '4 machines match' }).waitFor();
      await form.getByRole('button', { name: 'Start' }).click();
      const started = await form.locator('.banner.ok', { hasText: 'started job' }).textContent();
      const id = /started job (\S+) over 4/.exec(started ?? '')?.[1];
      expect(id).toBeDefined();
      const bar = page.getByTestId(`progress-${id}`);
      await waitOrBanner(page, bar);
      await waitFor(
        async () => (await bar.getAttribute('data-progress')) === '100',
        30_000,
        'the progress to reach 100%',
      );
      const row = page.locator('[data-testid=bulk-jobs] tbody tr', { hasText: id! });
      await row.locator('[data-badge=done]').waitFor();
      expect((await row.locator('td').allInnerTexts()).slice(5, 8)).toEqual(['4', '4', '0']);
      await shot('bulk-done');
      for (const m of ids)
        expect((await http(base, `/v1/namespaces/orders/machines/${m}`)).json.status).toBe('working');
    });

    it('cancels a running bulk job from the console', async () => {
      const ids = Array.from({ length: 15 }, (_, i) => `slow-${i}`);
      for (const id of ids)
        expect((await http(base, `/v1/namespaces/orders/machines/${id}/start`, 'POST', { args: null })).status).toBe(
          200,
        );
      // One target a second: the job is still running when the button is pressed.
      const job = await http(base, '/v1/namespaces/orders/bulk-jobs', 'POST', {
        filter: { id_prefix: 'slow-' },
        action: { op: 'notify', args: 1 },
        rate_per_s: 1,
      });
      expect(job.status).toBe(202);
      await visit(`${base}/ui/#/bulk`);
      const row = page.locator('[data-testid=bulk-jobs] tbody tr', { hasText: job.json.id });
      await waitOrBanner(page, row.getByRole('button', { name: 'Cancel' }));
      await row.getByRole('button', { name: 'Cancel' }).click();
      await row.locator('[data-badge=cancelled]').waitFor();
      const after = (await http(base, `/v1/bulk-jobs/${job.json.id}`)).json as {
        status: string;
        succeeded: number;
        total: number;
      };
      expect(after.status).toBe('cancelled');
      expect(after.succeeded).toBeLessThan(after.total);
    });

    it('pauses a subscription from the Bus page: what is published meanwhile is delivered after the resume', async () => {
      await visit(`${base}/ui/#/bus`);
      const row = page.locator('[data-testid=subscriptions] tbody tr', { hasText: 'billing' });
      await waitOrBanner(page, row.getByRole('button', { name: 'Pause' }));
      await row.getByRole('button', { name: 'Pause' }).click();
      await page.getByTestId('state-billing').locator('[data-badge=paused]').waitFor();
      expect((await http(base, '/v1/bus/subscriptions/billing')).json.paused).toBe(true);
      await shot('subscription-paused');
      expect(
        (
          await http(base, '/v1/bus/topics/orders/events', 'POST', {
            events: [{ id: 'while-paused', key: 'c-p', type: 'created', data: {} }],
          })
        ).status,
      ).toBe(200);
      // The Paused page lists it too.
      await visit(`${base}/ui/#/pauses`);
      await page.locator('[data-testid=pauses] tbody tr', { hasText: 'billing' }).waitFor();
      await visit(`${base}/ui/#/bus`);
      await row.getByRole('button', { name: 'Resume' }).click();
      await page.getByTestId('state-billing').locator('[data-badge=paused]').waitFor({ state: 'detached' });
      expect((await http(base, '/v1/bus/subscriptions/billing')).json.paused).toBe(false);
      // Its position was kept: a consumer now gets the event published while it was paused.
      const abort = new AbortController();
      const res = await fetch(`${base}/v1/bus/subscriptions/billing/stream`, { signal: abort.signal });
      expect(res.status).toBe(200);
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      while (!buf.includes('"id":"while-paused"')) {
        const { value, done } = await reader.read();
        if (done) throw new Error('stream ended early');
        buf += value;
      }
      abort.abort();
      // The stream was aborted just above: cancelling it rejects with that abort, which cannot matter here.
      await reader.cancel().catch((e: unknown) => expect((e as Error).name).toBe('AbortError'));
    });
  });
  describe('with authentication on (sqlite)', () => {
    const ADMIN = 'console-admin-token-0123456789';
    let env: TestEnv;
    let node: Node;
    let page: Page;
    beforeAll(async () => {
      env = await createTestEnv('sqlite', {
        extra: {
          machines: {
            examples: true,
            namespaces: { counters: { processor: { in_process: 'example.counter' }, sink: 'main' } },
          },
        },
      });
      node = await startNode(buildConfig({ ...env.input, http: { host: '127.0.0.1', port: 0 } }), {
        env: { MILLRACE_ADMIN_TOKEN: ADMIN },
      });
      page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    }, 120_000);
    afterAll(async () => {
      await page?.close();
      await node?.close();
      await env?.cleanup();
    });

    const token = async (name: string, permissions: string[]) => {
      const r = await fetch(`${node.url}/v1/auth/tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name, permissions }),
      });
      expect(r.status).toBe(201);
      return (await r.json()) as { id: string; token: string };
    };
    const stored = () =>
      page.evaluate(() =>
        (globalThis as unknown as { sessionStorage: { getItem(k: string): string | null } }).sessionStorage.getItem(
          'millrace.token',
        ),
      );
    async function signIn(t: string): Promise<void> {
      await page.goto('about:blank');
      await page.goto(`${node.url}/ui/`);
      const login = page.locator('[data-testid=login]');
      await login.waitFor();
      await login.locator('input[name=token]').fill(t);
      await login.getByRole('button', { name: 'Sign in' }).click();
    }

    it('asks for a token, keeps it in sessionStorage (not in the URL), and its API calls pass, the sink stream included', async () => {
      await page.goto('about:blank');
      await page.goto(`${node.url}/ui/`);
      // Without a token the console asks for one instead of showing refused pages.
      const login = page.locator('[data-testid=login]');
      await login.waitFor();
      expect(await page.locator('[data-testid=shards]').count()).toBe(0);
      await page.screenshot({ path: join(SHOTS, 'auth-login.png'), fullPage: true });
      // A wrong token is refused with the server's code, and the form stays.
      await login.locator('input[name=token]').fill('not-a-valid-token-at-all');
      await login.getByRole('button', { name: 'Sign in' }).click();
      await login.locator('.banner.error .code', { hasText: 'unauthenticated' }).waitFor();

      await signIn(ADMIN);
      await waitOrBanner(page, page.locator('[data-testid=shards] td code', { hasText: 's0' }).first());
      expect(await page.locator('[data-testid=whoami] code').textContent()).toBe('admin');
      expect(await stored()).toBe(ADMIN);
      expect(page.url()).not.toContain(ADMIN);
      // A reload keeps the session of the tab.
      await page.reload();
      await waitOrBanner(page, page.locator('[data-testid=shards] td code', { hasText: 's0' }).first());

      const started = await fetch(`${node.url}/v1/namespaces/counters/machines/c1/start`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ args: 1 }),
      });
      expect(started.status).toBe(200);
      await page.goto('about:blank');
      await page.goto(`${node.url}/ui/#/sinks?sink=main`);
      await waitOrBanner(page, page.locator('[data-testid=sink-events] td a', { hasText: 'c1' }).first());
      await page.screenshot({ path: join(SHOTS, 'auth-sink-stream.png'), fullPage: true });

      // Signing out forgets the token.
      await page.locator('[data-testid=whoami]').getByRole('button', { name: 'Sign out' }).click();
      await page.locator('[data-testid=login]').waitFor();
      expect(await stored()).toBeNull();
    });

    it('disables the actions the token lacks, and shows a refused action', async () => {
      const fetched = await fetch(`${node.url}/v1/namespaces/counters/machines/c2/start`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ args: 1 }),
      });
      expect(fetched.status).toBe(200);
      const reader = await token('ui-reader', [
        'machines:read:*',
        'machines:write:counters',
        'log:read',
        'bus:admin:*',
        'pipe:admin:*',
      ]);
      await signIn(reader.token);
      await page.locator('[data-testid=whoami] code', { hasText: `token:${reader.id}` }).waitFor();
      // No audit:read: no Audit page in the menu.
      expect(await page.locator('nav a', { hasText: 'Audit' }).count()).toBe(0);
      await page.goto('about:blank');
      await page.goto(`${node.url}/ui/#/machines?ns=counters&id=c2`);
      const panel = page.locator('[data-testid=machine]');
      await waitOrBanner(page, panel.locator('h2 [data-badge=working]'));
      const remove = panel.getByRole('button', { name: 'Remove' });
      expect(await remove.isDisabled()).toBe(true);
      expect(await remove.getAttribute('title')).toBe('your token lacks machines:repair:counters');
      // What it holds stays enabled.
      expect(await panel.getByRole('button', { name: 'Call' }).isDisabled()).toBe(false);
      await page.screenshot({ path: join(SHOTS, 'auth-disabled-actions.png'), fullPage: true });

      // The token is revoked while the page is open: the next action is refused by the node, and the page says so.
      expect(
        (
          await fetch(`${node.url}/v1/auth/tokens/${reader.id}`, {
            method: 'DELETE',
            headers: { authorization: `Bearer ${ADMIN}` },
          })
        ).status,
      ).toBe(204);
      await panel.locator('input[name=args]').fill('1');
      await panel.getByRole('button', { name: 'Call' }).click();
      await panel.locator('.banner.error .code', { hasText: 'unauthenticated' }).first().waitFor();
      await page.screenshot({ path: join(SHOTS, 'auth-refused-action.png'), fullPage: true });
      const h = await fetch(`${node.url}/v1/namespaces/counters/machines/c2`, {
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      expect(((await h.json()) as { history: unknown[] }).history).toHaveLength(1);
    });

    it('the Audit page lists an action done from the console', async () => {
      await signIn(ADMIN);
      await page.locator('[data-testid=whoami]').waitFor();
      await page.goto('about:blank');
      await page.goto(`${node.url}/ui/#/machines?ns=counters&id=c1`);
      const panel = page.locator('[data-testid=machine]');
      await waitOrBanner(page, panel.locator('h2 [data-badge=working]'));
      page.once('dialog', (d) => void d.accept());
      await panel.getByRole('button', { name: 'Remove' }).click();
      await page.goto('about:blank');
      await page.goto(`${node.url}/ui/#/audit`);
      const row = page
        .locator('[data-testid=audit] tbody tr', { hasText: '/v1/namespaces/counters/machines/c1' })
        .filter({ hasText: 'completed' });
      await waitOrBanner(page, row.first());
      expect(await row.first().innerText()).toMatch(/admin[\s\S]*machine\.remove/);
      await page.screenshot({ path: join(SHOTS, 'auth-audit.png'), fullPage: true });
    });
  });
});
