import { buildConfig } from '../src/core/config.js';
import { Ledger } from '../src/ledger/ledger.js';
import { Runtime } from '../src/runtime.js';
import { createPgDatabase, dropPgDatabase, pgUrlFor, pool, scratchDir } from './support.js';
const scratch = scratchDir();
const db = await createPgDatabase();
const config = buildConfig({ data_dir: scratch.dir, logging: { level: 'silent' }, grpc: { enabled: false }, ledger: { accounts: { acc: { key: ['client_id'], aux: ['product'], groupings: [['product']], scale: 2 } }, aggregation: { enabled: false } }, storage: { dialect: 'postgres', shards: [{ name: 's0', url: pgUrlFor(db) }] } });
const rt = await Runtime.open(config);
const ledger = new Ledger(rt, config.ledger);
const go = async (n: number) => {
  const t0 = performance.now();
  await pool(n, 20, async (i) => {
    const src = (i * 7919) % 50; const dst = (src + 1 + ((i * 104729) % 49)) % 50;
    await ledger.write({ events: [
      { account: { type: 'acc', attrs: { client_id: `a${src}`, product: 'p' } }, side: 'debit', amount: '1.00', dt: '2023-01-01T00:00:00Z' },
      { account: { type: 'acc', attrs: { client_id: `a${dst}`, product: 'p' } }, side: 'credit', amount: '1.00', dt: '2023-01-01T00:00:00Z' }] });
  });
  return (n * 1000) / (performance.now() - t0);
};
await go(500);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const r = await go(5000);
const cpu = process.cpuUsage(cpu0);
console.log('rate', r.toFixed(0), 'cpu ms per transfer', ((cpu.user + cpu.system) / 1000 / 5000).toFixed(3), 'wall', (performance.now() - t0).toFixed(0));
await rt.close(); await dropPgDatabase(db); scratch.cleanup();
const g = (globalThis as any).__T; for (const k in g) console.log(k.padEnd(32), g[k][0], (g[k][1]/g[k][0]).toFixed(2));
