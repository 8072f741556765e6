import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { buildConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { Runtime } from '../../src/runtime.js';
import { BusFace } from '../../src/bus/face.js';
import type { Delivery } from '../../src/bus/delivery.js';
import type { GapNotice } from '../../src/bus/subscription.js';
import { checkpointOf, removeEventsIn } from '../../src/log/pruner.js';
import { verifyShard } from '../../src/log/verify.js';
import { createTestEnv, DIALECTS, waitFor, type Dialect, type TestEnv } from '../support/env.js';

const envs: TestEnv[] = [];
const rts: Runtime[] = [];
afterEach(async () => {
  // Teardown: a runtime that fails to close has failed its test already.
  for (const rt of rts.splice(0)) await rt.close().catch(() => {});
  for (const e of envs.splice(0)) await e.cleanup();
});

async function open(
  dialect: Dialect,
  bus: Record<string, unknown> = {},
): Promise<{ rt: Runtime; face: BusFace; env: TestEnv }> {
  const env = await createTestEnv(dialect);
  envs.push(env);
  const config = buildConfig({
    ...env.input,
    retention: { enabled: false, batch: 7 },
    bus: { topics: ['orders', 'audit', 'keep'], ...bus },
  } as never);
  const rt = await Runtime.open(config);
  rts.push(rt);
  const face = new BusFace(rt);
  await face.start();
  return { rt, face, env };
}

async function publishN(face: BusFace, topic: string, keys: string[], perKey: number): Promise<void> {
  for (let i = 0; i < perKey; i++) {
    await face.bus.publish(keys.map((key) => ({ topic, key, type: 'e', data: { i, key } })));
  }
}

async function prune(rt: Runtime): Promise<number> {
  const shard = rt.storage.shards[0]!;
  let removed = 0;
  for (;;) {
    const r = await rt.pruner.pass(shard);
    removed += r.removed;
    if (r.removed === 0) return removed;
  }
}

const count = async (rt: Runtime, sql: string, params: unknown[] = []): Promise<number> =>
  Number((await rt.storage.shards[0]!.reader.all<{ n: number }>(sql, params))[0]!.n);

function collectingSink(): {
  deliveries: Delivery[];
  gaps: GapNotice[];
  closed: unknown[];
  sink: { deliver(d: Delivery): void; gap(g: GapNotice): void; closed(e: unknown): void };
} {
  const deliveries: Delivery[] = [];
  const gaps: GapNotice[] = [];
  const closed: unknown[] = [];
  return {
    deliveries,
    gaps,
    closed,
    sink: { deliver: (d) => deliveries.push(d), gap: (g) => gaps.push(g), closed: (e) => closed.push(e) },
  };
}

describe.each(DIALECTS)('retention (%s)', (dialect) => {
  it('keeps the newest max_events per key, never touches other streams, and verify proves the chain across the holes', async () => {
    const { rt, face } = await open(dialect, { retention: { orders: { max_events: 2, per: 'key' } } });
    // A machine's history and an unrelated stream, interleaved with the topic.
    for (let i = 0; i < 5; i++) {
      await rt.log.append('m/ns/machine-1/1', [{ type: 'machine.event', data: { i } }]);
      await publishN(face, 'orders', ['a', 'b', 'c'], 1);
      await publishN(face, 'audit', ['x'], 1);
    }
    const shard = rt.storage.shards[0]!;
    const head = await rt.log.headPos(shard.name);
    expect(head).toBe(25);
    const removed = await prune(rt);
    expect(removed).toBe(9);
    for (const k of ['a', 'b', 'c']) {
      const seqs = (await rt.log.read(`t/orders/${k}`, { limit: 100 }, ['orders', k])).map((e) => e.seq);
      expect(seqs).toEqual([4, 5]);
    }
    expect((await rt.log.read('m/ns/machine-1/1', { limit: 100 })).length).toBe(5);
    expect(await count(rt, "SELECT COUNT(*) AS n FROM events WHERE stream LIKE 't/audit/%'")).toBe(5);
    const v = await verifyShard(shard);
    expect(v).toMatchObject({ ok: true, checked: 16, head: 25, removed: 9 });
    const horizon = await shard.reader.all<{ pos: number; removed: number }>(
      "SELECT pos, removed FROM retention_horizons WHERE scope = 'topic:orders'",
    );
    expect(Number(horizon[0]!.removed)).toBe(9);
    // A second pass finds nothing more.
    expect(await prune(rt)).toBe(0);
  });

  it('max_events per topic (set at runtime) and max_age_ms keep the head; verify starts from the checkpoint and catches tampering', async () => {
    const { rt, face } = await open(dialect, { retention: { audit: { max_age_ms: 1 } } });
    await rt.catalog.put('bus.topic', 'orders', { retention: { max_events: 4 } });
    await publishN(face, 'orders', ['a', 'b'], 5);
    await publishN(face, 'audit', ['x'], 3);
    await new Promise((r) => setTimeout(r, 20));
    const shard = rt.storage.shards[0]!;
    const removed = await prune(rt);
    // orders: 10 - 4; audit: all 3 are old, but the last one is the head.
    expect(removed).toBe(6 + 2);
    expect(await count(rt, "SELECT COUNT(*) AS n FROM events WHERE stream LIKE 't/orders/%'")).toBe(4);
    expect(await count(rt, "SELECT COUNT(*) AS n FROM events WHERE stream LIKE 't/audit/%'")).toBe(1);
    const cp = await checkpointOf(shard);
    expect(cp.pos).toBe(6);
    const v = await verifyShard(shard);
    expect(v).toMatchObject({ ok: true, checked: 5, head: 13, removed: 8, checkpoint: { pos: 6 } });
    // Appends go on chaining after pruning.
    await publishN(face, 'keep', ['k'], 2);
    await waitFor(async () => (await rt.log.headPos(shard.name)) === 15, 10_000, 'numbered');
    expect((await verifyShard(shard)).ok).toBe(true);
    // Tampering with a surviving event is caught.
    await shard.write((tx) => tx.run('UPDATE events SET data = \'{"i":99}\' WHERE pos = 7'));
    expect(await verifyShard(shard)).toMatchObject({ ok: false, badPos: 7 });
    await shard.write((tx) => tx.run('DELETE FROM events WHERE pos = 7'));
    // A hole with no anchor is caught.
    expect(await verifyShard(shard)).toMatchObject({ ok: false, badPos: 7 });
  });

  it('a subscription behind removed events stops with position_expired, or resumes with a gap notice counting them', async () => {
    const { rt, face } = await open(dialect, { retention: { orders: { max_events: 3 } } });
    await face.bus.putSubscription('strict', { topics: ['orders'] });
    await face.bus.putSubscription('lenient', { topics: ['orders'], on_expired: 'resume' });
    await face.bus.putSubscription('other', { topics: ['audit'] });
    await publishN(face, 'orders', ['a'], 8);
    await publishN(face, 'audit', ['x'], 1);
    expect(await prune(rt)).toBe(5);

    const s1 = collectingSink();
    const err = await face.bus.open('strict', undefined, s1.sink).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isMillraceError(err, 'position_expired')).toBe(true);
    expect((err as { details: { lost: number } }).details.lost).toBe(5);
    expect(s1.deliveries).toEqual([]);

    const s2 = collectingSink();
    const session = await face.bus.open('lenient', undefined, s2.sink);
    await waitFor(() => s2.deliveries.length === 3, 10_000, 'deliveries');
    expect(s2.gaps).toEqual([{ shard: 's0', lost: 5, horizon: 5 }]);
    expect(s2.deliveries.map((d) => JSON.parse(d.data).i)).toEqual([5, 6, 7]);
    await session.close();
    // Reported once: the next connection gets no notice.
    expect(await face.bus.lostOf('lenient')).toEqual([]);

    // Deleted and created again under the same name, it inherits no losses.
    expect((await face.bus.lostOf('strict')).length).toBe(1);
    await face.bus.deleteSubscription('strict');
    await face.bus.putSubscription('strict', { topics: ['orders'] });
    expect(await face.bus.lostOf('strict')).toEqual([]);
    const s4 = collectingSink();
    const again = await face.bus.open('strict', undefined, s4.sink);
    await waitFor(() => s4.deliveries.length === 3, 10_000, 'deliveries after re-creation');
    await again.close();

    // A subscription of other topics lost nothing.
    const s3 = collectingSink();
    const other = await face.bus.open('other', undefined, s3.sink);
    await waitFor(() => s3.deliveries.length === 1, 10_000, 'other delivery');
    expect(s3.gaps).toEqual([]);
    await other.close();
  });

  it('a live connection learns of removed events it had not acknowledged: closed with position_expired, or a gap notice', async () => {
    const { rt, face } = await open(dialect, { lease_ms: 600, retention: { orders: { max_events: 2 } } });
    await face.bus.putSubscription('live-stop', { topics: ['orders'] });
    await face.bus.putSubscription('live-resume', { topics: ['orders'], on_expired: 'resume' });
    const a = collectingSink();
    const b = collectingSink();
    const sa = await face.bus.open('live-stop', undefined, a.sink);
    const sb = await face.bus.open('live-resume', undefined, b.sink);
    await publishN(face, 'orders', ['a'], 6);
    // Delivered, never acknowledged: removing them loses them for both.
    await waitFor(() => a.deliveries.length === 6 && b.deliveries.length === 6, 10_000, 'deliveries');
    expect(await prune(rt)).toBe(4);
    await waitFor(() => a.closed.length === 1, 10_000, 'live-stop closed');
    expect(isMillraceError(a.closed[0], 'position_expired')).toBe(true);
    await waitFor(() => b.gaps.length === 1, 10_000, 'gap notice');
    expect(b.gaps[0]).toMatchObject({ lost: 4 });
    expect(sb.closed).toBe(false);
    await sb.close();
    expect(sa.closed).toBe(true);
  });

  it('republishing an id whose event retention removed is still a duplicate (position 0), not a second write nor a wait', async () => {
    const { rt, face } = await open(dialect, { retention: { orders: { max_events: 1, per: 'key' } } });
    const first = await face.bus.publish([{ topic: 'orders', key: 'a', id: 'once', type: 'e', data: 1 }]);
    await face.bus.publish([{ topic: 'orders', key: 'a', id: 'twice', type: 'e', data: 2 }]);
    await face.bus.publish([{ topic: 'audit', key: 'x', type: 'e', data: 3 }]);
    expect(await prune(rt)).toBe(1);
    const again = await face.bus.publish([{ topic: 'orders', key: 'a', id: 'once', type: 'e', data: 1 }]);
    expect(first[0]!.duplicate).toBe(false);
    expect(again[0]).toEqual({ shard: 's0', pos: 0, duplicate: true });
    expect(await count(rt, "SELECT COUNT(*) AS n FROM events WHERE stream = 't/orders/a'")).toBe(1);
  });

  it('a bad retention rule is refused with a typed error and nothing is stored', async () => {
    const { rt } = await open(dialect);
    expect(() => buildConfig({ bus: { topics: ['t'], retention: { t: { per: 'key' } } } })).toThrow(
      /max_age_ms, max_events or both/,
    );
    expect(() => buildConfig({ bus: { topics: ['t'], retention: { t: { max_events: 0 } } } })).toThrow(
      /config|max_events/,
    );
    expect(() => buildConfig({ retention: { batch: 0 } })).toThrow(/retention.batch/);
    expect(rt.catalog.list('bus.topic')).toEqual([]);
  });
});

