import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { Runtime } from '../../src/runtime.js';
import { Storage } from '../../src/storage/storage.js';
import { verifyShard } from '../../src/log/verify.js';
import { createTestEnv, DIALECTS, evenRanges, type Dialect, type TestEnv } from '../support/env.js';

const STREAMS = 300;
const sha1 = (text: string): bigint => BigInt(`0x${createHash('sha1').update(text, 'utf8').digest('hex')}`);
/** The shard ranges as the test builds them, independently of the config code. */
const ranges = evenRanges(3).map((r, i) => ({
  name: `s${i}`,
  from: BigInt(`0x${r.from}`),
  to: r.to === undefined ? 1n << 160n : BigInt(`0x${r.to}`),
}));
/** Mostly ASCII names; every tenth is non-ASCII, hashed as UTF-8. */
const streamName = (i: number): string => (i % 10 === 9 ? `счёт-${i}-€` : `acct-${i}`);
const owner = (key: string): string => ranges.find((r) => sha1(key) >= r.from && sha1(key) < r.to)!.name;

describe.each((['postgres', 'sqlite'] as Dialect[]).filter((d) => DIALECTS.includes(d)))(
  'sharding over 3 shards (%s)',
  (dialect) => {
    let env: TestEnv;
    let rt: Runtime;
    const counts = new Map<string, number>();

    beforeAll(async () => {
      env = await createTestEnv(dialect, { shards: 3 });
      rt = await Runtime.open(env.config);
      const results = await Promise.all(
        Array.from({ length: STREAMS }, (_, i) => {
          const n = 1 + (i % 3);
          counts.set(streamName(i), n);
          return rt.log.append(
            streamName(i),
            Array.from({ length: n }, (_, j) => ({ type: 'posted', data: { i, j } })),
          );
        }),
      );
      // Wait until every event has a position (PostgreSQL numbers them behind the commit).
      await Promise.all(results.map((r) => rt.log.positions(r)));
    });
    afterAll(async () => {
      await rt?.close();
      await env?.cleanup();
    });

    it('configures the three ranges the test expects', () => {
      expect(rt.storage.shards.map((s) => ({ name: s.name, from: s.from, to: s.to }))).toEqual(ranges);
    });

    it("keeps each stream's events on exactly the shard whose range holds SHA-1(stream)", async () => {
      const found = new Map<string, Array<{ shard: string; n: number }>>();
      for (const s of rt.storage.shards) {
        const rows = await s.reader.all<{ stream: string; n: number }>(
          'SELECT stream, count(*) AS n FROM events GROUP BY stream',
        );
        for (const r of rows) {
          const list = found.get(r.stream) ?? [];
          list.push({ shard: s.name, n: Number(r.n) });
          found.set(r.stream, list);
        }
      }
      expect(found.size).toBe(STREAMS);
      const perShard = new Map<string, number>();
      for (const [stream, n] of counts) {
        const expected = owner(stream);
        expect(rt.storage.shardFor(stream).name, stream).toBe(expected);
        expect(found.get(stream), stream).toEqual([{ shard: expected, n }]);
        perShard.set(expected, (perShard.get(expected) ?? 0) + 1);
      }
      // Every shard got streams (about a third each).
      expect([...perShard.keys()].sort()).toEqual(['s0', 's1', 's2']);
      for (const n of perShard.values()) expect(n).toBeGreaterThan(STREAMS / 6);
    });

    it('routes the same key the same way every time, across instances, for reads and later writes', async () => {
      const other = Storage.open(env.config);
      try {
        for (let i = 0; i < STREAMS; i++) {
          const stream = streamName(i);
          const a = rt.storage.shardFor(stream).name;
          expect(rt.storage.shardFor(stream).name).toBe(a);
          expect(rt.log.shardFor(stream).name).toBe(a);
          expect(other.shardFor(stream).name).toBe(a);
        }
      } finally {
        await other.close();
      }
      for (const i of [0, 1, 2, 97, 298, 299]) {
        const stream = streamName(i);
        const r = await rt.log.append(stream, [{ type: 'again', data: null }]);
        expect(r.shard).toBe(owner(stream));
        expect(r.seqs).toEqual([counts.get(stream)! + 1]);
        counts.set(stream, counts.get(stream)! + 1);
        await rt.log.positions(r);
        const events = await rt.log.read(stream);
        expect(events.map((e) => [e.shard, e.seq])).toEqual(
          Array.from({ length: counts.get(stream)! }, (_, k) => [owner(stream), k + 1]),
        );
      }
    });

    it('routes by an explicit shard key (a composite key hashes as its JSON array)', async () => {
      const key = ['tenant-7', 'eu'];
      const expected = owner(JSON.stringify(key));
      for (let i = 0; i < 20; i++) {
        const r = await rt.log.append(`tenant-7/order-${i}`, [{ type: 'placed', data: { i } }], { shardKey: key });
        expect(r.shard).toBe(expected);
        await rt.log.positions(r);
        expect((await rt.log.read(`tenant-7/order-${i}`, {}, key)).map((e) => e.shard)).toEqual([expected]);
      }
      const rows = await rt.storage
        .shard(expected)
        .reader.all<{ n: number }>("SELECT count(*) AS n FROM events WHERE stream LIKE 'tenant-7/%'");
      expect(Number(rows[0]!.n)).toBe(20);
    });

    it("numbers each shard gaplessly and each shard's chain verifies", async () => {
      let total = 0;
      for (const s of rt.storage.shards) {
        const count = Number((await s.reader.all<{ n: number }>('SELECT count(*) AS n FROM events'))[0]!.n);
        expect(count).toBeGreaterThan(0);
        const events = await rt.log.readShard(s.name, 0, 100_000);
        expect(events.map((e) => e.pos)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
        for (const e of events) expect(owner(e.stream) === s.name || e.stream.startsWith('tenant-7/')).toBe(true);
        const v = await verifyShard(s);
        expect(v).toMatchObject({ shard: s.name, ok: true, checked: count, head: count });
        total += count;
      }
      expect(total).toBe([...counts.values()].reduce((a, b) => a + b, 0) + 20);
    });
  },
);
