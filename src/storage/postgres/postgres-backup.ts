import pg from 'pg';
import { execFile } from 'node:child_process';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import { MillraceError } from '../../core/errors.js';
import type { ShardSnapshotInfo } from '../snapshot-info.js';

const run = promisify(execFile);

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function tool(name: 'pg_dump' | 'pg_restore', args: string[]): Promise<void> {
  try {
    await run(name, args, { maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT')
      throw new MillraceError(
        'config_invalid',
        `${name} is not installed; the PostgreSQL backup and restore need the client tools (${name}) of the server's major version or newer`,
      );
    throw new MillraceError('internal', `${name} failed: ${(e.stderr ?? e.message).trim()}`);
  }
}

/**
 * Online, consistent copy of a PostgreSQL shard: a REPEATABLE READ, READ ONLY
 * transaction exports its snapshot, reads the shard's head and checkpoint in
 * it, and `pg_dump --snapshot` dumps the database (custom format) as of that
 * very snapshot while writers go on. The manifest's head is therefore
 * exactly the dump's head. pg_dump rather than a home-made table export: it
 * carries whatever the faces created at runtime (ledger partitions,
 * sequences, indexes) and pg_restore replays it in one transaction.
 */
export async function backupPostgres(url: string, dest: string): Promise<ShardSnapshotInfo> {
  const partial = `${dest}.partial`;
  await rm(partial, { force: true });
  const client = new pg.Client({ connectionString: url, application_name: 'millrace-backup' });
  await client.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snap = (await client.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
    const head = (
      await client.query<{ pos: string; hash: Buffer }>(
        'SELECT pos, hash FROM events WHERE pos IS NOT NULL ORDER BY pos DESC LIMIT 1',
      )
    ).rows[0];
    const events = Number(
      (await client.query<{ n: string }>('SELECT COUNT(*) AS n FROM events WHERE pos IS NOT NULL')).rows[0]!.n,
    );
    const gaps = (
      await client.query("SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'chain_gaps'")
    ).rowCount;
    const cp = gaps
      ? (
          await client.query<{ last_pos: string; last_hash: Buffer }>(
            'SELECT last_pos, last_hash FROM chain_gaps WHERE first_pos = 1',
          )
        ).rows[0]
      : undefined;
    await tool('pg_dump', [
      '--snapshot',
      snap,
      '--format=custom',
      '--no-owner',
      '--no-privileges',
      '--file',
      partial,
      '--dbname',
      url,
    ]);
    await client.query('COMMIT');
    await fsyncPath(partial);
    await rename(partial, dest);
    await fsyncPath(dirname(dest));
    return {
      head: head ? Number(head.pos) : 0,
      headHash: head ? head.hash.toString('hex') : null,
      events,
      checkpoint: cp ? { pos: Number(cp.last_pos), hash: cp.last_hash.toString('hex') } : { pos: 0, hash: null },
    };
  } finally {
    // The answer is read; a connection that fails to end is broken, and the server drops it.
    await client.end().catch(() => {});
  }
}

/** Restores a dump into `url`, a database with no tables, in one transaction (a restore killed half-way leaves it empty). */
/** Whether the database at `url` has any table in its public schema. */
export async function postgresHoldsData(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, application_name: 'millrace-restore' });
  await client.connect();
  try {
    return (
      Number(
        (await client.query<{ n: string }>("SELECT COUNT(*) AS n FROM pg_tables WHERE schemaname = 'public'")).rows[0]!
          .n,
      ) > 0
    );
  } finally {
    // The answer is read; a connection that fails to end is broken, and the server drops it.
    await client.end().catch(() => {});
  }
}

export async function restorePostgres(file: string, url: string): Promise<void> {
  if (await postgresHoldsData(url)) {
    throw new MillraceError(
      'restore_target_not_empty',
      `the database of ${url.replace(/\/\/([^:@/]+):[^@]*@/, '//$1:***@')} already has tables; restore only into empty databases`,
    );
  }
  await tool('pg_restore', [
    '--no-owner',
    '--no-privileges',
    '--exit-on-error',
    '--single-transaction',
    '--dbname',
    url,
    file,
  ]);
}
