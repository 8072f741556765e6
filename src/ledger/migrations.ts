import type { Migration } from '../storage/port.js';

/**
 * Ledger tables. Amounts of events are minor units (an integer at the type's
 * scale); aggregate sums are exact and unbounded: TEXT holding an integer in
 * SQLite, NUMERIC in PostgreSQL, and always summed in BigInt.
 */
export const LEDGER_MIGRATIONS: readonly Migration[] = [
  {
    id: 'ledger/0001_ledger',
    sql: {
      sqlite: `
        CREATE TABLE ledger_events (
          id INTEGER PRIMARY KEY,
          batch_id TEXT NOT NULL,
          type TEXT NOT NULL,
          acc_key TEXT NOT NULL,
          aux TEXT NOT NULL,
          side TEXT NOT NULL,
          amount INTEGER NOT NULL,
          dt INTEGER NOT NULL,
          info TEXT,
          pos INTEGER
        );
        CREATE INDEX ledger_events_acc_dt ON ledger_events (type, acc_key, dt, id);
        CREATE INDEX ledger_events_unaggregated ON ledger_events (type, acc_key, dt) WHERE pos IS NULL;
        CREATE TABLE ledger_aggregates (
          type TEXT NOT NULL,
          acc_key TEXT NOT NULL,
          grp TEXT NOT NULL,
          grp_vals TEXT NOT NULL,
          boundary INTEGER NOT NULL,
          debit TEXT NOT NULL,
          credit TEXT NOT NULL,
          pos INTEGER NOT NULL,
          PRIMARY KEY (type, acc_key, grp, grp_vals, boundary)
        ) WITHOUT ROWID;
        CREATE TABLE ledger_idempotency (
          key TEXT PRIMARY KEY,
          request_hash TEXT NOT NULL,
          answer TEXT NOT NULL,
          created_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE ledger_batch_parts (
          key TEXT PRIMARY KEY,
          request_hash TEXT NOT NULL,
          created_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE ledger_lock_heads (
          type TEXT NOT NULL,
          lock_key TEXT NOT NULL,
          n INTEGER NOT NULL,
          PRIMARY KEY (type, lock_key)
        ) WITHOUT ROWID;
        CREATE TABLE ledger_locks (
          type TEXT NOT NULL,
          lock_key TEXT NOT NULL,
          uid TEXT NOT NULL,
          mode TEXT NOT NULL,
          expires_at INTEGER NOT NULL,
          PRIMARY KEY (type, lock_key, uid)
        ) WITHOUT ROWID;
        CREATE TABLE ledger_states (
          type TEXT NOT NULL,
          state_key TEXT NOT NULL,
          state TEXT NOT NULL,
          version INTEGER NOT NULL,
          updated_at INTEGER NOT NULL,
          PRIMARY KEY (type, state_key)
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE ledger_events (
          id BIGSERIAL PRIMARY KEY,
          batch_id TEXT NOT NULL,
          type TEXT NOT NULL,
          acc_key TEXT NOT NULL,
          aux TEXT NOT NULL,
          side TEXT NOT NULL,
          amount NUMERIC(20, 0) NOT NULL,
          dt BIGINT NOT NULL,
          info TEXT,
          pos BIGINT
        );
        CREATE INDEX ledger_events_acc_dt ON ledger_events (type, acc_key, dt, id);
        CREATE INDEX ledger_events_unaggregated ON ledger_events (type, acc_key, dt) WHERE pos IS NULL;
        CREATE TABLE ledger_aggregates (
          type TEXT NOT NULL,
          acc_key TEXT NOT NULL,
          grp TEXT NOT NULL,
          grp_vals TEXT NOT NULL,
          boundary BIGINT NOT NULL,
          debit NUMERIC NOT NULL,
          credit NUMERIC NOT NULL,
          pos BIGINT NOT NULL,
          PRIMARY KEY (type, acc_key, grp, grp_vals, boundary)
        );
        CREATE TABLE ledger_idempotency (
          key TEXT PRIMARY KEY,
          request_hash TEXT NOT NULL,
          answer TEXT NOT NULL,
          created_at BIGINT NOT NULL
        );
        CREATE TABLE ledger_batch_parts (
          key TEXT PRIMARY KEY,
          request_hash TEXT NOT NULL,
          created_at BIGINT NOT NULL
        );
        CREATE TABLE ledger_lock_heads (
          type TEXT NOT NULL,
          lock_key TEXT NOT NULL,
          n BIGINT NOT NULL,
          PRIMARY KEY (type, lock_key)
        );
        CREATE TABLE ledger_locks (
          type TEXT NOT NULL,
          lock_key TEXT NOT NULL,
          uid TEXT NOT NULL,
          mode TEXT NOT NULL,
          expires_at BIGINT NOT NULL,
          PRIMARY KEY (type, lock_key, uid)
        );
        CREATE TABLE ledger_states (
          type TEXT NOT NULL,
          state_key TEXT NOT NULL,
          state TEXT NOT NULL,
          version BIGINT NOT NULL,
          updated_at BIGINT NOT NULL,
          PRIMARY KEY (type, state_key)
        );
      `,
    },
  },
  {
    // Turnover buckets inside a period (see Ledger.aggregate). Existing
    // aggregates carry no buckets, so the aggregator starts over: its stamps
    // and aggregates are cleared and its cursor removed (events without a
    // stamp are read one by one until the aggregator reaches them again).
    id: 'ledger/0002_turnover_buckets',
    sql: {
      sqlite: `
        CREATE TABLE ledger_buckets (
          type TEXT NOT NULL,
          acc_key TEXT NOT NULL,
          grp TEXT NOT NULL,
          level INTEGER NOT NULL,
          bucket INTEGER NOT NULL,
          grp_vals TEXT NOT NULL,
          debit TEXT NOT NULL,
          credit TEXT NOT NULL,
          PRIMARY KEY (type, acc_key, grp, level, bucket, grp_vals)
        ) WITHOUT ROWID;
        DELETE FROM ledger_aggregates;
        UPDATE ledger_events SET pos = NULL WHERE pos IS NOT NULL;
        DELETE FROM cursors WHERE name = 'ledger.aggregator';
      `,
      postgres: `
        CREATE TABLE ledger_buckets (
          type TEXT NOT NULL,
          acc_key TEXT NOT NULL,
          grp TEXT NOT NULL,
          level SMALLINT NOT NULL,
          bucket BIGINT NOT NULL,
          grp_vals TEXT NOT NULL,
          debit NUMERIC NOT NULL,
          credit NUMERIC NOT NULL,
          PRIMARY KEY (type, acc_key, grp, level, bucket, grp_vals)
        );
        DELETE FROM ledger_aggregates;
        UPDATE ledger_events SET pos = NULL WHERE pos IS NOT NULL;
        DELETE FROM cursors WHERE name = 'ledger.aggregator';
      `,
    },
  },
  {
    // PostgreSQL: ledger_events becomes a table partitioned by range of dt
    // (milliseconds), with a default partition for dates no monthly partition
    // holds yet. Monthly partitions are created ahead of time by the
    // `ledger.partitions` timer (Ledger.ensurePartitions), which moves rows of
    // its month out of the default partition first. The primary key becomes
    // (id, dt): a partitioned table's unique keys must hold the partition key.
    id: 'ledger/0003_partition_events_by_dt',
    sql: {
      sqlite: `SELECT 1;`,
      postgres: `
        ALTER TABLE ledger_events RENAME TO ledger_events_old;
        ALTER TABLE ledger_events_old RENAME CONSTRAINT ledger_events_pkey TO ledger_events_old_pkey;
        DROP INDEX ledger_events_acc_dt;
        DROP INDEX ledger_events_unaggregated;
        CREATE TABLE ledger_events (
          id BIGINT NOT NULL DEFAULT nextval('ledger_events_id_seq'),
          batch_id TEXT NOT NULL,
          type TEXT NOT NULL,
          acc_key TEXT NOT NULL,
          aux TEXT NOT NULL,
          side TEXT NOT NULL,
          amount NUMERIC(20, 0) NOT NULL,
          dt BIGINT NOT NULL,
          info TEXT,
          pos BIGINT,
          PRIMARY KEY (id, dt)
        ) PARTITION BY RANGE (dt);
        CREATE TABLE ledger_events_default PARTITION OF ledger_events DEFAULT;
        CREATE INDEX ledger_events_acc_dt ON ledger_events (type, acc_key, dt, id);
        CREATE INDEX ledger_events_unaggregated ON ledger_events (type, acc_key, dt) WHERE pos IS NULL;
        INSERT INTO ledger_events (id, batch_id, type, acc_key, aux, side, amount, dt, info, pos)
          SELECT id, batch_id, type, acc_key, aux, side, amount, dt, info, pos FROM ledger_events_old;
        ALTER SEQUENCE ledger_events_id_seq OWNED BY ledger_events.id;
        DROP TABLE ledger_events_old;
      `,
    },
  },
];