describe('chain gap anchors (property)', () => {
  it('removing any subsets in any order of batches leaves a chain that verifies, with one anchor per run of removed positions', async () => {
    const env = await createTestEnv('sqlite');
    envs.push(env);
    const rt = await Runtime.open(buildConfig({ ...env.input, retention: { enabled: false } } as never));
    rts.push(rt);
    const shard = rt.storage.shards[0]!;
    const N = 60;
    for (let i = 0; i < N; i++) await rt.log.append(`s/${i % 5}`, [{ type: 't', data: { i } }]);
    const snapshot = await shard.reader.all<Record<string, unknown>>('SELECT * FROM events ORDER BY pos');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uniqueArray(fc.integer({ min: 1, max: N }), { maxLength: 25 }), { maxLength: 5 }),
        async (batches) => {
          // Restore the full log.
          await shard.write(async (tx) => {
            await tx.run('DELETE FROM events');
            await tx.run('DELETE FROM chain_gaps');
            for (const r of snapshot) {
              await tx.run(
                'INSERT INTO events (pos, stream, seq, type, data, meta, created_at, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                [r.pos, r.stream, r.seq, r.type, r.data, r.meta, r.created_at, r.hash],
              );
            }
          });
          const gone = new Set<number>();
          for (const b of batches) {
            const removed = await shard.write((tx) =>
              removeEventsIn(
                tx,
                [...b].sort((x, y) => x - y),
              ),
            );
            for (const p of removed) gone.add(p);
          }
          expect(gone.has(N)).toBe(false);
          const v = await verifyShard(shard, { chunk: 7 });
          expect(v.ok).toBe(true);
          expect(v.checked).toBe(N - gone.size);
          expect(v.removed).toBe(gone.size);
          let runs = 0;
          for (let p = 1; p <= N; p++) if (gone.has(p) && !gone.has(p - 1)) runs++;
          const anchors = Number((await shard.reader.all<{ n: number }>('SELECT COUNT(*) AS n FROM chain_gaps'))[0]!.n);
          expect(anchors).toBe(runs);
        },
      ),
      { numRuns: 60 },
    );
  });
});
