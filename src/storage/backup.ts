import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../core/config.js';
import { MillraceError } from '../core/errors.js';
import { backupPostgres, postgresHoldsData, restorePostgres } from './postgres/postgres-backup.js';
import { backupSqlite, restoreSqlite, sqliteHoldsData } from './sqlite/sqlite-backup.js';
import type { ShardSnapshotInfo } from './snapshot-info.js';

export type { ShardSnapshotInfo } from './snapshot-info.js';

export interface ManifestShard extends ShardSnapshotInfo {
  name: string;
  from: string;
  to: string;
  /** File name inside the backup directory. */
  file: string;
  bytes: number;
  sha256: string;
}

export interface Manifest {
  format: 'millrace-backup/1';
  created_at: string;
  dialect: 'sqlite' | 'postgres';
  method: string;
  shards: ManifestShard[];
}

export const MANIFEST = 'manifest.json';

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

const hex = (n: bigint): string => n.toString(16);

/**
 * Takes an online, consistent copy of every shard into `dir` (new or empty)
 * while writers go on, then writes `manifest.json` (heads, hashes, file
 * checksums) last, atomically. A backup killed half-way leaves no manifest,
 * which restore refuses; the shards themselves are only read.
 */
export async function backup(
  config: Config,
  dir: string,
  opts: { onShard?: (s: ManifestShard) => void } = {},
): Promise<Manifest> {
  if (existsSync(dir) && (await readdir(dir)).length > 0) {
    throw new MillraceError(
      'backup_target_not_empty',
      `backup directory ${dir} is not empty; give a new or empty directory`,
      { details: { dir } },
    );
  }
  await mkdir(dir, { recursive: true });
  const dialect = config.storage.dialect;
  const shards: ManifestShard[] = [];
  for (const s of config.storage.shards) {
    const file = `${s.name}.${dialect === 'sqlite' ? 'db' : 'pgdump'}`;
    const path = join(dir, file);
    const info = dialect === 'sqlite' ? await backupSqlite(s.location, path) : await backupPostgres(s.location, path);
    const entry: ManifestShard = {
      name: s.name,
      from: hex(s.from),
      to: hex(s.to),
      file,
      bytes: (await stat(path)).size,
      sha256: await sha256(path),
      ...info,
    };
    shards.push(entry);
    opts.onShard?.(entry);
  }
  const manifest: Manifest = {
    format: 'millrace-backup/1',
    created_at: new Date().toISOString(),
    dialect,
    method: dialect === 'sqlite' ? 'sqlite online backup API' : 'pg_dump --snapshot (custom format)',
    shards,
  };
  const tmp = join(dir, `${MANIFEST}.tmp`);
  await writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
  await fsyncPath(tmp);
  await rename(tmp, join(dir, MANIFEST));
  await fsyncPath(dir);
  return manifest;
}

/** Reads and checks a backup: a complete manifest, every file present with its checksum. */
export async function readManifest(dir: string): Promise<Manifest> {
  const path = join(dir, MANIFEST);
  if (!existsSync(path))
    throw new MillraceError('backup_invalid', `${dir} holds no ${MANIFEST}: not a backup, or one that did not finish`, {
      details: { dir },
    });
  let m: Manifest;
  try {
    m = JSON.parse(await readFile(path, 'utf8')) as Manifest;
  } catch {
    throw new MillraceError('backup_invalid', `${path} is not valid JSON`, { details: { dir } });
  }
  if (m.format !== 'millrace-backup/1' || !Array.isArray(m.shards))
    throw new MillraceError('backup_invalid', `${path} is not a millrace backup manifest`, { details: { dir } });
  for (const s of m.shards) {
    const f = join(dir, s.file);
    if (!existsSync(f) || (await sha256(f)) !== s.sha256)
      throw new MillraceError('backup_invalid', `backup file ${s.file} is missing or does not match its checksum`, {
        details: { dir, file: s.file },
      });
  }
  return m;
}

/**
 * Rebuilds the shards of `config` (a new data dir, or empty databases) from
 * the backup in `dir`. The configuration must name the same shards with the
 * same ranges and dialect. Every shard's target is checked before anything
 * is written.
 */
export async function restore(
  config: Config,
  dir: string,
  opts: { onShard?: (s: ManifestShard) => void } = {},
): Promise<Manifest> {
  const m = await readManifest(dir);
  if (m.dialect !== config.storage.dialect)
    throw new MillraceError(
      'backup_invalid',
      `the backup is of a ${m.dialect} node; the configuration is ${config.storage.dialect}`,
    );
  const want = config.storage.shards.map((s) => `${s.name}:${hex(s.from)}-${hex(s.to)}`).sort();
  const have = m.shards.map((s) => `${s.name}:${s.from}-${s.to}`).sort();
  if (JSON.stringify(want) !== JSON.stringify(have)) {
    throw new MillraceError(
      'backup_invalid',
      `the backup's shards (${have.join(', ')}) differ from the configuration's (${want.join(', ')})`,
    );
  }
  for (const t of config.storage.shards) {
    if (m.dialect === 'sqlite' ? sqliteHoldsData(t.location) : await postgresHoldsData(t.location)) {
      throw new MillraceError(
        'restore_target_not_empty',
        `shard ${t.name} already holds data; restore only into a new data dir or empty databases`,
        { details: { shard: t.name } },
      );
    }
  }
  for (const s of m.shards) {
    const target = config.storage.shards.find((c) => c.name === s.name)!;
    if (m.dialect === 'sqlite') await restoreSqlite(join(dir, s.file), target.location);
    else await restorePostgres(join(dir, s.file), target.location);
    opts.onShard?.(s);
  }
  return m;
}
