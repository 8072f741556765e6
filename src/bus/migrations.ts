import { registerMigrations } from '../storage/migrations.js';

/**
 * Bus tables. `bus_dedupe` maps `<topic>/<event id>` to the stream and seq of
 * the event first published with that id, on the shard that stores it.
 * Subscription configs live on their home shard; their positions are cursors
 * (`bus/sub/<name>`) on every shard.
 */
registerMigrations([
  {
    id: 'bus/0001_bus',
    sql: {
      sqlite: `
        CREATE TABLE bus_dedupe (
          ref TEXT PRIMARY KEY,
          stream TEXT NOT NULL,
          seq INTEGER NOT NULL,
          created_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX bus_dedupe_created ON bus_dedupe (created_at);
        CREATE TABLE bus_subscriptions (
          name TEXT PRIMARY KEY,
          config TEXT NOT NULL,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE bus_dedupe (
          ref TEXT PRIMARY KEY,
          stream TEXT NOT NULL,
          seq BIGINT NOT NULL,
          created_at BIGINT NOT NULL
        );
        CREATE INDEX bus_dedupe_created ON bus_dedupe (created_at);
        CREATE TABLE bus_subscriptions (
          name TEXT PRIMARY KEY,
          config TEXT NOT NULL,
          created_at BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        );
      `,
    },
  },
]);
