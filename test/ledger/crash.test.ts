import { afterEach, describe, expect, it } from 'vitest';
import { createInterface } from 'node:readline';
import { verifyShard } from '../../src/log/verify.js';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/env.js';
import { spawnTs, writeConfigFile } from '../support/proc.js';

interface Ack {
  batch_id: string;
  src: number;
  dst: number;
  units: number;
}

/**
 * Ledger postings folded into waves, each wave one statement that is its own
 * transaction (PostgreSQL): a transfer acknowledged by `ledger.write` is
 * durable. The writer is killed with SIGKILL mid-write; after a restart
 * every acknowledged transfer is there with both legs and its log events,
 * every stored transfer is whole (a wave is all or nothing), streams are
 * gapless and the chain verifies.
 */
describe('ledger postings across SIGKILL (postgres)', () => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.cleanup();
    env = undefined;
  });

  it('keeps every acknowledged transfer, whole, after the writer is killed mid-write', async () => {
    env = await createTestEnv('postgres', {
      extra: { ledger: { accounts: { w: { key: ['wallet'], scale: 2 } }, aggregation: { enabled: false } } as never },
    });
    const configPath = writeConfigFile(env.dataDir, env.input);
    const child = spawnTs('test/support/ledger-crash-writer.ts', [configPath]);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on('close', (_code, signal) => res(signal)));
    const acks: Ack[] = [];
    let killed = false;
    const rl = createInterface({ input: child.stdout! });
    const linesDone = new Promise<void>((r) => rl.once('close', r));
    rl.on('line', (text) => {
      const msg = JSON.parse(text) as { ack?: Ack };
      if (msg.ack) acks.push(msg.ack);
      if (acks.length >= 600 && !killed) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    const guard = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const signal = await exited;
    clearTimeout(guard);
    await linesDone;
    if (!killed) throw new Error(`the writer ended before 600 acks (${acks.length}; signal ${signal}):\n${stderr}`);
    expect(signal).toBe('SIGKILL');

    const rt = await Runtime.open(env.config);
    try {
      const shard = rt.storage.shards[0]!;
      // The restarted sequencer numbers whatever the dead one left.
      await waitFor(
        async () =>
          (await shard.reader.all<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE pos IS NULL'))[0]!.n ===
          0,
        30_000,
        'every row numbered',
      );
      const legs = await shard.reader.all<{ batch_id: string; acc_key: string; side: string; amount: string }>(
        'SELECT batch_id, acc_key, side, CAST(amount AS TEXT) AS amount FROM ledger_events ORDER BY batch_id, side',
      );
      const byBatch = new Map<string, Array<{ acc_key: string; side: string; amount: string }>>();
      for (const l of legs) {
        let list = byBatch.get(l.batch_id);
        if (!list) byBatch.set(l.batch_id, (list = []));
        list.push({ acc_key: l.acc_key, side: l.side, amount: l.amount });
      }
      // Every acknowledged transfer, both legs as written.
      for (const a of acks) {
        expect(byBatch.get(a.batch_id), `acknowledged transfer ${a.batch_id}`).toEqual([
          { acc_key: JSON.stringify([`w${a.dst}`]), side: 'credit', amount: String(a.units) },
          { acc_key: JSON.stringify([`w${a.src}`]), side: 'debit', amount: String(a.units) },
        ]);
      }
      // Every stored transfer is whole (acknowledged or not), with one log event per leg's account.
      for (const [batch, list] of byBatch)
        expect(
          list.map((l) => l.side),
          `stored transfer ${batch}`,
        ).toEqual(['credit', 'debit']);
      const logged = await shard.reader.all<{ b: string; n: number }>(
        "SELECT data::jsonb->>'batch_id' AS b, count(*)::int AS n FROM events WHERE stream LIKE 'ledger/w/%' GROUP BY 1",
      );
      expect(new Map(logged.map((r) => [r.b, Number(r.n)]))).toEqual(new Map([...byBatch.keys()].map((b) => [b, 2])));
      // Streams gapless, and the chain verifies.
      const gaps = await shard.reader.all<{ stream: string }>(
        "SELECT stream FROM events WHERE stream LIKE 'ledger/w/%' GROUP BY stream HAVING max(seq) <> count(*) OR min(seq) <> 1",
      );
      expect(gaps).toEqual([]);
      expect((await verifyShard(shard)).ok).toBe(true);
    } finally {
      await rt.close();
    }
  });
});
