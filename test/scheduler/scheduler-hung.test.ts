import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, DIALECTS, waitFor } from '../support/env.js';
import { signalGroup, spawnTs, writeConfigFile } from '../support/proc.js';

const LEASE_MS = 1000;

describe.runIf(DIALECTS.includes('postgres'))('timer claims of a hung node (postgres)', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('a node frozen (SIGSTOP) while its handler runs loses the claim within the lease; another node fires the timer; after SIGCONT the frozen one cannot complete it', async () => {
    const env = await createTestEnv('postgres', { extra: { cluster: { role_lease_ms: LEASE_MS } } });
    cleanups.push(() => env.cleanup());
    const dir = mkdtempSync(join(tmpdir(), 'millrace-timer-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // This node: no background loops until the child has claimed the timer.
    const rt = await Runtime.open(env.config, { background: false });
    cleanups.push(() => rt.close());
    await rt.storage
      .shard('s0')
      .write((tx) => tx.run('CREATE TABLE effects (who TEXT NOT NULL, version INTEGER NOT NULL)'));
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    cleanups.push(() => open());
    const here: Array<{ attempts: number; done?: boolean }> = [];
    rt.scheduler.register('slow', async (timer, ctx) => {
      const rec: { attempts: number; done?: boolean } = { attempts: timer.attempts };
      here.push(rec);
      await gate;
      rec.done = await rt.storage.shard(timer.shard).write(async (tx) => {
        if (!(await ctx.completeIn(tx))) return false;
        await tx.run('INSERT INTO effects (who, version) VALUES (?, ?)', ['here', timer.version]);
        return true;
      });
    });

    const child = spawnTs(
      'test/scheduler/timer-child.ts',
      [writeConfigFile(dir, { ...env.input, node_id: 'frozen' }), String(LEASE_MS * 3)],
      {},
      { group: true },
    );
    cleanups.push(() => {
      signalGroup(child, 'SIGCONT');
      signalGroup(child, 'SIGKILL');
    });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    await waitFor(() => out.includes('ready'), 30_000, 'the child to start');
    await rt.scheduler.schedule('t1', 'slow', Date.now());
    await waitFor(() => out.includes('{"firing":1}'), 10_000, 'the child to claim and fire the timer');
    signalGroup(child, 'SIGSTOP');

    rt.scheduler.start();
    // Failure detection only: the claim runs out one lease after the child's last renewal.
    await waitFor(() => here.length === 1, LEASE_MS * 10, 'this node to fire the timer the frozen node had claimed');
    expect(here[0]!.attempts).toBe(2);

    signalGroup(child, 'SIGCONT');
    // The child wakes, finishes its handler and tries to complete: its claim is gone, so it cannot.
    await waitFor(() => out.includes('"done"'), 15_000, 'the resumed child to finish its handler');
    expect(out).toContain('{"done":false}');
    open();
    await waitFor(() => here[0]!.done !== undefined, 10_000, 'this node to complete');
    expect(here[0]!.done).toBe(true);
    const effects = await rt.storage.shard('s0').reader.all<{ who: string }>('SELECT who FROM effects');
    expect(effects).toEqual([{ who: 'here' }]);
    expect(await rt.scheduler.get('t1')).toBeNull();
  });
});
