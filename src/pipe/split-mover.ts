import type { Queryable, Row, Tx } from '../storage/port.js';
import type { SplitMover } from '../storage/split-mover.js';

/**
 * What a shard split moves of the pipe, by shard key (the session id): a
 * session's row, its records (in write order), its single timer (`pipe/<id>`:
 * lease or redelivery, due time and payload kept), and the owner rows of the
 * streaming connections that own moved sessions (copied, not moved: a
 * connection may own sessions on both sides). The pipe writes no log
 * streams. Session ids are random (48-bit time, 80 random bits), not counted
 * per shard, so the target never mints one a moved session has; record ids
 * are the target's own, given in the source's write order.
 */
type InRange = (key: readonly string[] | string) => boolean;

const TIMER_PREFIX = 'pipe/';
/** Rows per multi-row INSERT of records (four parameters each). */
const RECORD_BATCH = 200;

async function sessionsInRange(q: Queryable, inRange: InRange): Promise<Row[]> {
  const rows = await q.all<Row>('SELECT * FROM pipe_sessions');
  return rows.filter((r) => inRange(String(r.id)));
}

/** Session ids that have records in `q`, in range (records never outlive their session, but a cut-off copy may have left some). */
async function recordSessionsInRange(q: Queryable, inRange: InRange): Promise<string[]> {
  const rows = await q.all<{ session_id: string }>('SELECT DISTINCT session_id FROM pipe_records');
  return rows.map((r) => String(r.session_id)).filter((id) => inRange(id));
}

async function timersInRange(q: Queryable, inRange: InRange): Promise<Row[]> {
  const rows = await q.all<Row>(
    "SELECT owner, version, kind, due_at, payload, attempts FROM timers WHERE owner LIKE 'pipe/%'",
  );
  return rows.filter((r) => inRange(String(r.owner).slice(TIMER_PREFIX.length)));
}

async function deleteByIds(tx: Tx, sql: (marks: string) => string, ids: readonly string[]): Promise<number> {
  let n = 0;
  for (let off = 0; off < ids.length; off += 500) {
    const chunk = ids.slice(off, off + 500);
    n += await tx.run(sql(chunk.map(() => '?').join(', ')), chunk);
  }
  return n;
}

async function insertRow(tx: Tx, table: string, r: Row): Promise<void> {
  const cols = Object.keys(r);
  await tx.run(
    `INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`,
    cols.map((c) => r[c]),
  );
}

/** Deletes sessions, records and timers of keys in range (the target's before a copy, the source's at cleanup). */
async function deleteInRange(tx: Tx, inRange: InRange): Promise<number> {
  const sessions = (await sessionsInRange(tx, inRange)).map((r) => String(r.id));
  const recordOwners = await recordSessionsInRange(tx, inRange);
  const timers = (await timersInRange(tx, inRange)).map((r) => String(r.owner));
  let n = await deleteByIds(tx, (m) => `DELETE FROM pipe_sessions WHERE id IN (${m})`, sessions);
  n += await deleteByIds(tx, (m) => `DELETE FROM pipe_records WHERE session_id IN (${m})`, recordOwners);
  n += await deleteByIds(tx, (m) => `DELETE FROM timers WHERE owner IN (${m})`, timers);
  return n;
}

/** The pipe's part of a shard split. */
export const PIPE_SPLIT_MOVER: SplitMover = {
  kind: 'pipe',
  migrationPrefix: 'pipe/',
  keyOfStream: () => undefined,
  async copyRows(source, target, inRange) {
    // Replace: what an earlier, cut-off attempt copied goes first.
    await deleteInRange(target, inRange);
    const sessions = await sessionsInRange(source, inRange);
    for (const s of sessions) await insertRow(target, 'pipe_sessions', s);
    const moved = new Set(sessions.map((s) => String(s.id)));
    let n = sessions.length;
    // Records in the source's write order (its ids), so the target's new ids keep that order.
    if (moved.size > 0) {
      let after = 0;
      for (;;) {
        const page = await source.all<{ id: number; session_id: string; seq: number | null; data: Buffer }>(
          'SELECT id, session_id, seq, data FROM pipe_records WHERE id > ? ORDER BY id LIMIT 2000',
          [after],
        );
        if (page.length === 0) break;
        after = Number(page[page.length - 1]!.id);
        const mine = page.filter((r) => moved.has(String(r.session_id)));
        for (let off = 0; off < mine.length; off += RECORD_BATCH) {
          const chunk = mine.slice(off, off + RECORD_BATCH);
          await target.run(
            `INSERT INTO pipe_records (session_id, seq, data) VALUES ${chunk.map(() => '(?, ?, ?)').join(', ')}`,
            chunk.flatMap((r) => [r.session_id, r.seq, r.data]),
          );
        }
        n += mine.length;
      }
    }
    // The connections that own moved sessions: their liveness travels (the newer of the two wins).
    const owners = [...new Set(sessions.map((s) => s.owner).filter((o): o is string => typeof o === 'string'))];
    for (const o of owners) {
      const row = await source.all<{ alive_until: number }>('SELECT alive_until FROM pipe_owners WHERE owner = ?', [o]);
      if (row[0] === undefined) continue;
      await target.run(
        `INSERT INTO pipe_owners (owner, alive_until) VALUES (?, ?)
         ON CONFLICT (owner) DO UPDATE SET alive_until = CASE WHEN excluded.alive_until > pipe_owners.alive_until THEN excluded.alive_until ELSE pipe_owners.alive_until END`,
        [o, Number(row[0].alive_until)],
      );
      n++;
    }
    // Each session's timer, as it was (a lease runs on; a stored session comes back at its due time, from the target).
    const timers = await timersInRange(source, inRange);
    for (const r of timers) await insertRow(target, 'timers', r);
    return n + timers.length;
  },
  dropRows(source, inRange) {
    return deleteInRange(source, inRange);
  },
};
