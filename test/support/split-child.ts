/**
 * A node that splits a shard under machine load, to be killed: opens a
 * Runtime from a config file (namespace `p`, in-process processor that
 * stores each call's args in its event), resumes unfinished splits, calls
 * every machine in a loop and prints {"ack":[id, token]} for each call
 * answered. With `start`, starts splitting s0 at 8 into s1 once the load
 * runs. With --kill-at STEP[:N] it kills itself (SIGKILL) the N-th time the
 * split reaches STEP. Prints {"done":true} once no split is unfinished.
 *
 * Usage: node --import tsx test/support/split-child.ts <config> <run> [start] [--kill-at STEP[:N]]
 */
import { loadConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { Machines } from '../../src/machines/machines.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { Runtime } from '../../src/runtime.js';

const [configPath, run, ...rest] = process.argv.slice(2);
const flag = rest.indexOf('--kill-at');
const [killStep, killNth] = flag >= 0 ? rest[flag + 1]!.split(':') : [undefined, undefined];
const line = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

const rt = await Runtime.open(
  loadConfig(configPath, (c) => (c.node_id = `split-child-${run}`)),
  { background: false },
);
let seen = 0;
rt.splitter.onStep = (step) => {
  if (step !== killStep) return;
  seen++;
  if (seen >= Number(killNth ?? 1)) process.kill(process.pid, 'SIGKILL');
};
const fn: ProcessorFn = (req) => ({ response: null, events: [{ arg: (req as { args?: unknown }).args ?? null }] });
const m = new Machines(rt, { processors: new Map([['fn', fn]]) });
m.registerTimers();
await rt.start();

const ids = Array.from({ length: 20 }, (_, i) => `m${i}`);
for (const id of ids) {
  const known = await m.get('p', { id }).then(
    () => true,
    (err: unknown) => {
      if (isMillraceError(err, 'machine_not_found')) return false;
      throw err;
    },
  );
  if (!known) {
    await m.start('p', id, null);
    line({ ack: [id, 'init'] });
  }
}
let stop = false;
let calls = 0;
const load = Promise.all(
  ids.map(async (id) => {
    for (let i = 0; !stop; i++) {
      const token = `${run}:${i}`;
      try {
        await m.call('p', { id }, token);
        calls++;
        line({ ack: [id, token] });
      } catch (err) {
        if (!isMillraceError(err) || !err.retryable) throw err;
        // Refused while the range cut over (shard_moved), or busy: the same call again (a new token: a refused call wrote nothing).
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }),
);
if (rest.includes('start')) {
  while (calls < 60) await new Promise((r) => setTimeout(r, 10));
  const job = await rt.splitter.start('s0', '8', 's1');
  line({ split: job.id });
}
for (;;) {
  const jobs = await rt.splitter.jobs();
  if (jobs.length > 0 && jobs.every((j) => j.phase === 'done')) break;
  await new Promise((r) => setTimeout(r, 20));
}
// Some load after the cut-over.
const after = calls + 40;
while (calls < after) await new Promise((r) => setTimeout(r, 10));
stop = true;
await load;
line({ done: true });
await rt.close();
process.exit(0);
