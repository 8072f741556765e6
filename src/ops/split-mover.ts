import type { Queryable, Row, Tx } from '../storage/port.js';
import type { SplitMover } from '../storage/split-mover.js';

/**
 * What a shard split moves of the ops face, by shard key: a schedule
 * (["schedule", name]) with its fire records and its timers (the tick
 * `sched:<name>` and each fire's run `sfire:<name>:<fire time>`); a bulk job
 * (["bulk", id]) with the targets it has met and its step timer `bulk:<id>`.
 * Timers keep their due time, payload and version; a fire time is a fire's
 * key on the target as on the source, so a fire recorded before the cut-over
 * is not recorded (or run) again.
 */
type InRange = (key: readonly string[] | string) => boolean;
type Key = readonly string[];

interface Table {
  table: string;
  key: (r: Row) => Key;
  /** Deletes one row (by its primary key). */
  del: (tx: Tx, r: Row) => Promise<number>;
}

const TABLES: readonly Table[] = [
  {
    table: 'schedules',
    key: (r) => ['schedule', String(r.name)],
    del: (tx, r) => tx.run('DELETE FROM schedules WHERE name = ?', [r.name]),
  },
  {
    table: 'schedule_fires',
    key: (r) => ['schedule', String(r.schedule)],
    del: (tx, r) => tx.run('DELETE FROM schedule_fires WHERE schedule = ? AND fire_at = ?', [r.schedule, r.fire_at]),
  },
  {
    table: 'bulk_jobs',
    key: (r) => ['bulk', String(r.id)],
    del: (tx, r) => tx.run('DELETE FROM bulk_jobs WHERE id = ?', [r.id]),
  },
  {
    table: 'bulk_job_items',
    key: (r) => ['bulk', String(r.job)],
    del: (tx, r) => tx.run('DELETE FROM bulk_job_items WHERE job = ? AND item = ?', [r.job, r.item]),
  },
];

/** The shard key of an ops timer's owner, or undefined for another face's timer. */
export function keyOfOpsTimer(owner: string): Key | undefined {
  if (owner.startsWith('sched:')) return ['schedule', owner.slice('sched:'.length)];
  const fire = /^sfire:(.*):(-?\d+)$/s.exec(owner);
  if (fire !== null) return ['schedule', fire[1]!];
  if (owner.startsWith('bulk:')) return ['bulk', owner.slice('bulk:'.length)];
  return undefined;
}

async function rowsInRange(q: Queryable, t: Table, inRange: InRange): Promise<Row[]> {
  const rows = await q.all<Row>(`SELECT * FROM ${t.table}`);
  return rows.filter((r) => inRange(t.key(r)));
}

async function timersInRange(q: Queryable, inRange: InRange): Promise<Row[]> {
  const rows = await q.all<Row>(
    "SELECT owner, version, kind, due_at, payload, attempts FROM timers WHERE owner LIKE 'sched:%' OR owner LIKE 'sfire:%' OR owner LIKE 'bulk:%'",
  );
  return rows.filter((r) => {
    const k = keyOfOpsTimer(String(r.owner));
    return k !== undefined && inRange(k);
  });
}

async function insertRow(tx: Tx, table: string, r: Row): Promise<void> {
  const cols = Object.keys(r);
  await tx.run(
    `INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`,
    cols.map((c) => r[c]),
  );
}

async function deleteInRange(tx: Tx, inRange: InRange): Promise<number> {
  let n = 0;
  for (const t of TABLES) for (const r of await rowsInRange(tx, t, inRange)) n += await t.del(tx, r);
  for (const r of await timersInRange(tx, inRange)) n += await tx.run('DELETE FROM timers WHERE owner = ?', [r.owner]);
  return n;
}

/** The ops face's part of a shard split. */
export const OPS_SPLIT_MOVER: SplitMover = {
  kind: 'ops',
  migrationPrefix: 'ops/',
  keyOfStream: () => undefined,
  async copyRows(source, target, inRange) {
    // Replace: what an earlier, cut-off attempt copied goes first.
    await deleteInRange(target, inRange);
    let n = 0;
    for (const t of TABLES) {
      const rows = await rowsInRange(source, t, inRange);
      for (const r of rows) await insertRow(target, t.table, r);
      n += rows.length;
    }
    // The timers travel as they were, unclaimed: the target's nodes fire them once it owns the range.
    const timers = await timersInRange(source, inRange);
    for (const r of timers) await insertRow(target, 'timers', r);
    return n + timers.length;
  },
  dropRows(source, inRange) {
    return deleteInRange(source, inRange);
  },
};
