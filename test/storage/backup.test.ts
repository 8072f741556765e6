import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import { BusFace } from '../../src/bus/face.js';
import { Storage } from '../../src/storage/storage.js';
import type { Manifest } from '../../src/storage/backup.js';
import { verifyShard } from '../../src/log/verify.js';
import { createTestEnv, DIALECTS, type Dialect, type TestEnv } from '../support/env.js';
import { collect, runCli, spawnTs, writeConfigFile } from '../support/proc.js';

const envs: TestEnv[] = [];
afterEach(async () => {
  for (const e of envs.splice(0)) await e.cleanup();
});

async function env2(dialect: Dialect): Promise<{ env: TestEnv; configPath: string }> {
  const env = await createTestEnv(dialect, { shards: 2 });
  envs.push(env);
  const input = { ...env.input, retention: { enabled: false }, bus: { topics: ['orders'] } };
  return { env, configPath: writeConfigFile(env.dataDir, input) };
}

type Ev = {
  pos: number;
  stream: string;
  seq: number;
  type: string;
  data: string;
  meta: string | null;
  created_at: number;
  hash: Buffer;
};

async function eventsUpTo(configPath: string, heads: Record<string, number>): Promise<Record<string, Ev[]>> {
  const { loadConfig } = await import('../../src/core/config.js');
  const storage = Storage.open(loadConfig(configPath));
  try {
    const out: Record<string, Ev[]> = {};
    for (const s of storage.shards) {
      const rows = await s.reader.all<Ev>(
        'SELECT pos, stream, seq, type, data, meta, created_at, hash FROM events WHERE pos IS NOT NULL AND pos <= ? ORDER BY pos',
        [heads[s.name] ?? 0],
      );
      out[s.name] = rows.map((r) => ({
        ...r,
        pos: Number(r.pos),
        seq: Number(r.seq),
        created_at: Number(r.created_at),
      }));
    }
    return out;
  } finally {
    await storage.close();
  }
}

