import { afterEach, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { spawnTs, writeConfigFile } from '../support/proc.js';

/** Resolves with the first stdout line matching `re`. */
function line(child: ChildProcess, re: RegExp): Promise<RegExpExecArray> {
  let out = '';
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  return new Promise((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = re.exec(out);
      if (m) resolve(m);
    });
    child.once('exit', (code) => reject(new Error(`child exited with ${code}: ${err}`)));
  });
}

describe.each(DIALECTS)('a schedule fire across kill -9 (%s)', (dialect) => {
  const envs: TestEnv[] = [];
  const children: ChildProcess[] = [];
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const e of envs.splice(0)) await e.cleanup();
  });

  it('publishes the fire once when the node dies after acting and before storing the outcome', async () => {
    const env = await createTestEnv(dialect, {
      extra: {
        bus: { topics: ['beats'] },
        scheduler: { poll_ms: 50, lease_ms: 1000 },
        schedules: { beat: { spec: { every_ms: 2000 }, action: { publish: { topic: 'beats', type: 'beat', key: 'one', data: { ms: '{{fire_time_ms}}' } } } } },
      } as never,
    });
    envs.push(env);
    const cfg = writeConfigFile(env.dataDir, env.input as Record<string, unknown>);
    const first = spawnTs('test/ops/fire-child.ts', [cfg, 'hang']);
    children.push(first);
    const acted = Number(JSON.parse((await line(first, /\{"acted":\d+\}/))[0]).acted);
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));

    const second = spawnTs('test/ops/fire-child.ts', [cfg]);
    children.push(second);
    await line(second, /ready/);
    const rt = await Runtime.open(env.config, { background: false, migrate: false });
    try {
      const home = rt.storage.shardFor(['schedule', 'beat']);
      const deadline = Date.now() + 30_000;
      for (;;) {
        const f = await home.reader.all<{ status: string; attempts: number }>('SELECT status, attempts FROM schedule_fires WHERE schedule = ? AND fire_at = ?', ['beat', acted]);
        if (f[0]?.status === 'done') {
          // Run a second time by the new node: the first run's outcome was lost with the process.
          expect(Number(f[0].attempts)).toBe(2);
          break;
        }
        if (Date.now() > deadline) throw new Error(`fire ${acted} not done: ${JSON.stringify(f)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      let n = 0;
      for (const s of rt.storage.shards) {
        const rows = await s.reader.all<{ data: string }>(`SELECT data FROM events WHERE type = 'beat'`);
        n += rows.filter((r) => (JSON.parse(r.data) as { ms: number }).ms === acted).length;
      }
      expect(n).toBe(1);
    } finally {
      second.kill('SIGTERM');
      await new Promise((r) => second.once('exit', r));
      await rt.close();
    }
  });
});
