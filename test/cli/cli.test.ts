import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import pg from 'pg';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, DIALECTS, type Dialect, type TestEnv } from '../support/env.js';
import { runCli, writeConfigFile, type RunResult } from '../support/proc.js';

/** Runs one statement against a shard's database, bypassing millrace. */
async function tamper(env: TestEnv, shardIndex: number, sql: string): Promise<number> {
  const location = env.config.storage.shards[shardIndex]!.location;
  if (env.dialect === 'sqlite') {
    const db = new Database(location);
    try {
      return db.prepare(sql).run().changes;
    } finally {
      db.close();
    }
  }
  const c = new pg.Client({ connectionString: location });
  await c.connect();
  try {
    return (await c.query(sql)).rowCount ?? 0;
  } finally {
    await c.end();
  }
}

describe.each(DIALECTS)('millrace CLI: migrate and verify (%s)', (dialect: Dialect) => {
  let env: TestEnv;
  let configPath: string;
  const heads: Record<string, number> = {};

  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 2 });
    configPath = writeConfigFile(env.dataDir, env.input);
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('migrate applies the migrations once, then reports up to date', async () => {
    const first = await runCli(['--config', configPath, 'migrate']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^s0: applied core\/0001_log, /m);
    expect(first.stdout).toMatch(/^s1: applied core\/0001_log, /m);

    const second = await runCli(['--config', configPath, 'migrate']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain('s0: up to date');
    expect(second.stdout).toContain('s1: up to date');
    expect(second.stdout).not.toContain('applied');
  });

  it('verify passes on an intact log', async () => {
    const rt = await Runtime.open(env.config);
    try {
      const results = await Promise.all(
        Array.from({ length: 80 }, (_, i) => rt.log.append(`cli/${i % 17}`, [{ type: 'e', data: { i } }])),
      );
      await Promise.all(results.map((r) => rt.log.positions(r)));
      for (const s of rt.storage.shards) heads[s.name] = await rt.log.headPos(s.name);
    } finally {
      await rt.close();
    }
    expect(heads.s0).toBeGreaterThanOrEqual(5);
    expect(heads.s1).toBeGreaterThanOrEqual(5);
    expect(heads.s0! + heads.s1!).toBe(80);

    const v = await runCli(['--config', configPath, 'verify']);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toContain(`s0: ok, ${heads.s0} events, head ${heads.s0}`);
    expect(v.stdout).toContain(`s1: ok, ${heads.s1} events, head ${heads.s1}`);
  });

  it('verify fails on an edited row and names its position; --shard limits the walk', async () => {
    expect(await tamper(env, 1, `UPDATE events SET data = '{"i":"forged"}' WHERE pos = 5`)).toBe(1);

    const all = await runCli(['--config', configPath, 'verify']);
    expect(all.code).not.toBe(0);
    expect(all.stdout).toContain('s1: BROKEN at position 5');
    expect(all.stdout).toContain(`s0: ok, ${heads.s0} events`);

    const s0 = await runCli(['--config', configPath, 'verify', '--shard', 's0']);
    expect(s0.code, s0.stdout + s0.stderr).toBe(0);
    expect(s0.stdout).toContain(`s0: ok, ${heads.s0} events, head ${heads.s0}`);
    expect(s0.stdout).not.toContain('s1');

    const s1 = await runCli(['--config', configPath, 'verify', '--shard', 's1']);
    expect(s1.code).not.toBe(0);
    expect(s1.stdout).toMatch(/s1: BROKEN at position 5: hash mismatch at position 5/);
    expect(s1.stdout).not.toContain('s0');

    const unknown = await runCli(['--config', configPath, 'verify', '--shard', 'nope']);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('nope');
  });

  it('verify names a deleted position', async () => {
    expect(await tamper(env, 0, 'DELETE FROM events WHERE pos = 3')).toBe(1);
    const v = await runCli(['--config', configPath, 'verify', '--shard', 's0']);
    expect(v.code).not.toBe(0);
    expect(v.stdout).toContain('s0: BROKEN at position 3: position 3 is missing');
  });
});

