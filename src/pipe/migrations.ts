import type { Migration } from '../storage/port.js';

/**
 * Pipe schema, per shard. A session lives on the shard of SHA-1(its id).
 *
 * - `state`: open (writable, owned by a client), delivering (pushed to the
 *   kind's handler, writable by it), stored (writing closed, comes back at
 *   `due_at`), dead (gave up after `max_repeats`).
 * - `owner`: NULL for sessions kept alive by writes (HTTP, pushed); else the
 *   id of the streaming connection that owns it (see `pipe_owners`).
 * - `parked`: a stored session of a kind without a handler, with no timer.
 * - Records are in write order of `id` (0002; `idx` before); `seq` is the
 *   client's optional record number, unique per session (duplicate appends).
 */
export const PIPE_MIGRATIONS: readonly Migration[] = [
  {
    id: 'pipe/0001_sessions',
    sql: {
      sqlite: `
        CREATE TABLE pipe_sessions (
          id TEXT PRIMARY KEY,
          kind TEXT NOT NULL,
          state TEXT NOT NULL,
          owner TEXT,
          repeats INTEGER NOT NULL DEFAULT 0,
          next_idx INTEGER NOT NULL DEFAULT 0,
          created_at INTEGER NOT NULL,
          touched_at INTEGER NOT NULL,
          due_at INTEGER,
          parked INTEGER NOT NULL DEFAULT 0,
          last_error TEXT
        ) WITHOUT ROWID;
        CREATE INDEX pipe_sessions_state ON pipe_sessions (state, id);
        CREATE INDEX pipe_sessions_owner ON pipe_sessions (owner) WHERE owner IS NOT NULL;
        CREATE TABLE pipe_records (
          session_id TEXT NOT NULL,
          idx INTEGER NOT NULL,
          seq INTEGER,
          data BLOB NOT NULL,
          PRIMARY KEY (session_id, idx)
        ) WITHOUT ROWID;
        CREATE UNIQUE INDEX pipe_records_seq ON pipe_records (session_id, seq) WHERE seq IS NOT NULL;
        CREATE TABLE pipe_owners (
          owner TEXT PRIMARY KEY,
          alive_until INTEGER NOT NULL
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE pipe_sessions (
          id TEXT PRIMARY KEY,
          kind TEXT NOT NULL,
          state TEXT NOT NULL,
          owner TEXT,
          repeats INTEGER NOT NULL DEFAULT 0,
          next_idx INTEGER NOT NULL DEFAULT 0,
          created_at BIGINT NOT NULL,
          touched_at BIGINT NOT NULL,
          due_at BIGINT,
          parked INTEGER NOT NULL DEFAULT 0,
          last_error TEXT
        );
        CREATE INDEX pipe_sessions_state ON pipe_sessions (state, id);
        CREATE INDEX pipe_sessions_owner ON pipe_sessions (owner) WHERE owner IS NOT NULL;
        CREATE TABLE pipe_records (
          session_id TEXT NOT NULL,
          idx INTEGER NOT NULL,
          seq BIGINT,
          data BYTEA NOT NULL,
          PRIMARY KEY (session_id, idx)
        );
        CREATE UNIQUE INDEX pipe_records_seq ON pipe_records (session_id, seq) WHERE seq IS NOT NULL;
        CREATE TABLE pipe_owners (
          owner TEXT PRIMARY KEY,
          alive_until BIGINT NOT NULL
        );
      `,
    },
  },
  {
    // Records keyed by an ever-growing number instead of (session_id, idx):
    // concurrent sessions then append to the end of one B-tree rather than
    // dirtying a page per session in every commit, and one index
    // (session_id, seq) serves both reading a session and the seq dedupe
    // (NULL seqs never collide). Write order is the order of `id`.
    id: 'pipe/0002_records_by_id',
    sql: {
      sqlite: `
        CREATE TABLE pipe_records_new (
          id INTEGER PRIMARY KEY,
          session_id TEXT NOT NULL,
          seq INTEGER,
          data BLOB NOT NULL
        );
        INSERT INTO pipe_records_new (session_id, seq, data) SELECT session_id, seq, data FROM pipe_records ORDER BY session_id, idx;
        DROP TABLE pipe_records;
        ALTER TABLE pipe_records_new RENAME TO pipe_records;
        CREATE UNIQUE INDEX pipe_records_session ON pipe_records (session_id, seq);
      `,
      postgres: `
        CREATE TABLE pipe_records_new (
          id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          session_id TEXT NOT NULL,
          seq BIGINT,
          data BYTEA NOT NULL
        );
        INSERT INTO pipe_records_new (session_id, seq, data) SELECT session_id, seq, data FROM pipe_records ORDER BY session_id, idx;
        DROP TABLE pipe_records;
        ALTER TABLE pipe_records_new RENAME TO pipe_records;
        ALTER INDEX pipe_records_new_pkey RENAME TO pipe_records_pkey;
        CREATE UNIQUE INDEX pipe_records_session ON pipe_records (session_id, seq);
      `,
    },
  },
  {
    // The console lists sessions by kind and state, paged by id.
    id: 'pipe/0003_sessions_by_kind',
    sql: {
      sqlite: 'CREATE INDEX pipe_sessions_kind_state ON pipe_sessions (kind, state, id);',
      postgres: 'CREATE INDEX pipe_sessions_kind_state ON pipe_sessions (kind, state, id);',
    },
  },
];
