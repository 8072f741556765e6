import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { ManualClock } from '../../src/core/clock.js';
import { Runtime } from '../../src/runtime.js';
import { PipeFace } from '../../src/pipe/face.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';

const envs: TestEnv[] = [];
const rts: Runtime[] = [];
afterEach(async () => {
  // Teardown: a runtime that fails to close has failed its test already.
  for (const rt of rts.splice(0)) await rt.close().catch(() => {});
  for (const e of envs.splice(0)) await e.cleanup();
});

describe.each(DIALECTS)('pipe retention (%s)', (dialect) => {
  it('removes dead sessions untouched for dead_max_age_s with their records, in bounded batches, and nothing else', async () => {
    const env = await createTestEnv(dialect);
    envs.push(env);
    const clock = new ManualClock(1_000_000_000);
    const rt = await Runtime.open(
      buildConfig({
        ...env.input,
        retention: { enabled: false, batch: 3 },
        pipe: { kinds: { k: {} }, dead_max_age_s: 60 },
      } as never),
      { clock },
    );
    rts.push(rt);
    new PipeFace(rt);
    const shard = rt.storage.shards[0]!;
    const now = clock.now();
    const sessions: Array<[string, string, number]> = [
      ...Array.from({ length: 7 }, (_, i): [string, string, number] => [`old-dead-${i}`, 'dead', now - 61_000]),
      ['new-dead', 'dead', now - 59_000],
      ['old-stored', 'stored', now - 600_000],
    ];
    await shard.write(async (tx) => {
      for (const [id, state, touched] of sessions) {
        await tx.run('INSERT INTO pipe_sessions (id, kind, state, created_at, touched_at) VALUES (?, ?, ?, ?, ?)', [
          id,
          'k',
          state,
          touched,
          touched,
        ]);
        for (let s = 1; s <= 2; s++)
          await tx.run('INSERT INTO pipe_records (session_id, seq, data) VALUES (?, ?, ?)', [
            id,
            s,
            Buffer.from(`${id}/${s}`),
          ]);
      }
    });
    const r = await rt.pruner.pass(shard);
    expect(r.swept).toBe(7);
    const left = (await shard.reader.all<{ id: string }>('SELECT id FROM pipe_sessions ORDER BY id')).map((x) => x.id);
    expect(left).toEqual(['new-dead', 'old-stored']);
    const recs = (
      await shard.reader.all<{ session_id: string }>('SELECT DISTINCT session_id FROM pipe_records ORDER BY session_id')
    ).map((x) => x.session_id);
    expect(recs).toEqual(['new-dead', 'old-stored']);
    // Later the other dead session ages out too.
    clock.advance(2_000);
    expect((await rt.pruner.pass(shard)).swept).toBe(1);
    expect((await shard.reader.all('SELECT id FROM pipe_sessions')).length).toBe(1);
  });

  it('without dead_max_age_s dead sessions stay', async () => {
    const env = await createTestEnv(dialect);
    envs.push(env);
    const rt = await Runtime.open(
      buildConfig({ ...env.input, retention: { enabled: false }, pipe: { kinds: { k: {} } } } as never),
    );
    rts.push(rt);
    new PipeFace(rt);
    const shard = rt.storage.shards[0]!;
    await shard.write((tx) =>
      tx.run("INSERT INTO pipe_sessions (id, kind, state, created_at, touched_at) VALUES ('d', 'k', 'dead', 0, 0)"),
    );
    expect((await rt.pruner.pass(shard)).swept).toBe(0);
    expect((await shard.reader.all('SELECT id FROM pipe_sessions')).length).toBe(1);
    expect(() => buildConfig({ pipe: { dead_max_age_s: -1 } })).toThrow(/dead_max_age_s/);
  });
});
