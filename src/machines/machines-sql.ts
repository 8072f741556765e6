/**
 * The machines face's SQL, in one place: parameterised statements over the
 * machines, machine_tags and machine_notifications tables, written once for
 * both dialects (`?` placeholders, ON CONFLICT and RETURNING are shared).
 */

/** The columns a machine's state is read from. */
const COLS = 'ns, id, gen, status, reason, aux_state, last_event, timer, tags, version';

export const SQL = {
  countByStatus: "SELECT status, count(*) AS n FROM machines WHERE ns = ? AND status <> 'none' GROUP BY status",
  /** One page of a namespace's machines in one status, by id. */
  listByStatus:
    'SELECT id, status, reason, last_event, timer, tags, updated_at FROM machines WHERE ns = ? AND status = ? AND id > ? ORDER BY id LIMIT ?',
  genStatus: 'SELECT gen, status FROM machines WHERE ns = ? AND id = ?',
  insertNotification:
    'INSERT INTO machine_notifications (ns, id, gen, args, created_at) VALUES (?, ?, ?, ?, ?) RETURNING nid',
  getRow: `SELECT ${COLS} FROM machines WHERE ns = ? AND id = ?`,
  /** Takes (or renews) the lease of a machine that is free, expired or already ours; returns the row. */
  takeLease: `UPDATE machines SET lease_holder = ?, lease_until = ?
            WHERE ns = ? AND id = ? AND (lease_holder IS NULL OR lease_until < ? OR lease_holder = ?) RETURNING ${COLS}`,
  exists: 'SELECT 1 AS n FROM machines WHERE ns = ? AND id = ?',
  leaseHolder: 'SELECT lease_holder FROM machines WHERE ns = ? AND id = ?',
  /** Takes the lease from a holder whose node has ended (checked by the caller); nothing if the holder changed meanwhile. */
  takeDeadLease: `UPDATE machines SET lease_holder = ?, lease_until = ? WHERE ns = ? AND id = ? AND lease_holder = ? RETURNING ${COLS}`,
  /** The row a machine starts from (status none) if it does not exist yet. */
  insertEmpty: `INSERT INTO machines (ns, id, gen, status, last_event, tags, version, updated_at) VALUES (?, ?, 0, 'none', 0, '[]', 0, ?) ON CONFLICT (ns, id) DO NOTHING`,
  releaseLease:
    'UPDATE machines SET lease_holder = NULL, lease_until = NULL WHERE ns = ? AND id = ? AND lease_holder = ?',
  /** Extends a lease this node holds (a step outliving the lease it kept from its last commit). */
  renewLease: 'UPDATE machines SET lease_until = ? WHERE ns = ? AND id = ? AND lease_holder = ?',
  /** Writes a step's result, checked against the version the step read; the lease is given up or kept (holder and end, or NULLs). */
  updateRow: `UPDATE machines SET gen = ?, status = ?, reason = ?, aux_state = ?, last_event = ?, timer = ?, tags = ?, version = ?,
              lease_holder = ?, lease_until = ?, updated_at = ?
        WHERE ns = ? AND id = ? AND version = ?`,
  deleteNotification: 'DELETE FROM machine_notifications WHERE nid = ?',
  deleteNotifications: 'DELETE FROM machine_notifications WHERE ns = ? AND id = ?',
  deleteTag: 'DELETE FROM machine_tags WHERE ns = ? AND tag = ? AND id = ?',
  firstNotificationNid: 'SELECT nid FROM machine_notifications WHERE ns = ? AND id = ? LIMIT 1',
  insertTag: 'INSERT INTO machine_tags (ns, tag, id, gen) VALUES (?, ?, ?, ?) ON CONFLICT (ns, tag) DO NOTHING',
  getTag: 'SELECT id, gen FROM machine_tags WHERE ns = ? AND tag = ?',
  holderOfTag: 'SELECT gen, status, tags FROM machines WHERE ns = ? AND id = ?',
  moveTag: 'UPDATE machine_tags SET id = ?, gen = ? WHERE ns = ? AND tag = ?',
  firstNotification: 'SELECT nid, gen, args FROM machine_notifications WHERE ns = ? AND id = ? ORDER BY nid LIMIT 1',
} as const;
