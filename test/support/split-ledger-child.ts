/**
 * A node that splits s1 at c into the spare s2 under ledger transfer load, to
 * be killed: opens a Runtime from a config file (three shards, see
 * test/storage/split-ledger.test.ts), starts the ledger face, resumes
 * unfinished splits, runs two-leg transfers among wallets of every range and
 * prints {"ack":{batch, from, to, amount}} for each one answered. With
 * `start`, it first takes the clients' locks and writes their states, and
 * starts the split once the load runs. With --kill-at STEP it kills itself
 * (SIGKILL) when the split reaches STEP.
 *
 * Usage: node --import tsx test/support/split-ledger-child.ts <config> <run> [start] [--kill-at STEP]
 */
import { loadConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { createLedgerFace } from '../../src/ledger/ledger-face.js';
import { Runtime } from '../../src/runtime.js';

const [configPath, run, ...rest] = process.argv.slice(2);
const flag = rest.indexOf('--kill-at');
const killStep = flag >= 0 ? rest[flag + 1] : undefined;
const line = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

const rt = await Runtime.open(
  loadConfig(configPath!, (c) => (c.node_id = `split-ledger-child-${run}`)),
  { background: false },
);
rt.splitter.onStep = (step) => {
  if (step === killStep) process.kill(process.pid, 'SIGKILL');
};
await rt.start();
const face = createLedgerFace(rt);
await face.start();
const ledger = face.ledger;

if (rest.includes('start')) {
  for (let i = 0; i < 12; i++) {
    const c = `c${i}`;
    await ledger.acquireLock({
      type: 'client',
      attrs: { client_id: c },
      uid: `u-${c}`,
      mode: 'shared',
      timeout_s: 3600,
    });
    await ledger.write({ states: [{ type: 'contract', attrs: { contract_id: c }, state: { c } }] });
  }
  line({ setup: true });
}

const wallets = Array.from({ length: 24 }, (_, i) => `w${i}`);
let stop = false;
let acks = 0;
const load = Promise.all(
  Array.from({ length: 6 }, async (_, worker) => {
    for (let i = 0; !stop; i++) {
      const from = wallets[(worker * 5 + i) % 24]!;
      const to = wallets[(worker * 11 + i * 7 + 1) % 24]!;
      if (from === to) continue;
      const amount = 1 + (i % 7);
      try {
        const a = await ledger.write({
          dt_default: `2026-0${1 + (i % 4)}-${String(1 + (i % 28)).padStart(2, '0')}T08:00:00Z`,
          events: [
            { account: { type: 'wallet', attrs: { wallet: from, kind: 'a' } }, side: 'debit', amount: String(amount) },
            { account: { type: 'wallet', attrs: { wallet: to, kind: 'b' } }, side: 'credit', amount: String(amount) },
          ],
        });
        acks++;
        line({ ack: { batch: a.batch_id, from, to, amount } });
      } catch (err) {
        if (!isMillraceError(err) || !err.retryable) throw err;
        // Refused while the range cut over (nothing written): a new transfer.
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }),
);
if (rest.includes('start')) {
  while (acks < 60) await new Promise((r) => setTimeout(r, 10));
  const job = await rt.splitter.start('s1', 'c', 's2');
  line({ split: job.id });
}
for (;;) {
  const jobs = await rt.splitter.jobs();
  if (jobs.length > 0 && jobs.every((j) => j.phase === 'done')) break;
  await new Promise((r) => setTimeout(r, 20));
}
const after = acks + 40;
while (acks < after) await new Promise((r) => setTimeout(r, 10));
stop = true;
await load;
line({ done: true });
await face.stop();
await rt.close();
process.exit(0);
