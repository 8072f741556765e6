import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { MillraceError } from '../../core/errors.js';
import type { ShardSnapshotInfo } from '../snapshot-info.js';

/** What a copy holds: its head, event count and pruning checkpoint, read from the copy itself. */
function describe(db: Database.Database): ShardSnapshotInfo {
  const head = db.prepare('SELECT pos, hash FROM events ORDER BY pos DESC LIMIT 1').get() as
    { pos: number; hash: Buffer } | undefined;
  const events = (db.prepare('SELECT COUNT(*) AS n FROM events').get() as { n: number }).n;
  const hasGaps =
    db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chain_gaps'").get() !== undefined;
  const cp = hasGaps
    ? (db.prepare('SELECT last_pos, last_hash FROM chain_gaps WHERE first_pos = 1').get() as
        { last_pos: number; last_hash: Buffer } | undefined)
    : undefined;
  return {
    head: head?.pos ?? 0,
    headHash: head ? head.hash.toString('hex') : null,
    events,
    checkpoint: cp ? { pos: cp.last_pos, hash: cp.last_hash.toString('hex') } : { pos: 0, hash: null },
  };
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Online, consistent copy of a SQLite shard through SQLite's online backup
 * API: every page in one step, so the copy is one read transaction's view
 * (in WAL mode the writer is never blocked, and a write by another
 * connection cannot force the copy to start over between steps). The copy
 * goes to `<dest>.partial` and is renamed once complete and on disk.
 */
export async function backupSqlite(source: string, dest: string): Promise<ShardSnapshotInfo> {
  if (!existsSync(source))
    throw new MillraceError('bad_request', `no database at ${source}`, { details: { path: source } });
  const partial = `${dest}.partial`;
  await rm(partial, { force: true });
  const db = new Database(source, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    await db.backup(partial, { progress: () => 0x7fffffff });
  } finally {
    db.close();
  }
  const copy = new Database(partial, { fileMustExist: true });
  let info: ShardSnapshotInfo;
  try {
    // A self-contained file: no WAL beside it.
    copy.pragma('journal_mode = DELETE');
    info = describe(copy);
  } finally {
    copy.close();
  }
  await fsyncPath(partial);
  await rename(partial, dest);
  await fsyncPath(dirname(dest));
  return info;
}

/** Whether a SQLite shard file exists with events or millrace tables in it. */
export function sqliteHoldsData(path: string): boolean {
  if (!existsSync(path)) return false;
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return (
      db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name IN ('events', 'schema_migrations')")
        .get() !== undefined
    );
  } finally {
    db.close();
  }
}

/** Puts a backed-up shard file at `target` (which must hold no millrace data), atomically: copy beside it, fsync, rename. */
export async function restoreSqlite(file: string, target: string): Promise<void> {
  if (sqliteHoldsData(target))
    throw new MillraceError(
      'restore_target_not_empty',
      `shard database ${target} already holds data; restore only into a new data dir`,
      { details: { path: target } },
    );
  await mkdir(dirname(target), { recursive: true });
  for (const extra of ['-wal', '-shm']) await rm(`${target}${extra}`, { force: true });
  await rm(target, { force: true });
  const partial = `${target}.restoring`;
  await copyFile(file, partial);
  await fsyncPath(partial);
  await rename(partial, target);
  await fsyncPath(dirname(target));
}
