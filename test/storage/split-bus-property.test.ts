import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Bus } from '../../src/bus/bus.js';
import { busFace } from '../../src/bus/face.js';
import { buildConfig } from '../../src/core/config.js';
import { startNode } from '../../src/serve.js';
import { createTestEnv, waitFor } from '../support/env.js';
import { withSpare } from '../support/split.js';
import { checkOnceInOrder, movesAt, PacedSubscriber, publishRetried, TOPIC } from './split-bus-support.js';

const KEYS = Array.from({ length: 12 }, (_, i) => `k${i}`);

const batches = fc.array(fc.array(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 5 }), {
  minLength: 1,
  maxLength: 6,
});

/**
 * Bus delivery across a split: each stored event is delivered once, and per
 * key in publish order, to a subscription connected throughout (acking at
 * its own pace, restarting) and to one created after the split from the
 * earliest position. Publishes go before, during and after the split.
 */
describe('bus delivery across a shard split (property, sqlite)', () => {
  it('delivers every stored event once, per key in publish order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          at: fc.constantFrom('4', '8', 'c'),
          before: batches,
          during: batches,
          after: batches,
          delays: fc.array(fc.constantFrom(0, 0, 0, 1, 3), { maxLength: 8 }),
          restarts: fc.array(fc.integer({ min: 1, max: 60 }), { maxLength: 3 }),
          window: fc.integer({ min: 1, max: 16 }),
        }),
        async (p) => {
          const env = await createTestEnv('sqlite', { shards: 2 });
          const node = await startNode(
            buildConfig({ ...withSpare(env), bus: { topics: [TOPIC], lease_ms: 2000 } } as never),
            { faces: [busFace] },
          );
          const bus = (node.faces.find((f) => f.name === 'bus') as unknown as { bus: Bus }).bus;
          const published = new Map<string, string[]>();
          let n = 0;
          const publishAll = async (list: string[][]): Promise<void> => {
            for (const keys of list) {
              const events = keys.map((key) => ({ id: `${key}#${n++}`, topic: TOPIC, key, type: 't', data: n }));
              await publishRetried(bus, events);
              for (const e of events) published.set(e.key, [...(published.get(e.key) ?? []), e.id]);
            }
          };
          const config = { topics: [TOPIC], ack_wait_ms: 600_000, max_in_flight: p.window };
          const sub = new PacedSubscriber(bus, 'live', config, p.delays);
          let late: PacedSubscriber | undefined;
          try {
            await sub.open();
            await publishAll(p.before);
            // Restarts of the live connection at random points of its deliveries.
            const restarts = [...p.restarts].sort((a, b) => a - b);
            let restarting = Promise.resolve();
            const restarter = setInterval(() => {
              if (restarts.length > 0 && sub.acked.length >= restarts[0]!) {
                restarts.shift();
                restarting = restarting.then(() => sub.restart());
              }
            }, 5);
            try {
              const job = await node.runtime.splitter.start('s0', p.at, 's1');
              await publishAll(p.during);
              await node.runtime.splitter.wait(job.id);
              expect((await node.runtime.splitter.jobs())[0]!.phase).toBe('done');
              await publishAll(p.after);
            } finally {
              clearInterval(restarter);
              await restarting;
            }
            late = new PacedSubscriber(bus, 'late', { ...config, start: 'earliest' }, []);
            await late.open();
            const total = [...published.values()].flat().length;
            await waitFor(() => sub.acked.length >= total && late!.acked.length >= total, 30_000, 'all acked');
            checkOnceInOrder(sub.acked, published);
            checkOnceInOrder(late.acked, published);
            // Stored once: each key's stream on the shard that owns it now holds each id once.
            for (const [key, ids] of published) {
              const shard = node.runtime.storage.shard(movesAt(p.at, key) ? 's1' : 's0');
              const rows = await shard.reader.all<{ meta: string }>(
                'SELECT meta FROM events WHERE stream = ? ORDER BY seq',
                [`t/${TOPIC}/${key}`],
              );
              expect(rows.map((r) => (JSON.parse(r.meta) as { id: string }).id)).toEqual(ids);
            }
          } finally {
            await sub.close();
            await late?.close();
            await node.close();
            await env.cleanup();
          }
        },
      ),
      { numRuns: 6, endOnFailure: true },
    );
  }, 240_000);
});
