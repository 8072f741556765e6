/**
 * Every SQL statement of the ledger face, written once with `?` placeholders
 * for both dialects. Builders take what varies (a row count, a partition name
 * that the caller derived from a date, never from input).
 */

const placeholders = (n: number): string => Array.from({ length: n }, () => '?').join(', ');
const rows8 = (n: number): string => Array.from({ length: n }, () => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ');

export const ledgerSql = {
  // ------------------------------------------------------------ idempotency and batches
  idempotencyGet: 'SELECT request_hash, answer FROM ledger_idempotency WHERE key = ?',
  idempotencyPut:
    'INSERT INTO ledger_idempotency (key, request_hash, answer, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING',
  batchPartPut:
    'INSERT INTO ledger_batch_parts (key, request_hash, created_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING',
  batchPartGet: 'SELECT request_hash FROM ledger_batch_parts WHERE key = ?',
  /** `n` events of 8 columns each: batch_id, type, acc_key, aux, side, amount, dt, info. */
  insertEvents: (n: number): string =>
    `INSERT INTO ledger_events (batch_id, type, acc_key, aux, side, amount, dt, info) VALUES ${rows8(n)} RETURNING id`,
  /** Any number of events with their ids, from nine arrays (PostgreSQL): one statement text for every count. */
  insertEventsWithIds: `INSERT INTO ledger_events (id, batch_id, type, acc_key, aux, side, amount, dt, info)
       SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::numeric[], ?::bigint[], ?::text[])`,
  /** As insertEventsWithIds, writing only where the SQL condition `ok` holds (a route check in the statement). */
  insertEventsWithIdsWhere: (
    ok: string,
  ): string => `INSERT INTO ledger_events (id, batch_id, type, acc_key, aux, side, amount, dt, info)
       SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::numeric[], ?::bigint[], ?::text[]) AS u WHERE ${ok}`,
  eventIdSequence: 'ledger_events_id_seq',

  // ------------------------------------------------------------ aggregation
  /** Parameters: pos, then `n` event ids. */
  stampPositions: (n: number): string => `UPDATE ledger_events SET pos = ? WHERE id IN (${placeholders(n)})`,
  aggregatesFrom: `SELECT boundary, CAST(debit AS TEXT) AS debit, CAST(credit AS TEXT) AS credit FROM ledger_aggregates
        WHERE type = ? AND acc_key = ? AND grp = ? AND grp_vals = ? AND boundary >= COALESCE(
          (SELECT MAX(boundary) FROM ledger_aggregates WHERE type = ? AND acc_key = ? AND grp = ? AND grp_vals = ? AND boundary < ?), ?)
        ORDER BY boundary`,
  aggregateInsert:
    'INSERT INTO ledger_aggregates (type, acc_key, grp, grp_vals, boundary, debit, credit, pos) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  aggregateUpdate:
    'UPDATE ledger_aggregates SET debit = ?, credit = ?, pos = ? WHERE type = ? AND acc_key = ? AND grp = ? AND grp_vals = ? AND boundary = ?',
  /** Parameters: type, acc_key, grp, level, then `n` bucket starts. */
  bucketsAt: (
    n: number,
  ): string => `SELECT bucket, grp_vals, CAST(debit AS TEXT) AS debit, CAST(credit AS TEXT) AS credit FROM ledger_buckets
          WHERE type = ? AND acc_key = ? AND grp = ? AND level = ? AND bucket IN (${placeholders(n)})`,
  bucketUpdate:
    'UPDATE ledger_buckets SET debit = ?, credit = ? WHERE type = ? AND acc_key = ? AND grp = ? AND level = ? AND bucket = ? AND grp_vals = ?',
  /** `n` buckets of 8 columns each: type, acc_key, grp, level, bucket, grp_vals, debit, credit. */
  bucketInsert: (n: number): string =>
    `INSERT INTO ledger_buckets (type, acc_key, grp, level, bucket, grp_vals, debit, credit) VALUES ${rows8(n)}`,

  // ------------------------------------------------------------ reads
  cursorPos: 'SELECT pos FROM cursors WHERE name = ?',
  eventsBefore:
    'SELECT side, CAST(amount AS TEXT) AS amount, aux FROM ledger_events WHERE type = ? AND acc_key = ? AND dt < ?',
  /** Per group value (a skip scan over the distinct values), the aggregate at the latest boundary <= dt. */
  latestAggregates: `WITH RECURSIVE g(v) AS (
         SELECT (SELECT MIN(grp_vals) FROM ledger_aggregates WHERE type = ? AND acc_key = ? AND grp = ?)
         UNION ALL
         SELECT (SELECT MIN(grp_vals) FROM ledger_aggregates WHERE type = ? AND acc_key = ? AND grp = ? AND grp_vals > g.v) FROM g WHERE g.v IS NOT NULL
       )
       SELECT a.grp_vals, CAST(a.debit AS TEXT) AS debit, CAST(a.credit AS TEXT) AS credit
         FROM g CROSS JOIN ledger_aggregates a
        WHERE a.type = ? AND a.acc_key = ? AND a.grp = ? AND a.grp_vals = g.v
          AND a.boundary = (SELECT MAX(b.boundary) FROM ledger_aggregates b WHERE b.type = ? AND b.acc_key = ? AND b.grp = ? AND b.grp_vals = g.v AND b.boundary <= ?)`,
  bucketRanges: `SELECT grp_vals, CAST(debit AS TEXT) AS debit, CAST(credit AS TEXT) AS credit FROM ledger_buckets
        WHERE type = ? AND acc_key = ? AND grp = ? AND level = 1 AND bucket >= ? AND bucket < ?
       UNION ALL
       SELECT grp_vals, CAST(debit AS TEXT) AS debit, CAST(credit AS TEXT) AS credit FROM ledger_buckets
        WHERE type = ? AND acc_key = ? AND grp = ? AND level = 2 AND bucket >= ? AND bucket < ?`,
  eventsTail: `SELECT side, CAST(amount AS TEXT) AS amount, aux FROM ledger_events WHERE type = ? AND acc_key = ? AND dt >= ? AND dt < ? AND pos IS NOT NULL
       UNION ALL
       SELECT side, CAST(amount AS TEXT) AS amount, aux FROM ledger_events WHERE type = ? AND acc_key = ? AND pos IS NULL AND dt < ?`,
  eventsPage: `SELECT id, batch_id, aux, side, CAST(amount AS TEXT) AS amount, dt, info FROM ledger_events
          WHERE type = ? AND acc_key = ? AND dt >= ? AND dt < ? AND (dt > ? OR id > ?)
          ORDER BY dt, id LIMIT ?`,

  // ------------------------------------------------------------ locks
  lockHead:
    'INSERT INTO ledger_lock_heads (type, lock_key, n) VALUES (?, ?, 1) ON CONFLICT (type, lock_key) DO UPDATE SET n = ledger_lock_heads.n + 1',
  lockHeldMode: 'SELECT mode FROM ledger_locks WHERE type = ? AND lock_key = ? AND uid = ? AND expires_at > ?',
  lockDeleteExpired: 'DELETE FROM ledger_locks WHERE type = ? AND lock_key = ? AND expires_at <= ?',
  lockHolders: 'SELECT uid, mode FROM ledger_locks WHERE type = ? AND lock_key = ?',
  lockUpdate: 'UPDATE ledger_locks SET mode = ?, expires_at = ? WHERE type = ? AND lock_key = ? AND uid = ?',
  lockInsert: 'INSERT INTO ledger_locks (type, lock_key, uid, mode, expires_at) VALUES (?, ?, ?, ?, ?)',
  lockExtend: 'UPDATE ledger_locks SET expires_at = ? WHERE type = ? AND lock_key = ? AND uid = ?',
  lockLive: 'SELECT 1 AS x FROM ledger_locks WHERE type = ? AND lock_key = ? AND uid = ? AND expires_at > ?',
  lockDelete: 'DELETE FROM ledger_locks WHERE type = ? AND lock_key = ? AND uid = ?',
  lockLiveHolders:
    'SELECT uid, mode, expires_at FROM ledger_locks WHERE type = ? AND lock_key = ? AND expires_at > ? ORDER BY uid',

  // ------------------------------------------------------------ states
  stateVersion: 'SELECT version FROM ledger_states WHERE type = ? AND state_key = ?',
  stateInsert:
    'INSERT INTO ledger_states (type, state_key, state, version, updated_at) VALUES (?, ?, ?, 1, ?) ON CONFLICT (type, state_key) DO NOTHING',
  stateUpdate:
    'UPDATE ledger_states SET state = ?, version = version + 1, updated_at = ? WHERE type = ? AND state_key = ? AND version = ?',
  stateGet: 'SELECT state, version FROM ledger_states WHERE type = ? AND state_key = ?',

  // ------------------------------------------------------------ partitions and retention (table partitioning)
  regclass: 'SELECT to_regclass(?) AS r',
  partitionCreateLock: `SELECT pg_advisory_xact_lock(hashtext('millrace:' || ?)) AS l`,
  partitionCreate: (name: string): string => `CREATE TABLE ${name} (LIKE ledger_events INCLUDING DEFAULTS)`,
  /** Parameters: from, to. */
  partitionFillFromDefault: (name: string): string =>
    `WITH moved AS (DELETE FROM ledger_events_default WHERE dt >= ? AND dt < ? RETURNING *) INSERT INTO ${name} SELECT * FROM moved`,
  partitionAttach: (name: string, from: number, to: number): string =>
    `ALTER TABLE ledger_events ATTACH PARTITION ${name} FOR VALUES FROM (${from}) TO (${to})`,
  partitionList: `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ledger_events'::regclass ORDER BY c.relname`,
  partitionUnaggregated: (name: string): string => `SELECT COUNT(*) AS n FROM ${name} WHERE pos IS NULL`,
  partitionMaxPos: (name: string): string => `SELECT MAX(pos) AS p FROM ${name}`,
  /** Parameters: offsetMs, periodMs, periodMs, offsetMs, periodMs. */
  partitionAccountsWithoutBalance: (
    name: string,
  ): string => `SELECT COUNT(*) AS n FROM (SELECT type, acc_key, MAX(dt) AS last FROM ${name} GROUP BY type, acc_key) e
            WHERE NOT EXISTS (SELECT 1 FROM ledger_aggregates a WHERE a.type = e.type AND a.acc_key = e.acc_key AND a.grp = '[]'
                                AND a.boundary >= ((e.last + ?) / ?) * ? - ? + ?)`,
  eventsLockExclusive: 'LOCK TABLE ledger_events IN ACCESS EXCLUSIVE MODE',
  partitionAnyUnaggregated: (name: string): string => `SELECT 1 AS x FROM ${name} WHERE pos IS NULL LIMIT 1`,
  partitionDrop: (name: string): string => `DROP TABLE ${name}`,
} as const;