describe.each(DIALECTS)('backup and restore (%s)', (dialect) => {
  it('backs up under write load; restore rebuilds every event up to the manifest heads; the restored node verifies and serves', async () => {
    const src = await env2(dialect);
    const rt = await Runtime.open(
      buildConfig({ ...src.env.input, retention: { enabled: false }, bus: { topics: ['orders'] } } as never),
    );
    const face = new BusFace(rt);
    let stop = false;
    let published = 0;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        await face.bus.publish(
          Array.from({ length: 20 }, (_, k) => ({
            topic: 'orders',
            key: `k${k}`,
            id: `e${i}-${k}`,
            type: 'e',
            data: { i, k },
          })),
        );
        published += 20;
      }
    })();
    const dir = join(src.env.dataDir, 'backup');
    let b;
    try {
      while (published < 200) await new Promise((r) => setTimeout(r, 10));
      b = await runCli(['--config', src.configPath, 'backup', dir]);
      // Writes went on during the backup.
      const during = published;
      while (published < during + 100) await new Promise((r) => setTimeout(r, 10));
    } finally {
      stop = true;
      await writer;
      await rt.close();
    }
    expect(b.stderr).toBe('');
    expect(b.code).toBe(0);
    expect(b.stdout).toContain('backup complete: 2 shard(s)');
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.shards.map((s) => s.name)).toEqual(['s0', 's1']);
    const heads = Object.fromEntries(manifest.shards.map((s) => [s.name, s.head]));
    expect(heads.s0! + heads.s1!).toBeGreaterThan(0);

    // The source moved on past the manifest's heads.
    const srcStorage = Storage.open(src.env.config);
    const srcHeads: Record<string, number> = {};
    try {
      for (const s of srcStorage.shards)
        srcHeads[s.name] = Number((await s.reader.all<{ h: number }>('SELECT MAX(pos) AS h FROM events'))[0]!.h);
    } finally {
      await srcStorage.close();
    }
    expect(srcHeads.s0! + srcHeads.s1!).toBeGreaterThan(heads.s0! + heads.s1!);

    // Restore into a new data dir / new databases.
    const dst = await env2(dialect);
    const r = await runCli(['--config', dst.configPath, 'restore', dir]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/s0: verified.*manifest head \d+ matches/);
    expect(r.stdout).toMatch(/s1: verified.*manifest head \d+ matches/);

    const before = await eventsUpTo(src.configPath, heads);
    const after = await eventsUpTo(dst.configPath, heads);
    for (const s of manifest.shards) {
      expect(after[s.name]!.length).toBe(s.events);
      expect(after[s.name]).toEqual(before[s.name]);
      // Nothing past the manifest's head came along.
      expect(after[s.name]!.at(-1)?.pos ?? 0).toBe(s.head);
    }

    // The restored node serves and its chains go on verifying.
    const rt2 = await Runtime.open(
      buildConfig({ ...dst.env.input, retention: { enabled: false }, bus: { topics: ['orders'] } } as never),
    );
    try {
      const face2 = new BusFace(rt2);
      const res = await face2.bus.publish([{ topic: 'orders', key: 'after-restore', type: 'e', data: { ok: true } }]);
      expect(res[0]!.pos).toBeGreaterThan(heads[res[0]!.shard]!);
      for (const s of rt2.storage.shards) expect((await verifyShard(s)).ok).toBe(true);
    } finally {
      await rt2.close();
    }

    // Bad input, nothing written: a restore into a shard that holds data; a backup into a directory that is not empty.
    const again = await runCli(['--config', dst.configPath, 'restore', dir]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('restore_target_not_empty');
    const notEmpty = await runCli(['--config', src.configPath, 'backup', dir]);
    expect(notEmpty.code).toBe(2);
    expect(notEmpty.stderr).toContain('backup_target_not_empty');
    const tampered = join(src.env.dataDir, 'tampered');
    mkdirSync(tampered);
    for (const s of manifest.shards) writeFileSync(join(tampered, s.file), readFileSync(join(dir, s.file)));
    writeFileSync(
      join(tampered, 'manifest.json'),
      JSON.stringify({ ...manifest, shards: manifest.shards.map((s) => ({ ...s, sha256: '0'.repeat(64) })) }),
    );
    const fresh = await env2(dialect);
    const bad = await runCli(['--config', fresh.configPath, 'restore', tampered]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('backup_invalid');
  }, 240_000);

  it('kill -9 during a backup leaves the shards whole and no manifest, which restore refuses', async () => {
    const src = await env2(dialect);
    const rt = await Runtime.open(
      buildConfig({ ...src.env.input, retention: { enabled: false }, bus: { topics: ['orders'] } } as never),
    );
    try {
      const face = new BusFace(rt);
      for (let i = 0; i < 20; i++)
        await face.bus.publish(
          Array.from({ length: 50 }, (_, k) => ({
            topic: 'orders',
            key: `k${k}`,
            type: 'e',
            data: { i, k, pad: 'x'.repeat(200) },
          })),
        );
    } finally {
      await rt.close();
    }
    const dir = join(src.env.dataDir, 'backup');
    const child = spawnTs('test/support/cli.ts', ['--config', src.configPath, 'backup', dir]);
    const done = collect(child);
    // Killed while a shard's copy is being written (its .partial file exists), or,
    // should the copy be too quick to catch, as soon as the backup began.
    await new Promise<void>((resolve) => {
      let seenDirAt = 0;
      const t = setInterval(() => {
        if (!existsSync(dir)) return;
        seenDirAt ||= Date.now();
        if (readdirSync(dir).some((f) => f.endsWith('.partial')) || Date.now() - seenDirAt > 50) {
          clearInterval(t);
          resolve();
        }
      }, 1);
    });
    child.kill('SIGKILL');
    const res = await done;
    expect(res.signal).toBe('SIGKILL');
    expect(existsSync(join(dir, 'manifest.json'))).toBe(false);

    const dst = await env2(dialect);
    const r = await runCli(['--config', dst.configPath, 'restore', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('backup_invalid');

    // The source is whole and takes writes.
    const v = await runCli(['--config', src.configPath, 'verify']);
    expect(v.code).toBe(0);
    expect(v.stdout).toContain('s0: ok');
    const rt2 = await Runtime.open(
      buildConfig({ ...src.env.input, retention: { enabled: false }, bus: { topics: ['orders'] } } as never),
    );
    try {
      await new BusFace(rt2).bus.publish([{ topic: 'orders', key: 'k', type: 'e', data: {} }]);
    } finally {
      await rt2.close();
    }
    // A backup into a fresh directory then completes.
    const ok = await runCli(['--config', src.configPath, 'backup', join(src.env.dataDir, 'backup2')]);
    expect(ok.code).toBe(0);
  }, 240_000);
});
