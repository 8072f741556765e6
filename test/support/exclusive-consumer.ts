/**
 * A node to be killed: opens a Runtime from a config file and runs one
 * exclusive at-least-once consumer named `x` on s0. Prints
 * {"holding":true} once it holds the consumer's lock, and
 * {"handled":[positions]} after each batch it handled.
 *
 * Usage: node --import tsx test/support/exclusive-consumer.ts <config>
 */
import { loadConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';

const configPath = process.argv[2];
if (configPath === undefined) {
  process.stderr.write('usage: exclusive-consumer <config>\n');
  process.exit(2);
}
const rt = await Runtime.open(loadConfig(configPath));
const consumer = rt.cursors.consume({
  shard: 's0',
  name: 'x',
  mode: 'at-least-once',
  exclusive: true,
  handler: async (events) => {
    process.stdout.write(`${JSON.stringify({ handled: events.map((e) => e.pos) })}\n`);
  },
});
const timer = setInterval(() => {
  if (consumer.holding) {
    process.stdout.write('{"holding":true}\n');
    clearInterval(timer);
  }
}, 10);
