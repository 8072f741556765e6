import type { Migration } from '../storage/port.js';

/**
 * Bus tables. `bus_dedupe` maps `<topic>/<event id>` to the stream and seq of
 * the event first published with that id, on the shard that stores it. With
 * several shards, the shard of SHA-1 of ["dedupe", ref] (the id's home) also
 * holds the id's claim (`seq` -1, `target` the shard that will store it,
 * `token` the attempt) until the event's own row replaces it there, and a
 * target shard may hold a fence (`seq` -2, `token` of a dead attempt) that
 * keeps that attempt from committing (see `Publisher`).
 * Subscription configs live on their home shard; their positions are cursors
 * (`bus/sub/<name>`) on every shard.
 *
 * `bus_split_imports`, on a shard that was a split's target, one row per
 * import: `horizon`, the target's head when it came to own the range (every
 * event at or below it is an import or the anchor, delivered from the source),
 * and `source_pos`, the source's position of the last moved event (the
 * target's later events are delivered to a subscription once its position on
 * the source has passed it). `aborted`: the split ended without moving
 * anything (no later event of the range comes here).
 */
export const BUS_MIGRATIONS: readonly Migration[] = [
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
  {
    id: 'bus/0002_dedupe_claims',
    sql: {
      sqlite: `
        ALTER TABLE bus_dedupe ADD COLUMN token TEXT;
        ALTER TABLE bus_dedupe ADD COLUMN target TEXT;
      `,
      postgres: `
        ALTER TABLE bus_dedupe ADD COLUMN token TEXT;
        ALTER TABLE bus_dedupe ADD COLUMN target TEXT;
      `,
    },
  },
  {
    id: 'bus/0003_split_imports',
    sql: {
      sqlite: `
        CREATE TABLE bus_split_imports (
          id TEXT PRIMARY KEY,
          source TEXT NOT NULL,
          source_pos INTEGER NOT NULL,
          horizon INTEGER NOT NULL,
          aborted INTEGER NOT NULL,
          created_at INTEGER NOT NULL
        );
      `,
      postgres: `
        CREATE TABLE bus_split_imports (
          id TEXT PRIMARY KEY,
          source TEXT NOT NULL,
          source_pos BIGINT NOT NULL,
          horizon BIGINT NOT NULL,
          aborted INTEGER NOT NULL,
          created_at BIGINT NOT NULL
        );
      `,
    },
  },
];
