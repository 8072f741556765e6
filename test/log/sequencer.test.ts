import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { verifyShard } from '../../src/log/verify.js';
import type { LogEvent } from '../../src/log/log.js';
import pg from 'pg';
import { createTestEnv, pgUrlFor, waitFor, type TestEnv } from '../support/env.js';

/** One append: which of the run's streams, and how many events. */
interface Append {
  stream: number;
  n: number;
}

const appendArb = fc.record({ stream: fc.integer({ min: 0, max: 5 }), n: fc.integer({ min: 1, max: 20 }) });
/** 2-8 concurrent writers, each with its own series of appends. */
const writersArb = fc.array(fc.array(appendArb, { minLength: 1, maxLength: 12 }), { minLength: 2, maxLength: 8 });

/**
 * Reads the shard from `after` until `total` events were seen, checking as it
 * goes that positions come gapless, once each, in increasing order.
 */
async function tailExactly(
  rt: Runtime,
  shard: string,
  after: number,
  total: number,
  chunk: number,
  useCursor: boolean,
): Promise<LogEvent[]> {
  const seen: LogEvent[] = [];
  let pos = after;
  const take = (batch: LogEvent[]) => {
    for (const e of batch) {
      if (e.pos !== pos + 1)
        throw new Error(`expected position ${pos + 1}, got ${e.pos} (after ${seen.length} events)`);
      pos = e.pos;
      seen.push(e);
    }
  };
  const deadline = Date.now() + 30_000;
  if (useCursor) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 30_000);
    try {
      for await (const batch of rt.cursors.tail(shard, after, { chunk, abort: abort.signal })) {
        take(batch);
        if (seen.length >= total) break;
      }
    } finally {
      clearTimeout(timer);
    }
  } else {
    while (seen.length < total) {
      const batch = await rt.log.readShard(shard, pos, chunk);
      take(batch);
      if (batch.length === 0) {
        if (Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }
  return seen;
}

describe('sequencer (postgres)', () => {
  let env: TestEnv;
  let rt: Runtime;
  beforeAll(async () => {
    env = await createTestEnv('postgres');
    rt = await Runtime.open(env.config);
  });
  afterAll(async () => {
    await rt?.close();
    await env?.cleanup();
  });

  it('numbers concurrent appends gaplessly, once each, in an order that keeps every stream in seq order', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(writersArb, fc.integer({ min: 1, max: 50 }), fc.boolean(), async (writers, chunk, useCursor) => {
        run++;
        const base = await rt.log.headPos('s0');
        const streamName = (i: number) => `run${run}/stream-${i}`;
        const total = writers.flat().reduce((a, w) => a + w.n, 0);
        const reader = tailExactly(rt, 's0', base, total, chunk, useCursor);
        reader.catch(() => {}); // awaited below, after the writers
        // Expected content: every event is identified by (stream, seq) and carries (writer, append, index).
        const appended = new Map<string, string>();
        await Promise.all(
          writers.map(async (appends: Append[], w) => {
            for (const [a, { stream, n }] of appends.entries()) {
              const events = Array.from({ length: n }, (_, i) => ({ type: 'e', data: { w, a, i } }));
              const r = await rt.log.append(streamName(stream), events);
              expect(r.seqs).toHaveLength(n);
              r.seqs.forEach((seq, i) => appended.set(`${streamName(stream)}#${seq}`, JSON.stringify({ w, a, i })));
            }
          }),
        );
        const seen = await reader;
        expect(seen).toHaveLength(total);
        expect(seen.map((e) => e.pos)).toEqual(Array.from({ length: total }, (_, i) => base + i + 1));
        // Each appended event exactly once, with its own data.
        const byKey = new Map<string, string>();
        for (const e of seen) {
          const key = `${e.stream}#${e.seq}`;
          expect(byKey.has(key)).toBe(false);
          byKey.set(key, e.data);
        }
        expect(byKey).toEqual(appended);
        // Per stream: seqs 1..k, in increasing order of position.
        const perStream = new Map<string, number[]>();
        for (const e of seen) perStream.set(e.stream, [...(perStream.get(e.stream) ?? []), e.seq]);
        for (const [stream, seqs] of perStream) {
          expect(seqs, stream).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
          expect(seqs.length).toBe(await rt.log.streamSeq(stream));
        }
        // Nothing beyond what was appended got a position.
        expect(await rt.log.headPos('s0')).toBe(base + total);
      }),
      { numRuns: 6 },
    );
    const v = await verifyShard(rt.storage.shard('s0'));
    expect(v.ok).toBe(true);
    expect(v.checked).toBe(await rt.log.headPos('s0'));
  });

  it('a second node stands by and takes over numbering when the first one closes', async () => {
    const env2 = await createTestEnv('postgres');
    const node2Input = { ...env2.input, node_id: `${env2.config.node_id}-two` } as ConfigInput;
    let n1: Runtime | undefined;
    let n2: Runtime | undefined;
    try {
      n1 = await Runtime.open(env2.config);
      await waitFor(() => n1!.sequencers[0]?.leader, 10_000, 'node 1 to lead');
      n2 = await Runtime.open(buildConfig(node2Input));
      expect(n2.config.node_id).not.toBe(n1.config.node_id);

      // Node 2 appends; node 1 numbers them.
      const r1 = await n2.log.append('two/a', [
        { type: 'x', data: 1 },
        { type: 'x', data: 2 },
      ]);
      expect(await n2.log.positions(r1)).toEqual([1, 2]);
      expect(n2.sequencers[0]!.leader).toBe(false);
      expect(n2.sequencers[0]!.numbered).toBe(0);
      // The leader counts after its COMMIT returns, which node 2 may observe first.
      await waitFor(() => n1!.sequencers[0]!.numbered === 2, 10_000, 'node 1 to count what it numbered');
      expect(n2.sequencers[0]!.numbered).toBe(0);

      // Rows appended while node 1 goes away are numbered by node 2.
      const during = n2.log.append('two/b', [{ type: 'y', data: 'during' }]);
      await n1.close();
      n1 = undefined;
      const r2 = await during;
      await waitFor(() => n2!.sequencers[0]?.leader, 15_000, 'node 2 to take over');
      const r3 = await n2.log.append('two/a', [{ type: 'x', data: 3 }]);
      const r4 = await n2.log.append(
        'two/c',
        Array.from({ length: 30 }, (_, i) => ({ type: 'z', data: i })),
      );
      const positions = [
        ...(await n2.log.positions(r2)),
        ...(await n2.log.positions(r3)),
        ...(await n2.log.positions(r4)),
      ];
      expect(positions).toEqual(Array.from({ length: 32 }, (_, i) => i + 3));
      // As above: the count follows the COMMIT the positions were read after.
      await waitFor(() => n2!.sequencers[0]!.numbered >= 31, 10_000, 'node 2 to count what it numbered');

      const all = await n2.log.readShard('s0', 0, 1000);
      expect(all.map((e) => e.pos)).toEqual(Array.from({ length: 34 }, (_, i) => i + 1));
      expect(all.filter((e) => e.stream === 'two/a').map((e) => e.seq)).toEqual([1, 2, 3]);
      const v = await verifyShard(n2.storage.shard('s0'));
      expect(v).toMatchObject({ ok: true, checked: 34 });

      // A node that comes back stands by: it reads what node 2 numbered and numbers nothing itself.
      n1 = await Runtime.open(env2.config);
      const r5 = await n1.log.append('two/a', [{ type: 'x', data: 4 }]);
      expect(await n1.log.positions(r5)).toEqual([35]);
      expect(n1.sequencers[0]!.leader).toBe(false);
      expect((await n1.log.read('two/a')).map((e) => e.pos)).toEqual([1, 2, 4, 35]);
      expect(await verifyShard(n1.storage.shard('s0'))).toMatchObject({ ok: true, checked: 35 });
    } finally {
      await n1?.close();
      await n2?.close();
      await env2.cleanup();
    }
  });
  it('keeps the log gapless and chained when the leading sequencer loses its connection under load', async () => {
    const env3 = await createTestEnv('postgres');
    const nodes: Runtime[] = [];
    const admin = new pg.Client({ connectionString: pgUrlFor(env3.pgDatabases[0]!) });
    await admin.connect();
    try {
      nodes.push(await Runtime.open(env3.config));
      nodes.push(
        await Runtime.open(buildConfig({ ...env3.input, node_id: `${env3.config.node_id}-b` } as ConfigInput)),
      );
      let stop = false;
      const written = new Map<string, number>();
      const writers = Array.from({ length: 6 }, async (_, w) => {
        let i = 0;
        while (!stop) {
          const node = nodes[w % 2]!;
          const stream = `load/${(w + i) % 4}`;
          const r = await node.log.append(
            stream,
            Array.from({ length: 1 + (i % 5) }, (_, k) => ({ type: 't', data: { w, i, k } })),
          );
          written.set(stream, Math.max(written.get(stream) ?? 0, r.seqs[r.seqs.length - 1]!));
          i++;
        }
      });
      // Cut the lock connection of whoever leads, three times, while writers keep going.
      for (let cut = 0; cut < 3; cut++) {
        const before = nodes.reduce((a, n) => a + n.sequencers[0]!.numbered, 0);
        await waitFor(
          () =>
            nodes.some((n) => n.sequencers[0]!.leader) &&
            nodes.reduce((a, n) => a + n.sequencers[0]!.numbered, 0) > before + 20,
          15_000,
          'a leader numbering rows',
        );
        const killed = await admin.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'millrace:%-lock' AND pid <> pg_backend_pid()",
        );
        expect(killed.rowCount).toBeGreaterThan(0);
      }
      await waitFor(() => nodes.some((n) => n.sequencers[0]!.leader), 15_000, 'a leader after the last cut');
      stop = true;
      await Promise.all(writers);
      const total = [...written.values()].reduce((a, b) => a + b, 0);
      await waitFor(async () => (await nodes[0]!.log.headPos('s0')) === total, 15_000, 'every row to be numbered');
      const unnumbered = await nodes[0]!.storage
        .shard('s0')
        .reader.all<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE pos IS NULL');
      expect(unnumbered[0]!.n).toBe(0);
      const all = await nodes[1]!.log.readShard('s0', 0, 100_000);
      expect(all.map((e) => e.pos)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
      for (const [stream, last] of written) {
        expect(
          all.filter((e) => e.stream === stream).map((e) => e.seq),
          stream,
        ).toEqual(Array.from({ length: last }, (_, i) => i + 1));
      }
      expect(await verifyShard(nodes[0]!.storage.shard('s0'))).toMatchObject({ ok: true, checked: total });
    } finally {
      await admin.end();
      for (const n of nodes) await n.close();
      await env3.cleanup();
    }
  });
});
