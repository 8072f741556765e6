/**
 * A node that splits a shard under pipe load, to be killed: opens a Runtime
 * and a Pipe from a config file (kind `k`, an in-process handler that prints
 * each push and finishes the session in its answer), resumes unfinished
 * splits, and runs writers that each open a session, append records (seq
 * numbered) and store it with a short timeout, over and over. Prints
 * {"ack":[id, record]} for each append answered, {"push":[id, repeats,
 * records]} for each push. With `start`, starts splitting s0 at 8 into s1
 * once the load runs. With --kill-at STEP it kills itself (SIGKILL) the first
 * time the split reaches STEP. The last run (no --kill-at) stops writing once
 * the split is done and waits until every session is finished; it prints
 * {"done":true}.
 *
 * Usage: node --import tsx test/support/split-pipe-child.ts <config> <run> [start] [--kill-at STEP]
 */
import { loadConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { Pipe, type Pusher } from '../../src/pipe/pipe.js';
import { Runtime } from '../../src/runtime.js';

const [configPath, run, ...rest] = process.argv.slice(2);
const flag = rest.indexOf('--kill-at');
const killStep = flag >= 0 ? rest[flag + 1] : undefined;
const line = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const rt = await Runtime.open(
  loadConfig(configPath, (c) => (c.node_id = `split-pipe-child-${run}`)),
  { background: false },
);
rt.splitter.onStep = (step) => {
  if (step === killStep) process.kill(process.pid, 'SIGKILL');
};
const pusher: Pusher = (_handler, _kind, d) => {
  line({ push: [d.id, d.repeats, d.records.map((r) => r.toString('utf8'))] });
  return Promise.resolve({ action: 'delete' });
};
const pipe = new Pipe(rt, rt.config.pipe, pusher);
await pipe.start();
await rt.start();

/** Retries what a moving range refused (nothing was written); false once the session is closed or gone (its lease ran out). */
async function retried(fn: () => Promise<unknown>): Promise<boolean> {
  for (;;) {
    try {
      await fn();
      return true;
    } catch (err) {
      if (isMillraceError(err, 'session_closed') || isMillraceError(err, 'session_not_found')) return false;
      if (!isMillraceError(err) || !err.retryable) throw err;
      await sleep(5);
    }
  }
}

let stop = false;
let acks = 0;
const writers = Promise.all(
  Array.from({ length: 6 }, async (_, w) => {
    for (let s = 0; !stop; s++) {
      let id = '';
      await retried(async () => (id = await pipe.create('k')));
      let open = true;
      for (let n = 0; n < 4 && open; n++) {
        const rec = `${run}:${w}:${s}:${n}`;
        open = await retried(() => pipe.append(id, Buffer.from(rec), n));
        if (open) {
          acks++;
          line({ ack: [id, rec] });
        }
      }
      if (open) await retried(() => pipe.store(id, (s % 3) * 0.4));
    }
  }),
);
if (rest.includes('start')) {
  while (acks < 40) await sleep(10);
  const job = await rt.splitter.start('s0', '8', 's1');
  line({ split: job.id });
}
for (;;) {
  const jobs = await rt.splitter.jobs();
  if (jobs.length > 0 && jobs.every((j) => j.phase === 'done')) break;
  await sleep(20);
}
// Some load after the cut-over, then every session comes back and is finished.
const after = acks + 60;
while (acks < after) await sleep(10);
stop = true;
await writers;
for (;;) {
  let left = 0;
  for (const s of rt.storage.shards)
    left += Number((await s.reader.all<{ n: number }>('SELECT count(*) AS n FROM pipe_sessions'))[0]!.n);
  if (left === 0) break;
  await sleep(50);
}
line({ done: true });
await pipe.stop();
await rt.close();
process.exit(0);
