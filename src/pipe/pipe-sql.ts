/**
 * Every SQL statement of the pipe, in one place. `?` placeholders; the
 * bulk forms (unnest, `= ANY`) are PostgreSQL's.
 */

/** A session a client may still write to. */
export const WRITABLE = `state IN ('open', 'delivering')`;

/** A client may finish a writable session; a handler's verdict only the delivery it got (its repeats count). */
export function deliveryCond(delivery: number | undefined): [string, number[]] {
  return delivery === undefined ? [WRITABLE, []] : [`state = 'delivering' AND repeats = ?`, [delivery]];
}

/** The same condition in bulk statements (t.delivery: null for a client's own session). */
const DELIVERY_COND = `((t.delivery IS NULL AND p.state IN ('open', 'delivering')) OR (t.delivery IS NOT NULL AND p.state = 'delivering' AND p.repeats = t.delivery))`;

/** A client may also cancel (delete) a session it stored; a handler's verdict still only its own delivery. */
export function deleteCond(delivery: number | undefined): [string, number[]] {
  return delivery === undefined ? [`state IN ('open', 'delivering', 'stored')`, []] : deliveryCond(delivery);
}
const DELETE_COND = `((t.delivery IS NULL AND p.state IN ('open', 'delivering', 'stored')) OR (t.delivery IS NOT NULL AND p.state = 'delivering' AND p.repeats = t.delivery))`;

