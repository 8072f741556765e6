/**
 * A node to be frozen: opens a Runtime from a config file and fires timers of
 * kind `slow`: prints {"firing":attempts}, waits `HOLD_MS` (argv[3]), then
 * completes the timer in a transaction that records an effect, and prints
 * {"done":completed}.
 *
 * Usage: node --import tsx test/scheduler/timer-child.ts <config> <hold_ms>
 */
import { loadConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';

const holdMs = Number(process.argv[3] ?? 2000);
const rt = await Runtime.open(loadConfig(process.argv[2]));
rt.scheduler.register('slow', async (timer, ctx) => {
  process.stdout.write(`${JSON.stringify({ firing: timer.attempts })}\n`);
  await new Promise((r) => setTimeout(r, holdMs));
  const done = await rt.storage.shard(timer.shard).write(async (tx) => {
    if (!(await ctx.completeIn(tx))) return false;
    await tx.run('INSERT INTO effects (who, version) VALUES (?, ?)', ['child', timer.version]);
    return true;
  });
  process.stdout.write(`${JSON.stringify({ done })}\n`);
});
process.stdout.write('ready\n');
