/**
 * The console's Shards page in a real browser (the setup of
 * test/ui/console.test.ts): a node with a source shard owning the whole hash
 * space and a spare, machines on the source; a refused split shows its error
 * code, a split started from the page runs to `done` and the ranges change.
 * Screenshots go to test-output/ui/.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { buildConfig } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { UI_DIR } from '../../src/api/http/ui-routes.js';
import { DIALECTS, createTestEnv, type TestEnv } from '../support/env.js';
import { ROOT } from '../support/proc.js';
import { withSpare } from '../support/split.js';

const CHROMIUM = process.env.MILLRACE_CHROMIUM ?? '/usr/bin/chromium';
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
/** A split waits out a grace period before its cleanup; under load everything is slower still. */
const LONG = 120_000;

describe('console shards page in chromium', () => {
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
    const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${dialect}-${name}.png`), fullPage: true });

    beforeAll(async () => {
      env = await createTestEnv(dialect, {
        shards: 2,
        extra: {
          machines: { examples: true, namespaces: { counters: { processor: { in_process: 'example.counter' } } } },
        } as never,
      });
      node = await startNode(buildConfig({ ...withSpare(env), http: { host: '127.0.0.1', port: 0 } }), { env: {} });
      for (let i = 0; i < 20; i++) {
        const r = await fetch(`${node.url}/v1/namespaces/counters/machines/c${i}/start`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ args: 1 }),
        });
        expect(r.status).toBe(200);
      }
      page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    }, 120_000);
    afterAll(async () => {
      await page?.close();
      await node?.close();
      await env?.cleanup();
    });

    const ZERO = '0'.repeat(40);
    const EIGHT = '8' + '0'.repeat(39);
    const row = (shard: string) =>
      page.locator('[data-testid=shard-ranges] tbody tr', { has: page.locator(`[data-shard="${shard}"]`) });

    it(
      'shows ranges, epochs, sizes and the spare; a refused split shows split_invalid and changes nothing',
      async () => {
        await page.goto(`${node.url}/ui/#/shards`);
        await row('s0').locator(`[data-range="${ZERO}-end"]`).waitFor();
        await row('s1').locator('[data-badge=spare]').waitFor();
        expect(await row('s1').locator('td').nth(1).innerText()).toBe('none');
        // The size column shows what GET /v1/shards reports.
        const before = (await (await fetch(`${node.url}/v1/shards`)).json()) as {
          shards: Array<{ name: string; events: number; epoch: number }>;
        };
        expect(before.shards[0]!.events).toBeGreaterThanOrEqual(20);
        await expect
          .poll(async () => Number(await row('s0').locator('td').nth(3).innerText()), { timeout: 60_000 })
          .toBeGreaterThanOrEqual(before.shards[0]!.events);
        await page.locator('[data-testid=splits] td.empty').waitFor();

        // Hash 0 is not strictly inside s0's range: refused, with the server's code.
        await page.locator('select[name=source]').selectOption('s0');
        await page.locator('input[name=at]').fill('0');
        await page.locator('input[name=target]').fill('s1');
        await page.getByRole('button', { name: 'Split', exact: true }).click();
        await page.locator('.banner.error .code', { hasText: 'split_invalid' }).waitFor();
        await shot('shards-refused');
        const after = (await (await fetch(`${node.url}/v1/shards`)).json()) as {
          shards: Array<{ ranges: unknown[] }>;
          splits: unknown[];
        };
        expect(after.splits).toEqual([]);
        expect(after.shards.map((s) => s.ranges.length)).toEqual([1, 0]);
      },
      LONG,
    );

    it(
      'starts a split from the page, watches it reach done and shows the moved range on the spare',
      async () => {
        await page.goto('about:blank');
        await page.goto(`${node.url}/ui/#/shards`);
        await row('s0').waitFor();
        await page.locator('input[name=at]').fill('8');
        // The target defaults to the first spare.
        await page.getByRole('button', { name: 'Split', exact: true }).click();
        await page.locator('.banner.ok', { hasText: /split \S+ of s0 started \(to s1\)/ }).waitFor();
        const split = page.locator('[data-testid=splits] tbody tr').first();
        await split.locator('[data-split]').waitFor();
        await split.locator('[data-badge=done]').waitFor({ timeout: LONG });
        expect(await split.locator('[role=progressbar]').getAttribute('data-progress')).toBe('100');
        // The ranges changed: s0 keeps the lower half, s1 (no longer a spare) owns the upper one.
        await row('s1').locator(`[data-range="${EIGHT}-end"]`).waitFor();
        await row('s0').locator(`[data-range="${ZERO}-${EIGHT}"]`).waitFor();
        expect(await row('s1').locator('[data-badge=spare]').count()).toBe(0);
        await shot('shards-split-done');
        const api = (await (await fetch(`${node.url}/v1/shards`)).json()) as {
          shards: Array<{ name: string; epoch: number; events: number }>;
          splits: Array<{ phase: string; copied_events: number; rows_moved: number }>;
        };
        expect(api.splits).toHaveLength(1);
        expect(api.splits[0]!.phase).toBe('done');
        const cells = await split.locator('td').allInnerTexts();
        expect(cells[5]).toBe(String(api.splits[0]!.copied_events));
        expect(cells[6]).toBe(String(api.splits[0]!.rows_moved));
        expect(api.splits[0]!.rows_moved).toBeGreaterThan(0);
        for (const s of api.shards) expect(await row(s.name).locator('td').nth(2).innerText()).toBe(String(s.epoch));
        // The moved machines answer from their new shard.
        for (let i = 0; i < 20; i++)
          expect((await fetch(`${node.url}/v1/namespaces/counters/machines/c${i}`)).status).toBe(200);
      },
      LONG,
    );
  });
});
