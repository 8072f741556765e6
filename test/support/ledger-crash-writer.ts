/**
 * A ledger writer to be killed: opens a Runtime and a Ledger from a config
 * file (one account type `w`, key `wallet`) and posts two-leg transfers
 * from many concurrent callers among few wallets (so postings fold into
 * waves) until the process is killed. It prints one JSON line per transfer
 * only after `ledger.write` resolved, i.e. after it was acknowledged:
 *
 *   {"ack":{"batch_id":..,"src":..,"dst":..,"units":..}}
 *
 * Usage: node --import tsx test/support/ledger-crash-writer.ts <config>
 */
import { loadConfig } from '../../src/core/config.js';
import { Ledger } from '../../src/ledger/ledger.js';
import { Runtime } from '../../src/runtime.js';

const [configPath] = process.argv.slice(2);
if (configPath === undefined) {
  process.stderr.write('usage: ledger-crash-writer <config>\n');
  process.exit(2);
}

const WORKERS = 24;
const WALLETS = 10;

const config = loadConfig(configPath);
const rt = await Runtime.open(config);
const ledger = new Ledger(rt, config.ledger);
const line = (o: unknown): void => {
  // stdout is a pipe: the write is synchronous, so a printed ack survives SIGKILL.
  process.stdout.write(`${JSON.stringify(o)}\n`);
};
line({ ready: true });

async function worker(w: number): Promise<void> {
  for (let k = 0; ; k++) {
    const src = (w * 7 + k * 3) % WALLETS;
    const dst = (src + 1 + ((w + k) % (WALLETS - 1))) % WALLETS;
    const units = 1 + ((w * 131 + k * 17) % 10_000);
    const amount = `${Math.floor(units / 100)}.${String(units % 100).padStart(2, '0')}`;
    const r = await ledger.write({
      dt_default: '2026-03-01T00:00:00Z',
      events: [
        { account: { type: 'w', attrs: { wallet: `w${src}` } }, side: 'debit', amount },
        { account: { type: 'w', attrs: { wallet: `w${dst}` } }, side: 'credit', amount },
      ],
    });
    line({ ack: { batch_id: r.batch_id, src, dst, units } });
  }
}

await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