export const SQL = {
  // ---- owners ----
  upsertOwner:
    'INSERT INTO pipe_owners (owner, alive_until) VALUES (?, ?) ON CONFLICT (owner) DO UPDATE SET alive_until = excluded.alive_until',
  ownedOpenSessions: `SELECT id, kind FROM pipe_sessions WHERE owner = ? AND state = 'open'`,
  deleteOwner: 'DELETE FROM pipe_owners WHERE owner = ?',
  beatOwner: 'UPDATE pipe_owners SET alive_until = ? WHERE owner = ?',
  ownerAliveUntil: 'SELECT alive_until FROM pipe_owners WHERE owner = ?',

  // ---- reads ----
  session:
    'SELECT id, kind, state, owner, repeats, created_at, touched_at, due_at, last_error FROM pipe_sessions WHERE id = ?',
  records: 'SELECT data FROM pipe_records WHERE session_id = ? ORDER BY id',
  sessionState: 'SELECT state FROM pipe_sessions WHERE id = ?',
  sessionKind: 'SELECT kind FROM pipe_sessions WHERE id = ?',

  // ---- session writes ----
  insertSession: `INSERT INTO pipe_sessions (id, kind, state, owner, created_at, touched_at) VALUES (?, ?, 'open', ?, ?, ?)`,
  /** A multi-row INSERT of `n` new sessions (five parameters each). */
  insertSessions: (n: number): string =>
    `INSERT INTO pipe_sessions (id, kind, state, owner, created_at, touched_at) VALUES ${Array.from({ length: n }, () => `(?, ?, 'open', ?, ?, ?)`).join(', ')}`,
  writableFree: `SELECT CASE WHEN owner IS NULL THEN 1 ELSE 0 END AS free FROM pipe_sessions WHERE id = ? AND ${WRITABLE}`,
  touch: 'UPDATE pipe_sessions SET touched_at = ? WHERE id = ?',
  touchWritable: `UPDATE pipe_sessions SET touched_at = ? WHERE id = ? AND ${WRITABLE}`,
  recordSeqExists: 'SELECT 1 AS x FROM pipe_records WHERE session_id = ? AND seq = ?',
  deleteRecords: 'DELETE FROM pipe_records WHERE session_id = ?',
  /** The unique (session_id, seq) index turns a repeated seq into no row written. */
  insertRecord: 'INSERT INTO pipe_records (session_id, seq, data) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
  /** Bulk appends: touched ids and times, then record session ids, seqs and data. */
  appendBulk: `WITH u AS (
         UPDATE pipe_sessions p SET touched_at = t.now FROM unnest(?::text[], ?::bigint[]) AS t(id, now)
          WHERE p.id = t.id AND p.${WRITABLE} RETURNING p.id
       ), v AS (
         SELECT * FROM unnest(?::text[], ?::bigint[], ?::bytea[]) WITH ORDINALITY AS v(session_id, seq, data, ord)
       ), ins AS (
         INSERT INTO pipe_records (session_id, seq, data)
         SELECT v.session_id, v.seq, v.data FROM v JOIN u ON u.id = v.session_id ORDER BY v.ord
         ON CONFLICT DO NOTHING RETURNING session_id, seq
       )
       SELECT (SELECT array_agg(id) FROM u) AS ok,
              (SELECT array_agg(session_id || ':' || seq) FROM ins WHERE seq IS NOT NULL) AS written`,
  storeBulk: `UPDATE pipe_sessions p SET state = 'stored', owner = NULL, due_at = t.due, touched_at = t.now, parked = 0
         FROM unnest(?::text[], ?::bigint[], ?::bigint[], ?::int[]) AS t(id, due, now, delivery)
        WHERE p.id = t.id AND ${DELIVERY_COND}
        RETURNING p.id, p.kind`,
  parkMany: 'UPDATE pipe_sessions SET parked = 1 WHERE id = ANY(?::text[])',
  deleteBulk: `DELETE FROM pipe_sessions p USING unnest(?::text[], ?::int[]) AS t(id, delivery) WHERE p.id = t.id AND ${DELETE_COND} RETURNING p.id`,
  deleteRecordsMany: 'DELETE FROM pipe_records WHERE session_id = ANY(?::text[])',
  store: (cond: string): string =>
    `UPDATE pipe_sessions SET state = 'stored', owner = NULL, due_at = ?, touched_at = ?, parked = 0 WHERE id = ? AND ${cond} RETURNING kind`,
  deleteSession: (cond: string): string => `DELETE FROM pipe_sessions WHERE id = ? AND ${cond}`,

  // ---- coming back ----
  park: 'UPDATE pipe_sessions SET parked = 1 WHERE id = ?',
  unparkOne: 'UPDATE pipe_sessions SET parked = 0 WHERE id = ? AND parked = 1',
  /** Open session to stored; optional conditions on its owner and on when it was last touched. */
  unfinished: (byOwner: boolean, byTouched: boolean): string =>
    `UPDATE pipe_sessions SET state = 'stored', owner = NULL, due_at = ?, touched_at = ? WHERE id = ? AND state = 'open'${byOwner ? ' AND owner = ?' : ''}${byTouched ? ' AND touched_at = ?' : ''}`,
  dead: (byTouched: boolean): string =>
    `UPDATE pipe_sessions SET state = 'dead', owner = NULL, due_at = NULL, last_error = ?, touched_at = ? WHERE id = ? AND state = 'delivering' AND repeats = ?${byTouched ? ' AND touched_at = ?' : ''}`,
  backOff: (byTouched: boolean): string =>
    `UPDATE pipe_sessions SET state = 'stored', owner = NULL, due_at = ?, last_error = ?, touched_at = ? WHERE id = ? AND state = 'delivering' AND repeats = ?${byTouched ? ' AND touched_at = ?' : ''}`,
  parkedOfKind: `SELECT id, due_at FROM pipe_sessions WHERE state = 'stored' AND parked = 1 AND kind = ? ORDER BY due_at, id LIMIT 500`,
  unparkStored: `UPDATE pipe_sessions SET parked = 0 WHERE id = ? AND state = 'stored' AND parked = 1`,
  parkStored: `UPDATE pipe_sessions SET parked = 1 WHERE id = ? AND state = 'stored'`,
  startDelivery: `UPDATE pipe_sessions SET state = 'delivering', repeats = repeats + 1, touched_at = ?, due_at = NULL WHERE id = ? AND state = 'stored' RETURNING repeats, kind`,
  leaseRead: 'SELECT id, kind, state, owner, repeats, touched_at FROM pipe_sessions WHERE id = ?',

  // ---- dead letters ----
  redrive: `UPDATE pipe_sessions SET state = 'stored', repeats = 0, due_at = ?, touched_at = ? WHERE id = ? AND state = 'dead' RETURNING kind`,
  deleteDead: `DELETE FROM pipe_sessions WHERE id = ? AND state = 'dead'`,
  /** One page of dead letters by id, of one kind or all. */
  listDead: (ofKind: boolean) =>
    `SELECT id, kind, repeats, last_error, touched_at FROM pipe_sessions WHERE state = 'dead' AND id > ?${ofKind ? ' AND kind = ?' : ''} ORDER BY id LIMIT ?`,

  // ---- lists ----
  /** One page of sessions by id with their record counts; `where` are conditions on pipe_sessions (`id > ?` first). */
  listSessions: (where: readonly string[]) =>
    `SELECT s.id, s.kind, s.state, s.touched_at, s.due_at, (SELECT count(*) FROM pipe_records r WHERE r.session_id = s.id) AS records
       FROM pipe_sessions s WHERE ${where.map((w) => `s.${w}`).join(' AND ')} ORDER BY s.id LIMIT ?`,
} as const;