describe('millrace config check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'millrace-cfg-'));
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  // Each check is its own process; they run a few at a time, started as soon as the file is collected.
  let running = 0;
  const queue: Array<() => void> = [];
  const limited = async <T>(fn: () => Promise<T>): Promise<T> => {
    if (running >= 3) await new Promise<void>((r) => queue.push(r));
    running++;
    try {
      return await fn();
    } finally {
      running--;
      queue.shift()?.();
    }
  };
  const checkFile = (path: string): Promise<RunResult> => limited(() => runCli(['--config', path, 'config', 'check']));
  const writeText = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const check = (input: Record<string, unknown>, name: string): Promise<RunResult> =>
    checkFile(writeConfigFile(dir, input, `${name}.yaml`));

  const good = check(
    {
      data_dir: dir,
      http: { port: 8080 },
      storage: {
        dialect: 'sqlite',
        shards: [
          { name: 'a', to: '8' },
          { name: 'b', from: '8' },
        ],
      },
    },
    'good',
  );
  const pgGood = check(
    { storage: { dialect: 'postgres', shards: [{ name: 'p0', url: 'postgres://u:secret@127.0.0.1:5432/x' }] } },
    'pg',
  );
  const yamlGood = checkFile(writeText('yaml.yaml', 'http:\n  port: 9000\nstorage:\n  dialect: sqlite\n'));
  const notYaml = checkFile(writeText('broken.yaml', 'http: [1, 2\n'));
  const missing = checkFile(join(dir, 'nope.yaml'));

  const bad: Array<[string, Record<string, unknown>, RegExp[]]> = [
    ['an unknown top-level key', { htttp: { port: 1 } }, [/\(root\): unknown key\(s\) "htttp"/]],
    ['an unknown nested key', { http: { prot: 1 } }, [/http: unknown key\(s\) "prot"/]],
    ['a wrong type', { http: { port: 'x' } }, [/http\.port: .*expected number/]],
    [
      'overlapping shard ranges',
      {
        storage: {
          shards: [
            { name: 'a', to: '8' },
            { name: 'b', from: '7' },
          ],
        },
      },
      [/storage\.shards: shard "b" starts at 7, overlapping the previous range that ends at 8/],
    ],
    [
      'gapped shard ranges',
      {
        storage: {
          shards: [
            { name: 'a', to: '7' },
            { name: 'b', from: '8' },
          ],
        },
      },
      [/storage\.shards: hash range has a gap from 7 to 8/, /cover the whole SHA-1 space/],
    ],
    [
      'ranges that stop short of the end',
      { storage: { shards: [{ name: 'a', to: '8' }] } },
      [/storage\.shards: hash range has a gap from 8 to the end/],
    ],
  ];
  const badRuns = new Map(bad.map(([what, input], i) => [what, check(input, `bad-${i}`)]));

  it('accepts a good file and prints it with defaults filled in', async () => {
    const r = await good;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^config ok \(.*good\.yaml\)/);
    const printed = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as {
      http: { port: number; host: string };
      storage: { shards: Array<{ name: string; from: string; to: string }> };
    };
    expect(printed.http).toMatchObject({ port: 8080, host: '127.0.0.1' });
    expect(printed.storage.shards.map((s) => s.name)).toEqual(['a', 'b']);
  });

  it('accepts a PostgreSQL file and hides the password', async () => {
    const r = await pgGood;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('secret');
    expect(r.stdout).toContain('postgres://u:***@');
  });

  it('accepts YAML', async () => {
    const r = await yamlGood;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('"port": 9000');
  });

  it.each(bad)('refuses %s, naming the key and what was expected', async (what, _input, patterns) => {
    const r = await badRuns.get(what)!;
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    for (const p of patterns) expect(r.stderr).toMatch(p);
  });

  it('refuses a file that is not YAML, or is missing', async () => {
    const r = await notYaml;
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('is not valid YAML');
    const m = await missing;
    expect(m.code).toBe(2);
    expect(m.stderr).toContain('cannot read config file');
  });
});
