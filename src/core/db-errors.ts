/**
 * The one place where an error raised by a database driver (PostgreSQL via
 * pg, SQLite via better-sqlite3) or by the network under it becomes a
 * MillraceError. Transports reach it through `toMillraceError`, the group
 * committer through `commitError`, so no database error reaches a client as
 * `internal`:
 *
 * - the write could not be done now (connection lost or refused, server
 *   shutting down or starting, too many connections, lock or statement
 *   timeout, deadlock or serialization failure the committer gave up
 *   retrying, disk full, out of memory, database busy) -> `unavailable`,
 *   retryable, with Retry-After;
 * - the values do not fit (data exceptions, SQLSTATE class 22) -> `overflow`
 *   for numbers out of range, else `bad_request`;
 * - a constraint held against the write (class 23) -> `conflict`;
 * - anything else the database said -> `unavailable` (nothing of the failed
 *   transaction was stored; a retry, with the operation's idempotency key, is safe).
 */
/** What a database error becomes: the fields of a MillraceError (built by `toMillraceError`, src/core/errors.ts). */
export interface DbErrorClass {
  code: 'unavailable' | 'conflict' | 'overflow' | 'bad_request' | 'payload_too_large';
  message: string;
  retryAfterS?: number;
  details?: Record<string, unknown>;
}

/** PostgreSQL: the transaction lost a race (deadlock, serialization failure); re-running it may succeed at once. */
export const TRANSIENT_SQLSTATES: ReadonlySet<string> = new Set(['40001', '40P01']);

/** Node/pg socket-level errors: the connection is gone or never came. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNABORTED',
]);

/** pg raises these as plain Errors without a code. */
const NETWORK_MESSAGES = [
  'Connection terminated',
  'connection timeout',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error',
  'Client was closed and is not queryable',
  'Cannot use a pool after calling end',
  'Query read timeout',
];

interface DriverError {
  code?: unknown;
  message?: unknown;
}

/** The SQLSTATE a server answered with, if `err` is such an answer. */
export const sqlstateOf = (err: unknown): string | undefined => {
  const code = (err as DriverError | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
};

/** A deadlock or serialization failure: the committer re-runs such a transaction. */
export function isTransientTxError(err: unknown): boolean {
  const s = sqlstateOf(err);
  return s !== undefined && TRANSIENT_SQLSTATES.has(s);
}

const unavailable = (what: string, err: unknown, code?: string): DbErrorClass => ({
  code: 'unavailable',
  message: `storage temporarily unavailable (${what}): ${String((err as DriverError).message)}`,
  retryAfterS: 1,
  ...(code === undefined ? {} : { details: { db_code: code } }),
});
const cls = (code: DbErrorClass['code'], message: string, dbCode?: string): DbErrorClass =>
  dbCode === undefined ? { code, message } : { code, message, details: { db_code: dbCode } };

/** What a database or connection error means for a client; undefined if `err` is not one. */
export function classifyDbError(err: unknown): DbErrorClass | undefined {
  if (err === null || typeof err !== 'object' || (err as Error).name === 'MillraceError') return undefined;
  const e = err as DriverError;
  const code = typeof e.code === 'string' ? e.code : undefined;
  const message = typeof e.message === 'string' ? e.message : '';
  if (code !== undefined && code.startsWith('SQLITE_')) {
    if (code.startsWith('SQLITE_CONSTRAINT'))
      return cls('conflict', `the write conflicts with stored data: ${message}`, code);
    if (code.startsWith('SQLITE_TOOBIG')) return cls('payload_too_large', message, code);
    if (code.startsWith('SQLITE_MISMATCH')) return cls('bad_request', message, code);
    // BUSY, LOCKED, IOERR, FULL, CANTOPEN, READONLY, CORRUPT, ...: the database cannot take the write now.
    return unavailable('database', err, code);
  }
  if (code !== undefined && NETWORK_CODES.has(code)) return unavailable('connection', err, code);
  const state = sqlstateOf(err);
  if (state !== undefined) {
    const klass = state.slice(0, 2);
    if (klass === '22')
      return cls(state === '22003' ? 'overflow' : 'bad_request', `a value does not fit the storage: ${message}`, state);
    if (klass === '23') return cls('conflict', `the write conflicts with stored data: ${message}`, state);
    if (TRANSIENT_SQLSTATES.has(state))
      return unavailable(state === '40P01' ? 'deadlock' : 'serialization failure', err, state);
    if (klass === '08') return unavailable('connection', err, state);
    if (klass === '57')
      return unavailable(state === '57014' ? 'statement canceled or timed out' : 'server shutting down', err, state);
    if (klass === '53') return unavailable('server out of resources', err, state);
    if (state === '55P03') return unavailable('lock not available', err, state);
    return unavailable(`database error ${state}`, err, state);
  }
  if (NETWORK_MESSAGES.some((m) => message.includes(m))) return unavailable('connection', err);
  return undefined;
}
