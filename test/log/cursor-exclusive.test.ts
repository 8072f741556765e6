import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import type { Consumer } from '../../src/log/cursor.js';
import type { LogEvent } from '../../src/log/log.js';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, DIALECTS, waitFor } from '../support/env.js';
import { collect, spawnTs, writeConfigFile } from '../support/proc.js';

const appendN = async (rt: Runtime, prefix: string, n: number): Promise<void> => {
  for (let i = 0; i < n; i++)
    await rt.log.positions(await rt.log.append(`${prefix}/${i % 3}`, [{ type: 'e', data: i }]));
};

describe.each(DIALECTS)('exclusive consumers (%s)', (dialect) => {
  it('run on one runtime at a time; the other takes over when the holder stops, and each event is handled once', async () => {
    const env = await createTestEnv(dialect);
    const rts: Runtime[] = [];
    const consumers: Consumer[] = [];
    try {
      rts.push(await Runtime.open(env.config));
      // PostgreSQL: a second node on the same database; SQLite: one process owns the file, so a second consumer in it.
      rts.push(
        dialect === 'postgres'
          ? await Runtime.open(buildConfig({ ...env.input, node_id: `${env.input.node_id}-b` } as ConfigInput))
          : rts[0]!,
      );
      await rts[0]!.storage
        .shard('s0')
        .write((tx) => tx.run('CREATE TABLE handled (who INTEGER NOT NULL, pos INTEGER NOT NULL)'));
      const start = (who: number) =>
        rts[who]!.cursors.consume({
          shard: 's0',
          name: 'agg',
          mode: 'transactional',
          exclusive: true,
          handler: async (events: LogEvent[], tx) => {
            for (const e of events) await tx!.run('INSERT INTO handled (who, pos) VALUES (?, ?)', [who, e.pos]);
          },
        });
      consumers.push(start(0));
      await waitFor(() => consumers[0]!.holding, 10_000, 'the first consumer to hold its lock');
      consumers.push(start(1));
      await appendN(rts[0]!, 'a', 20);
      await waitFor(async () => (await rts[0]!.cursors.position('s0', 'agg')) === 20, 10_000, 'the holder to catch up');
      expect(consumers[1]!.holding).toBe(false);

      await consumers[0]!.stop();
      await waitFor(() => consumers[1]!.holding, 10_000, 'the standby to take over');
      await appendN(rts[1]!, 'b', 15);
      await waitFor(
        async () => (await rts[0]!.cursors.position('s0', 'agg')) === 35,
        10_000,
        'the new holder to catch up',
      );

      const rows = await rts[0]!.storage
        .shard('s0')
        .reader.all<{ who: number; pos: number }>('SELECT who, pos FROM handled ORDER BY pos');
      expect(rows.map((r) => r.pos)).toEqual(Array.from({ length: 35 }, (_, i) => i + 1));
      expect(rows.slice(0, 20).every((r) => r.who === 0)).toBe(true);
      expect(rows.slice(20).every((r) => r.who === 1)).toBe(true);
    } finally {
      for (const c of consumers) await c.stop();
      for (const rt of new Set(rts)) await rt.close();
      await env.cleanup();
    }
  });

  it('a consumer stopped while it stands by stops at once', async () => {
    const env = await createTestEnv(dialect);
    const rt = await Runtime.open(env.config);
    try {
      const opts = { shard: 's0', name: 'w', mode: 'at-least-once' as const, exclusive: true, handler: async () => {} };
      const holder = rt.cursors.consume(opts);
      await waitFor(() => holder.holding, 10_000, 'the holder');
      const standby = rt.cursors.consume(opts);
      await standby.stop();
      expect(standby.holding).toBe(false);
      expect(holder.holding).toBe(true);
      await holder.stop();
    } finally {
      await rt.close();
      await env.cleanup();
    }
  });
});

describe.runIf(DIALECTS.includes('postgres'))('exclusive consumers across processes (postgres)', () => {
  it('a standby takes over when the holding process is killed (kill -9) and goes on from the stored position', async () => {
    const env = await createTestEnv('postgres');
    const dir = mkdtempSync(join(tmpdir(), 'millrace-excl-'));
    const rt = await Runtime.open(env.config);
    let mine: Consumer | undefined;
    try {
      const child = spawnTs('test/support/exclusive-consumer.ts', [
        writeConfigFile(dir, { ...env.input, node_id: 'child' }),
      ]);
      const out = collect(child);
      let stdout = '';
      child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      await waitFor(() => stdout.includes('"holding":true'), 30_000, 'the child to hold the lock');
      const handledHere: number[] = [];
      mine = rt.cursors.consume({
        shard: 's0',
        name: 'x',
        mode: 'at-least-once',
        exclusive: true,
        handler: async (events) => {
          handledHere.push(...events.map((e) => e.pos!));
        },
      });
      await appendN(rt, 'k', 10);
      await waitFor(
        async () => (await rt.cursors.position('s0', 'x')) === 10,
        10_000,
        'the child to handle the first events',
      );
      expect(mine.holding).toBe(false);
      expect(handledHere).toEqual([]);

      child.kill('SIGKILL');
      const r = await out;
      expect(r.signal).toBe('SIGKILL');
      await waitFor(() => mine!.holding, 15_000, 'this node to take over');
      await appendN(rt, 'k', 5);
      await waitFor(() => handledHere.includes(15), 10_000, 'the new holder to handle the new events');
      // At-least-once: what the child had stored is not handled again here.
      expect(handledHere).toEqual([11, 12, 13, 14, 15]);
      const childHandled = r.stdout
        .split('\n')
        .filter((l) => l.startsWith('{"handled"'))
        .flatMap((l) => (JSON.parse(l) as { handled: number[] }).handled);
      expect(childHandled).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    } finally {
      await mine?.stop();
      await rt.close();
      await env.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
