/**
 * A bus node that splits a shard under publish load, to be killed: opens a
 * node (bus face) from a config file, resumes unfinished splits, publishes
 * to twelve keys of `orders` in a loop (ids `<key>#<run>.<i>`, a refused
 * batch published again with the same ids) and prints {"ack":[key, id]} for
 * each publish answered; a subscription `live` acks what it is delivered and
 * prints {"got":id}. With `start`, splits s0 at 8 into s1 once the load
 * runs. With --kill-at STEP[:N] it kills itself (SIGKILL) the N-th time the
 * split reaches STEP. Prints {"done":true} once no split is unfinished.
 *
 * Usage: node --import tsx test/support/split-bus-child.ts <config> <run> [start] [--kill-at STEP[:N]]
 */
import type { Delivery, DeliverySession } from '../../src/bus/delivery.js';
import { BusFace } from '../../src/bus/face.js';
import { loadConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { Runtime } from '../../src/runtime.js';

const [configPath, run, ...rest] = process.argv.slice(2);
const flag = rest.indexOf('--kill-at');
const [killStep, killNth] = flag >= 0 ? rest[flag + 1]!.split(':') : [undefined, undefined];
const line = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

const rt = await Runtime.open(
  loadConfig(configPath, (c) => (c.node_id = `split-bus-child-${run}`)),
  { background: false },
);
let seen = 0;
rt.splitter.onStep = (step) => {
  if (step !== killStep) return;
  seen++;
  if (seen >= Number(killNth ?? 1)) process.kill(process.pid, 'SIGKILL');
};
// The hook is set before the node starts (and resumes the split).
const face = new BusFace(rt);
await rt.start();
await face.start();
const bus = face.bus;

let session: DeliverySession | undefined;
const early: Delivery[] = [];
const take = (d: Delivery): void => {
  session!.ack([d.deliveryId]);
  line({ got: d.id });
};
for (let i = 0; ; i++) {
  try {
    session = await bus.open(
      'live',
      { topics: ['orders'], ack_wait_ms: 600_000, max_in_flight: 8 },
      {
        // Deliveries may come before open resolves.
        deliver: (d) => (session === undefined ? early.push(d) : take(d)),
        gap: () => {},
        closed: () => {},
      },
    );
    for (const d of early.splice(0)) take(d);
    break;
  } catch (err) {
    // The killed run's lease lapses; its home may be cutting over.
    if (!(isMillraceError(err) && (err.retryable || err.code === 'subscription_busy')) || i > 2000) throw err;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const keys = Array.from({ length: 12 }, (_, i) => `key${i}`);
let stop = false;
let count = 0;
const load = Promise.all(
  keys.map(async (key) => {
    for (let i = 0; !stop; i++) {
      const events = [0, 1].map((j) => ({ id: `${key}#${run}.${i}.${j}`, topic: 'orders', key, type: 't', data: i }));
      for (;;) {
        try {
          await bus.publish(events);
          break;
        } catch (err) {
          if (!isMillraceError(err) || !err.retryable) throw err;
          // Refused while the range cut over (shard_moved), or partly stored: the same ids again.
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      count += events.length;
      for (const e of events) line({ ack: [key, e.id] });
    }
  }),
);
if (rest.includes('start')) {
  while (count < 100) await new Promise((r) => setTimeout(r, 10));
  const job = await rt.splitter.start('s0', '8', 's1');
  line({ split: job.id });
}
for (;;) {
  const jobs = await rt.splitter.jobs();
  if (jobs.length > 0 && jobs.every((j) => j.phase === 'done')) break;
  await new Promise((r) => setTimeout(r, 20));
}
// Some load after the cut-over.
const after = count + 60;
while (count < after) await new Promise((r) => setTimeout(r, 10));
stop = true;
await load;
line({ done: true });
await face.stop();
await rt.close();
process.exit(0);
