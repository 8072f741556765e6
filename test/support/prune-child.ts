/**
 * A pruning node to be killed: opens a Runtime (bus face registered) from a
 * config file and runs pruning passes. With --hang-inside it prints
 * {"inside":n} from inside the n-th removing transaction (rows removed, not
 * committed) and then waits there forever; otherwise it prints
 * {"removing":n} inside each batch and keeps going.
 *
 * Usage: node --import tsx test/support/prune-child.ts <config> [--hang-inside N]
 */
import { loadConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import { BusFace } from '../../src/bus/face.js';

const [configPath, ...rest] = process.argv.slice(2);
const flag = rest.indexOf('--hang-inside');
const hangAt = flag >= 0 ? Number(rest[flag + 1]) : 0;
const line = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

const rt = await Runtime.open(loadConfig(configPath));
const face = new BusFace(rt);
let n = 0;
(rt.pruner as unknown as { opts: { afterRemove?: () => Promise<void> } }).opts.afterRemove = async () => {
  n++;
  if (hangAt > 0 && n === hangAt) {
    line({ inside: n });
    await new Promise(() => {});
  }
  // Otherwise a little time inside each batch, so a kill lands anywhere.
  line({ removing: n });
  await new Promise((res) => setTimeout(res, 5));
};
line({ ready: true });
const shard = rt.storage.shards[0]!;
for (;;) {
  const r = await rt.pruner.pass(shard);
  line({ batch: n, removed: r.removed });
  if (r.removed === 0) await new Promise((res) => setTimeout(res, 20));
}
void face;
