import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

/**
 * Test files that run alone, one at a time, after the others (see docs/development.md, "Test suite"):
 * they freeze or kill processes (SIGSTOP, kill -9), drive a browser, or decide something by a lease, a
 * grace period or a silence measured in wall-clock time, so a second test file busy on the same two
 * cores could change what they observe.
 */
const SERIAL = [
  // SIGSTOP: a frozen node must lose its role within the lease.
  'test/bus/bus-amqp-hung.test.ts',
  'test/bus/bus-hung-node.test.ts',
  'test/bus/bus-sub-hung.test.ts',
  'test/log/retention-hung.test.ts',
  'test/log/role-lease.test.ts',
  'test/machines/lease.test.ts',
  'test/scheduler/scheduler-hung.test.ts',
  // kill -9 of a spawned node mid-write (some inside fast-check properties), then a restart.
  'test/auth/audit-crash.test.ts',
  'test/bus/bus-amqp.test.ts',
  'test/bus/bus-dedupe.test.ts',
  'test/bus/bus-order-delivery.test.ts',
  'test/bus/bus-order.test.ts',
  'test/ledger/crash.test.ts',
  'test/log/crash.test.ts',
  'test/log/cursor-exclusive.test.ts',
  'test/log/retention-crash.test.ts',
  'test/machines/crash.test.ts',
  'test/ops/crash.test.ts',
  'test/pipe/crash.test.ts',
  'test/storage/backup.test.ts',
  'test/storage/split-crash.test.ts',
  'test/storage/split-bus-crash.test.ts',
  'test/storage/split-ledger.test.ts',
  'test/storage/split-pipe-crash.test.ts',
  // chromium.
  'test/api/newcomer.test.ts',
  'test/ui/console.test.ts',
  'test/ui/shards.test.ts',
  // Role hand-over within short leases, timers and TTLs, or silence for a while as the proof of a pause.
  'test/log/cluster-idle.test.ts',
  'test/log/retention-job.test.ts',
  'test/log/sequencer.test.ts',
  'test/machines/machines.test.ts',
  'test/ops/cluster.test.ts',
  'test/ops/exporter-pause.test.ts',
  'test/ops/pause.test.ts',
  'test/pipe/cluster.test.ts',
  'test/pipe/pipe.test.ts',
  // A split under load with a second node following by its routing re-reads, leases and schedule fires.
  'test/storage/split.test.ts',
  'test/storage/split-bus.test.ts',
  'test/storage/split-ops.test.ts',
  'test/storage/split-pipe.test.ts',
];

export default defineConfig({
  // Examples import the SDK by its package name; tests run them against the sources.
  resolve: { alias: { 'millrace/sdk': fileURLToPath(new URL('./src/sdk/index.ts', import.meta.url)) } },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
    projects: [
      {
        extends: true,
        // Two files at a time: each has its own databases, data directory and ports (test/support/env.ts).
        test: {
          name: 'parallel',
          include: ['test/**/*.test.ts'],
          exclude: SERIAL,
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: { name: 'serial', include: SERIAL, maxWorkers: 1, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
