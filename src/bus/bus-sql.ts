/**
 * The bus face's SQL, in one place: subscriptions, their leases, the topic lag
 * and the dedupe-by-id rows, written once for both dialects (`?`
 * placeholders, ON CONFLICT and RETURNING are shared).
 */

/** `bus_dedupe.seq` of a claim on the id's home shard: the event is not stored yet. */
export const CLAIM = -1;
/** `bus_dedupe.seq` of a fence on a target shard: the attempt whose token it holds may no longer store the event there. */
export const FENCE = -2;

/**
 * The row that fences one attempt (token) of an id out of a target shard. The
 * id's own row holds the latest fence only; each fenced attempt also keeps a
 * row of its own, which the attempt's write checks. `!` cannot start a topic
 * name, so these never meet an id's row.
 */
export const fenceRef = (ref: string, token: string): string => `!fence/${token}/${ref}`;

export const SQL = {
  // ---- subscriptions and their leases (bus.ts) ----
  dropNodeSubLeases: "DELETE FROM leases WHERE name LIKE 'bus/sub/%' AND holder LIKE ?",
  dropAllSubLeases: "DELETE FROM leases WHERE name LIKE 'bus/sub/%'",
  getSubscription: 'SELECT config, created_at, updated_at FROM bus_subscriptions WHERE name = ?',
  insertSubscription:
    'INSERT INTO bus_subscriptions (name, config, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING',
  updateSubscription: 'UPDATE bus_subscriptions SET config = ?, updated_at = ? WHERE name = ?',
  // The first event at or after a position (retention leaves holes).
  createdAtOf: 'SELECT created_at FROM events WHERE pos >= ? AND pos IS NOT NULL ORDER BY pos LIMIT 1',
  leaseExpiry: 'SELECT expires_at FROM leases WHERE name = ?',
  /** Events of the subscription's topics (stream ranges) between two positions. */
  lagCount: (ranges: string) => `SELECT count(*) AS n FROM events WHERE pos > ? AND pos <= ? AND (${ranges})`,
  listSubscriptionsAfter: 'SELECT name FROM bus_subscriptions WHERE name > ? ORDER BY name LIMIT ?',
  listSubscriptions: 'SELECT name FROM bus_subscriptions ORDER BY name',
  deleteSubscription: 'DELETE FROM bus_subscriptions WHERE name = ?',
  takeLease: `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE leases.expires_at < ? RETURNING holder`,
  renewLease: 'UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?',
  releaseLease: 'DELETE FROM leases WHERE name = ? AND holder = ?',
  // ---- dedupe by id (publisher.ts) ----
  claimOf: 'SELECT stream, seq, token, target, created_at FROM bus_dedupe WHERE ref = ? AND created_at >= ?',
  takeClaim: `INSERT INTO bus_dedupe (ref, stream, seq, created_at, token, target) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (ref) DO UPDATE SET stream = excluded.stream, seq = excluded.seq, created_at = excluded.created_at, token = excluded.token, target = excluded.target
         WHERE bus_dedupe.created_at < ? OR bus_dedupe.seq = ${FENCE} OR (bus_dedupe.seq = ${CLAIM} AND bus_dedupe.token = ?) RETURNING ref`,
  dedupeOf: 'SELECT stream, seq, token FROM bus_dedupe WHERE ref = ? AND created_at >= ?',
  /** The fence of one attempt (`fenceRef`), kept beside the id's row so that a later fence of another attempt does not lift it. */
  fenceToken: `INSERT INTO bus_dedupe (ref, stream, seq, created_at, token, target) VALUES (?, '', ${FENCE}, ?, ?, ?)
           ON CONFLICT (ref) DO UPDATE SET created_at = excluded.created_at RETURNING ref`,
  fence: `INSERT INTO bus_dedupe (ref, stream, seq, created_at, token, target) VALUES (?, '', ${FENCE}, ?, ?, ?)
           ON CONFLICT (ref) DO UPDATE SET stream = excluded.stream, seq = excluded.seq, created_at = excluded.created_at, token = excluded.token, target = excluded.target
           WHERE bus_dedupe.created_at < ? OR bus_dedupe.seq < 0 RETURNING ref`,
  settleClaim: `UPDATE bus_dedupe SET stream = ?, created_at = ?, token = ?, target = ? WHERE ref = ? AND seq = ${CLAIM} AND token = ?`,
  dedupeMany: (n: number) =>
    `SELECT ref, stream, seq, token FROM bus_dedupe WHERE ref IN (${Array.from({ length: n }, () => '?').join(', ')}) AND created_at >= ?`,
  insertDedupeMany: (
    n: number,
  ) => `INSERT INTO bus_dedupe (ref, stream, seq, created_at, token, target) VALUES ${Array.from({ length: n }, () => '(?, ?, ?, ?, ?, ?)').join(', ')}
         ON CONFLICT (ref) DO UPDATE SET stream = excluded.stream, seq = excluded.seq, created_at = excluded.created_at, token = excluded.token, target = excluded.target
         WHERE bus_dedupe.created_at < ? OR (bus_dedupe.seq = ${CLAIM} AND bus_dedupe.token = excluded.token) OR (bus_dedupe.seq = ${FENCE} AND bus_dedupe.token <> excluded.token) RETURNING ref`,
  posOf: 'SELECT pos FROM events WHERE stream = ? AND seq = ?',
  forgetLost: 'DELETE FROM retention_lost WHERE cursor = ?',
  streamReached: 'SELECT 1 AS x FROM streams WHERE stream = ? AND seq >= ?',
  pruneDedupe: 'DELETE FROM bus_dedupe WHERE created_at < ?',
} as const;
