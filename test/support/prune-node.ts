/**
 * A node whose pruning job may be paused (SIGSTOP) by a test: opens a
 * Runtime from a config file with the bus face, and prints {"holding":true}
 * once its pruner holds the first shard's role.
 *
 * Usage: node --import tsx test/support/prune-node.ts <config> <node id>
 */
import { loadConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import { BusFace } from '../../src/bus/face.js';

const [configPath, nodeId] = process.argv.slice(2);
const rt = await Runtime.open(loadConfig(configPath, (c) => (c.node_id = nodeId)));
new BusFace(rt);
const shard = rt.storage.shards[0]!.name;
const t = setInterval(() => {
  if (rt.pruner.holding.has(shard)) {
    clearInterval(t);
    process.stdout.write(`${JSON.stringify({ holding: true })}\n`);
  }
}, 20);
