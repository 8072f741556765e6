import { afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';

describe('the default node_id', () => {
  it('names the host and the process, so containers whose process is pid 1 still differ', () => {
    const c = buildConfig({ storage: { dialect: 'sqlite', shards: [{ name: 's0' }] } } as ConfigInput);
    expect(c.node_id).toMatch(new RegExp(`-${process.pid}$`));
    expect(c.node_id.length).toBeGreaterThan(`-${process.pid}`.length);
  });
});

describe.runIf(DIALECTS.includes('postgres'))('one node_id per running node on shared storage (postgres)', () => {
  let env: TestEnv | undefined;
  const open: Runtime[] = [];
  afterEach(async () => {
    for (const rt of open.splice(0)) await rt.close();
    await env?.cleanup();
    env = undefined;
  });

  it('refuses to start a second node with the node_id of a running one, with config_invalid naming it; a tool without background work may', async () => {
    env = await createTestEnv('postgres');
    open.push(await Runtime.open(env.config));
    const err = await Runtime.open(env.config).catch((e: unknown) => e);
    expect(isMillraceError(err, 'config_invalid')).toBe(true);
    expect((err as Error).message).toContain(env.config.node_id);
    // Another id starts; so does a runtime without background work (the CLI's).
    open.push(await Runtime.open(buildConfig({ ...env.input, node_id: `${env.input.node_id}-b` } as ConfigInput)));
    open.push(await Runtime.open(env.config, { background: false }));
  }, 30_000);

  it('warns at start when its sessions could exceed the server max_connections, naming the figures', async () => {
    const lines: Array<{
      level: number;
      msg: string;
      shard?: string;
      max_connections?: number;
      reserved?: number;
      open_by_others?: number;
      this_node_up_to?: number;
    }> = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    env = await createTestEnv('postgres');
    // 200 pooled connections (the most pool_size allows) cannot fit a server with the default 100.
    const big = buildConfig({
      ...env.input,
      storage: { ...(env.input.storage as object), pool_size: 200 },
    } as ConfigInput);
    open.push(await Runtime.open(big, { logger }));
    const warned = lines.filter((l) => l.msg.includes('run out of connections'));
    expect(warned).toHaveLength(1);
    const w = warned[0]!;
    expect(w).toMatchObject({ level: 40, shard: 's0', this_node_up_to: 200 + 4 + 1 + 1 });
    expect(w.open_by_others! + w.this_node_up_to!).toBeGreaterThan(w.max_connections! - w.reserved!);
  });

  it('frees the node_id when the node closes, so it can start again at once', async () => {
    env = await createTestEnv('postgres');
    const first = await Runtime.open(env.config);
    await first.close();
    open.push(await Runtime.open(env.config));
    expect(open).toHaveLength(1);
  });
});
