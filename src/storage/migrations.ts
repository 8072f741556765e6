import type { Migration } from './port.js';

/**
 * Core schema. Each face declares its own migrations (ids prefixed with the
 * face name) to the runtime, which applies them after the core ones, in the
 * order of its faces (see `nodeMigrations` in runtime.ts). Migrations are
 * forward-only and never edited once released: a change is a new migration.
 */
export const CORE_MIGRATIONS: readonly Migration[] = [
  {
    id: 'core/0001_log',
    sql: {
      sqlite: `
        CREATE TABLE streams (
          stream TEXT PRIMARY KEY,
          seq INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE events (
          pos INTEGER PRIMARY KEY,
          stream TEXT NOT NULL,
          seq INTEGER NOT NULL,
          type TEXT NOT NULL,
          data TEXT NOT NULL,
          meta TEXT,
          created_at INTEGER NOT NULL,
          hash BLOB NOT NULL,
          UNIQUE (stream, seq)
        );
        CREATE TABLE cursors (
          name TEXT PRIMARY KEY,
          pos INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE streams (
          stream TEXT PRIMARY KEY,
          seq BIGINT NOT NULL
        );
        CREATE TABLE events (
          id BIGSERIAL PRIMARY KEY,
          pos BIGINT UNIQUE,
          stream TEXT NOT NULL,
          seq BIGINT NOT NULL,
          type TEXT NOT NULL,
          data TEXT NOT NULL,
          meta TEXT,
          created_at BIGINT NOT NULL,
          hash BYTEA,
          UNIQUE (stream, seq)
        );
        CREATE INDEX events_unsequenced ON events (id) WHERE pos IS NULL;
        CREATE TABLE cursors (
          name TEXT PRIMARY KEY,
          pos BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        );
      `,
    },
  },
  {
    id: 'core/0002_timers',
    sql: {
      sqlite: `
        CREATE TABLE timers (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          owner TEXT NOT NULL UNIQUE,
          version INTEGER NOT NULL DEFAULT 1,
          kind TEXT NOT NULL,
          due_at INTEGER NOT NULL,
          payload TEXT,
          attempts INTEGER NOT NULL DEFAULT 0,
          claimed_by TEXT,
          claim_until INTEGER
        );
        CREATE INDEX timers_due ON timers (due_at, id);
      `,
      postgres: `
        CREATE TABLE timers (
          id BIGSERIAL PRIMARY KEY,
          owner TEXT NOT NULL UNIQUE,
          version INTEGER NOT NULL DEFAULT 1,
          kind TEXT NOT NULL,
          due_at BIGINT NOT NULL,
          payload TEXT,
          attempts INTEGER NOT NULL DEFAULT 0,
          claimed_by TEXT,
          claim_until BIGINT
        );
        CREATE INDEX timers_due ON timers (due_at, id);
      `,
    },
  },
  {
    id: 'core/0003_leases',
    sql: {
      sqlite: `
        CREATE TABLE leases (
          name TEXT PRIMARY KEY,
          holder TEXT NOT NULL,
          expires_at INTEGER NOT NULL
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE leases (
          name TEXT PRIMARY KEY,
          holder TEXT NOT NULL,
          expires_at BIGINT NOT NULL
        );
      `,
    },
  },
  {
    // Exclusive roles (sequencer, exclusive cursors): who holds each, under
    // which epoch, until when (database clock, ms), on which session.
    id: 'core/0004_role_leases',
    sql: {
      sqlite: `
        CREATE TABLE role_leases (
          role TEXT PRIMARY KEY,
          holder TEXT NOT NULL,
          epoch INTEGER NOT NULL,
          expires_at INTEGER NOT NULL,
          pid INTEGER,
          session_start TEXT
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE role_leases (
          role TEXT PRIMARY KEY,
          holder TEXT NOT NULL,
          epoch BIGINT NOT NULL,
          expires_at BIGINT NOT NULL,
          pid INTEGER,
          session_start TIMESTAMPTZ
        );
      `,
    },
  },
  {
    // Retention. `chain_gaps`: one row per run of removed log positions, with
    // the hash of the run's last event, so the chain of the remaining events
    // still verifies (the run that starts at 1 is the shard's checkpoint).
    // `retention_horizons`: per scope (a topic), the highest removed position
    // and how many events were removed. `retention_lost`: per cursor, events
    // of its streams removed above its stored position and not yet reported.
    id: 'core/0005_retention',
    sql: {
      sqlite: `
        CREATE TABLE chain_gaps (
          first_pos INTEGER PRIMARY KEY,
          last_pos INTEGER NOT NULL,
          last_hash BLOB NOT NULL
        );
        CREATE TABLE retention_horizons (
          scope TEXT PRIMARY KEY,
          pos INTEGER NOT NULL,
          removed INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE retention_lost (
          cursor TEXT PRIMARY KEY,
          lost INTEGER NOT NULL,
          horizon INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE chain_gaps (
          first_pos BIGINT PRIMARY KEY,
          last_pos BIGINT NOT NULL,
          last_hash BYTEA NOT NULL
        );
        CREATE TABLE retention_horizons (
          scope TEXT PRIMARY KEY,
          pos BIGINT NOT NULL,
          removed BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        );
        CREATE TABLE retention_lost (
          cursor TEXT PRIMARY KEY,
          lost BIGINT NOT NULL,
          horizon BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        );
      `,
    },
  },
  {
    // Growing: the hash ranges a shard owns (durable routing, `epoch` bumped
    // on every change; writers read it inside their transaction), split jobs
    // of this shard as a source, and imports into it as a split's target.
    id: 'core/0006_shard_routing',
    sql: {
      sqlite: `
        CREATE TABLE shard_state (
          id INTEGER PRIMARY KEY,
          epoch INTEGER NOT NULL,
          ranges TEXT NOT NULL,
          updated_at INTEGER NOT NULL
        );
        CREATE TABLE shard_splits (
          id TEXT PRIMARY KEY,
          target TEXT NOT NULL,
          range_from TEXT NOT NULL,
          range_to TEXT NOT NULL,
          phase TEXT NOT NULL,
          start_pos INTEGER NOT NULL,
          fence_pos INTEGER,
          detail TEXT,
          started_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        );
        CREATE TABLE shard_imports (
          id TEXT PRIMARY KEY,
          source TEXT NOT NULL,
          copied_pos INTEGER NOT NULL,
          copied_events INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        );
        CREATE TABLE shard_import_map (
          id TEXT NOT NULL,
          source_pos INTEGER NOT NULL,
          stream TEXT NOT NULL,
          seq INTEGER NOT NULL,
          PRIMARY KEY (id, source_pos)
        );
      `,
      postgres: `
        CREATE TABLE shard_state (
          id INTEGER PRIMARY KEY,
          epoch BIGINT NOT NULL,
          ranges TEXT NOT NULL,
          updated_at BIGINT NOT NULL
        );
        CREATE TABLE shard_splits (
          id TEXT PRIMARY KEY,
          target TEXT NOT NULL,
          range_from TEXT NOT NULL,
          range_to TEXT NOT NULL,
          phase TEXT NOT NULL,
          start_pos BIGINT NOT NULL,
          fence_pos BIGINT,
          detail TEXT,
          started_at BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        );
        CREATE TABLE shard_imports (
          id TEXT PRIMARY KEY,
          source TEXT NOT NULL,
          copied_pos BIGINT NOT NULL,
          copied_events BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        );
        CREATE TABLE shard_import_map (
          id TEXT NOT NULL,
          source_pos BIGINT NOT NULL,
          stream TEXT NOT NULL,
          seq BIGINT NOT NULL,
          PRIMARY KEY (id, source_pos)
        );
      `,
    },
  },
];
