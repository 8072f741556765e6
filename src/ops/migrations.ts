import type { Migration } from '../storage/port.js';

/**
 * Schedules live on the shard of ["schedule", name], with their fires and
 * their timers, so one transaction settles a fire. Bulk jobs live on the
 * shard of ["bulk", id] with the targets they have acted on. Every shard gets every table.
 */
export const OPS_MIGRATIONS: readonly Migration[] = [
  {
    id: 'ops/0001_schedules_bulk',
    sql: {
      sqlite: `
        CREATE TABLE schedules (
          name TEXT PRIMARY KEY,
          definition TEXT NOT NULL,
          source TEXT NOT NULL,
          paused INTEGER NOT NULL DEFAULT 0,
          next_fire_at INTEGER,
          last_fire_at INTEGER,
          running INTEGER NOT NULL DEFAULT 0,
          buffered_at INTEGER,
          missed INTEGER NOT NULL DEFAULT 0,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE schedule_fires (
          schedule TEXT NOT NULL,
          fire_at INTEGER NOT NULL,
          status TEXT NOT NULL,
          backfill INTEGER NOT NULL DEFAULT 0,
          attempts INTEGER NOT NULL DEFAULT 0,
          started_at INTEGER,
          finished_at INTEGER,
          error TEXT,
          PRIMARY KEY (schedule, fire_at)
        ) WITHOUT ROWID;
        CREATE TABLE bulk_jobs (
          id TEXT PRIMARY KEY,
          target TEXT NOT NULL,
          spec TEXT NOT NULL,
          status TEXT NOT NULL,
          after TEXT NOT NULL DEFAULT '',
          matched INTEGER NOT NULL DEFAULT 0,
          succeeded INTEGER NOT NULL DEFAULT 0,
          failed INTEGER NOT NULL DEFAULT 0,
          errors TEXT NOT NULL DEFAULT '[]',
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL,
          finished_at INTEGER
        ) WITHOUT ROWID;
        CREATE TABLE bulk_job_items (
          job TEXT NOT NULL,
          item TEXT NOT NULL,
          status TEXT NOT NULL,
          PRIMARY KEY (job, item)
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE schedules (
          name TEXT PRIMARY KEY,
          definition TEXT NOT NULL,
          source TEXT NOT NULL,
          paused INTEGER NOT NULL DEFAULT 0,
          next_fire_at BIGINT,
          last_fire_at BIGINT,
          running INTEGER NOT NULL DEFAULT 0,
          buffered_at BIGINT,
          missed BIGINT NOT NULL DEFAULT 0,
          created_at BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        );
        CREATE TABLE schedule_fires (
          schedule TEXT NOT NULL,
          fire_at BIGINT NOT NULL,
          status TEXT NOT NULL,
          backfill INTEGER NOT NULL DEFAULT 0,
          attempts INTEGER NOT NULL DEFAULT 0,
          started_at BIGINT,
          finished_at BIGINT,
          error TEXT,
          PRIMARY KEY (schedule, fire_at)
        );
        CREATE TABLE bulk_jobs (
          id TEXT PRIMARY KEY,
          target TEXT NOT NULL,
          spec TEXT NOT NULL,
          status TEXT NOT NULL,
          after TEXT NOT NULL DEFAULT '',
          matched BIGINT NOT NULL DEFAULT 0,
          succeeded BIGINT NOT NULL DEFAULT 0,
          failed BIGINT NOT NULL DEFAULT 0,
          errors TEXT NOT NULL DEFAULT '[]',
          created_at BIGINT NOT NULL,
          updated_at BIGINT NOT NULL,
          finished_at BIGINT
        );
        CREATE TABLE bulk_job_items (
          job TEXT NOT NULL,
          item TEXT NOT NULL,
          status TEXT NOT NULL,
          PRIMARY KEY (job, item)
        );
      `,
    },
  },
];
