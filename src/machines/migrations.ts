import type { Migration } from '../storage/port.js';

/**
 * Machine tables. A machine row outlives removal as a tombstone (status
 * `none`) that keeps its incarnation number `gen`, so a re-started machine
 * writes a fresh stream `m/<ns>/<id>/<gen>` while the log stays append-only.
 * `lease_*` is the processing lease that keeps nodes sharing a PostgreSQL
 * shard from running one machine's processor concurrently. Tags live on the
 * shard their own key routes to ([ns, "tag", tag]); notifications on the
 * machine's shard, ordered by `nid`.
 */
export const MACHINES_MIGRATIONS: readonly Migration[] = [
  {
    id: 'machines/0001_machines',
    sql: {
      sqlite: `
        CREATE TABLE machines (
          ns TEXT NOT NULL,
          id TEXT NOT NULL,
          gen INTEGER NOT NULL,
          status TEXT NOT NULL,
          reason TEXT,
          aux_state TEXT,
          last_event INTEGER NOT NULL,
          timer TEXT,
          tags TEXT NOT NULL,
          version INTEGER NOT NULL,
          lease_holder TEXT,
          lease_until INTEGER,
          updated_at INTEGER NOT NULL,
          PRIMARY KEY (ns, id)
        ) WITHOUT ROWID;
        CREATE TABLE machine_tags (
          ns TEXT NOT NULL,
          tag TEXT NOT NULL,
          id TEXT NOT NULL,
          gen INTEGER NOT NULL,
          PRIMARY KEY (ns, tag)
        ) WITHOUT ROWID;
        CREATE TABLE machine_notifications (
          nid INTEGER PRIMARY KEY AUTOINCREMENT,
          ns TEXT NOT NULL,
          id TEXT NOT NULL,
          gen INTEGER NOT NULL,
          args TEXT NOT NULL,
          created_at INTEGER NOT NULL
        );
        CREATE INDEX machine_notifications_machine ON machine_notifications (ns, id, nid);
      `,
      postgres: `
        CREATE TABLE machines (
          ns TEXT NOT NULL,
          id TEXT NOT NULL,
          gen BIGINT NOT NULL,
          status TEXT NOT NULL,
          reason TEXT,
          aux_state TEXT,
          last_event BIGINT NOT NULL,
          timer TEXT,
          tags TEXT NOT NULL,
          version BIGINT NOT NULL,
          lease_holder TEXT,
          lease_until BIGINT,
          updated_at BIGINT NOT NULL,
          PRIMARY KEY (ns, id)
        );
        CREATE TABLE machine_tags (
          ns TEXT NOT NULL,
          tag TEXT NOT NULL,
          id TEXT NOT NULL,
          gen BIGINT NOT NULL,
          PRIMARY KEY (ns, tag)
        );
        CREATE TABLE machine_notifications (
          nid BIGSERIAL PRIMARY KEY,
          ns TEXT NOT NULL,
          id TEXT NOT NULL,
          gen BIGINT NOT NULL,
          args TEXT NOT NULL,
          created_at BIGINT NOT NULL
        );
        CREATE INDEX machine_notifications_machine ON machine_notifications (ns, id, nid);
      `,
    },
  },
  {
    // The console lists a namespace's machines by status (failed first), paged by id.
    id: 'machines/0002_list_by_status',
    sql: {
      sqlite: 'CREATE INDEX machines_ns_status ON machines (ns, status, id);',
      postgres: 'CREATE INDEX machines_ns_status ON machines (ns, status, id);',
    },
  },
  {
    // A notification given with a key is stored once per key (a schedule's fire, retried after a crash).
    id: 'machines/0003_notification_keys',
    sql: {
      sqlite: `CREATE TABLE machine_notification_keys (
          ns TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL, nid INTEGER NOT NULL, created_at INTEGER NOT NULL,
          PRIMARY KEY (ns, id, key)) WITHOUT ROWID;
        CREATE INDEX machine_notification_keys_age ON machine_notification_keys (created_at);`,
      postgres: `CREATE TABLE machine_notification_keys (
          ns TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL, nid BIGINT NOT NULL, created_at BIGINT NOT NULL,
          PRIMARY KEY (ns, id, key));
        CREATE INDEX machine_notification_keys_age ON machine_notification_keys (created_at);`,
    },
  },
];
