import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { progressLine } from '../../src/cli/main.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, type TestEnv } from '../support/env.js';
import { collect, spawnTs } from '../support/proc.js';
import { withSpare } from '../support/split.js';

describe('shards over HTTP and the CLI: GET /v1/shards, POST /v1/shards/{shard}/split, millrace shards split', () => {
  let env: TestEnv;
  let node: Node;

  beforeAll(async () => {
    env = await createTestEnv('sqlite', {
      shards: 2,
      extra: {
        machines: { examples: true, namespaces: { counters: { processor: { in_process: 'example.counter' } } } },
      } as never,
    });
    node = await startNode(buildConfig(withSpare(env)), { env: {} });
    for (let i = 0; i < 20; i++) {
      const r = await fetch(`${node.url}/v1/namespaces/counters/machines/c${i}/start`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ args: 1 }),
      });
      expect(r.status).toBe(200);
    }
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });

  const post = (path: string, body: unknown) =>
    fetch(`${node.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('refuses a bad split (400 split_invalid, nothing written) and lists ranges and sizes', async () => {
    for (const [shard, body] of [
      ['s0', { at: '8', to: 'nope' }],
      ['s0', { at: 'xyz', to: 's1' }],
      ['s1', { at: '8', to: 's0' }],
    ] as const) {
      const r = await post(`/v1/shards/${shard}/split`, body);
      expect([r.status, ((await r.json()) as { error: { code: string } }).error.code]).toEqual([400, 'split_invalid']);
    }
    const bad = await post('/v1/shards/s0/split', { at: '8' });
    expect(bad.status).toBe(400);
    const list = (await (await fetch(`${node.url}/v1/shards`)).json()) as {
      shards: Array<{ name: string; ranges: unknown[]; spare: boolean; events: number }>;
      splits: unknown[];
    };
    expect(list.splits).toEqual([]);
    expect(list.shards.map((s) => [s.name, s.ranges.length, s.spare])).toEqual([
      ['s0', 1, false],
      ['s1', 0, true],
    ]);
    expect(list.shards[0]!.events).toBeGreaterThanOrEqual(20);
  });

  it('millrace shards split shows a progress bar until done; GET /v1/shards then shows the new ranges', async () => {
    const r = await collect(
      spawnTs('test/support/cli.ts', ['shards', '--url', node.url, 'split', 's0', '--at', '8', '--to', 's1']),
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\[[#-]{30}\]\s+\d+% (copy|fenced|switched|cleanup|done)/);
    expect(r.stdout).toMatch(/\[#{30}\] 100% done/);
    expect(r.stdout).toMatch(/split \S+ done/);
    const list = (await (await fetch(`${node.url}/v1/shards`)).json()) as {
      shards: Array<{ name: string; ranges: Array<{ from: string; to: string; fenced: boolean }>; events: number }>;
      splits: Array<{ phase: string; progress: number; copied_events: number; source: string; target: string }>;
    };
    expect(list.shards.map((s) => [s.name, s.ranges])).toEqual([
      ['s0', [{ from: '0'.repeat(40), to: '8' + '0'.repeat(39), fenced: false }]],
      ['s1', [{ from: '8' + '0'.repeat(39), to: 'end', fenced: false }]],
    ]);
    expect(list.splits).toHaveLength(1);
    expect(list.splits[0]).toMatchObject({ phase: 'done', progress: 1, source: 's0', target: 's1' });
    expect(list.splits[0]!.copied_events).toBeGreaterThan(0);
    expect(list.shards[1]!.events).toBe(list.splits[0]!.copied_events + 1);
    // The moved machines answer from the new shard.
    for (let i = 0; i < 20; i++) {
      const g = await fetch(`${node.url}/v1/namespaces/counters/machines/c${i}`);
      expect(g.status).toBe(200);
    }
    // The spare is used now: a second split into it is refused.
    const again = await post('/v1/shards/s0/split', { at: '4', to: 's1' });
    expect([again.status, ((await again.json()) as { error: { code: string } }).error.code]).toEqual([
      400,
      'split_invalid',
    ]);
  });

  it('draws the bar from the progress', () => {
    expect(progressLine('copy', 0.5, 7)).toBe(`[${'#'.repeat(15)}${'-'.repeat(15)}]  50% copy (7 events copied)`);
    expect(progressLine('done', 1, 9)).toBe(`[${'#'.repeat(30)}] 100% done (9 events copied)`);
  });
});
