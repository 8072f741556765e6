import type { Queryable, Row, Tx } from '../storage/port.js';
import type { SplitMover } from '../storage/split-mover.js';

/**
 * What a shard split moves of the machines face, by shard key: a machine's
 * row, its streams' events (`m/<ns>/<id>/<gen>`, every incarnation), its
 * notifications and their keys, its timers (timeout and notification
 * delivery) under [ns, id]; tags under their own key [ns, "tag", tag].
 */
type InRange = (key: readonly string[] | string) => boolean;

function keyOfStream(stream: string): readonly string[] | undefined {
  if (!stream.startsWith('m/')) return undefined;
  const a = stream.indexOf('/', 2);
  const b = stream.lastIndexOf('/');
  if (a < 0 || b <= a) return undefined;
  return [stream.slice(2, a), stream.slice(a + 1, b)];
}

/** [ns, id] of a machine timer's owner (`m:<ns>:<id>` timeout, `mn:<ns>:<id>` notification delivery). */
function keyOfTimer(owner: string): readonly string[] | undefined {
  const m = /^mn?:([^:]+):(.*)$/s.exec(owner);
  return m === null ? undefined : [m[1]!, m[2]!];
}

const TABLES = [
  { table: 'machines', key: (r: Row) => [String(r.ns), String(r.id)] },
  { table: 'machine_notifications', key: (r: Row) => [String(r.ns), String(r.id)] },
  { table: 'machine_notification_keys', key: (r: Row) => [String(r.ns), String(r.id)] },
  { table: 'machine_tags', key: (r: Row) => [String(r.ns), 'tag', String(r.tag)] },
] as const;

async function rowsInRange(
  q: Queryable,
  table: string,
  key: (r: Row) => readonly string[],
  inRange: InRange,
): Promise<Row[]> {
  const rows = await q.all<Row>(`SELECT * FROM ${table}`);
  return rows.filter((r) => inRange(key(r)));
}

async function machineTimers(q: Queryable, inRange: InRange): Promise<Row[]> {
  const rows = await q.all<Row>(
    "SELECT owner, version, kind, due_at, payload, attempts FROM timers WHERE owner LIKE 'm:%' OR owner LIKE 'mn:%'",
  );
  return rows.filter((r) => {
    const k = keyOfTimer(String(r.owner));
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

/** The machines face's part of a shard split. */
export const MACHINES_SPLIT_MOVER: SplitMover = {
  kind: 'machines',
  migrationPrefix: 'machines/',
  keyOfStream,
  async copyRows(source, target, inRange, dialect) {
    let n = 0;
    for (const t of TABLES) {
      const rows = await rowsInRange(source, t.table, t.key, inRange);
      // Replace: what an earlier, cut-off attempt copied goes first.
      for (const r of await rowsInRange(target, t.table, t.key, inRange)) {
        if (t.table === 'machine_tags')
          await target.run('DELETE FROM machine_tags WHERE ns = ? AND tag = ?', [r.ns, r.tag]);
        else if (t.table === 'machine_notifications')
          await target.run('DELETE FROM machine_notifications WHERE nid = ?', [r.nid]);
        else if (t.table === 'machine_notification_keys')
          await target.run('DELETE FROM machine_notification_keys WHERE ns = ? AND id = ? AND key = ?', [
            r.ns,
            r.id,
            r.key,
          ]);
        else await target.run('DELETE FROM machines WHERE ns = ? AND id = ?', [r.ns, r.id]);
      }
      for (const r of rows) {
        // The processing lease of the source's node does not travel: the machine is free on the target.
        await insertRow(target, t.table, t.table === 'machines' ? { ...r, lease_holder: null, lease_until: null } : r);
      }
      n += rows.length;
    }
    // Notification ids were copied as they were: the target's counter must pass them.
    const top = await target.all<{ m: number | null }>('SELECT max(nid) AS m FROM machine_notifications');
    if (top[0]?.m != null && dialect === 'postgres') {
      await target.all(
        "SELECT setval('machine_notifications_nid_seq', GREATEST(?, (SELECT last_value FROM machine_notifications_nid_seq)))",
        [Number(top[0].m)],
      );
    }
    const timers = await machineTimers(source, inRange);
    for (const r of await machineTimers(target, inRange))
      await target.run('DELETE FROM timers WHERE owner = ?', [r.owner]);
    for (const r of timers) await insertRow(target, 'timers', r);
    return n + timers.length;
  },
  async dropRows(source, inRange) {
    let n = 0;
    for (const r of await rowsInRange(source, 'machines', TABLES[0].key, inRange))
      n += await source.run('DELETE FROM machines WHERE ns = ? AND id = ?', [r.ns, r.id]);
    for (const r of await rowsInRange(source, 'machine_notifications', TABLES[1].key, inRange))
      n += await source.run('DELETE FROM machine_notifications WHERE nid = ?', [r.nid]);
    for (const r of await rowsInRange(source, 'machine_notification_keys', TABLES[2].key, inRange)) {
      n += await source.run('DELETE FROM machine_notification_keys WHERE ns = ? AND id = ? AND key = ?', [
        r.ns,
        r.id,
        r.key,
      ]);
    }
    for (const r of await rowsInRange(source, 'machine_tags', TABLES[3].key, inRange))
      n += await source.run('DELETE FROM machine_tags WHERE ns = ? AND tag = ?', [r.ns, r.tag]);
    for (const r of await machineTimers(source, inRange))
      n += await source.run('DELETE FROM timers WHERE owner = ?', [r.owner]);
    return n;
  },
};
