import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isMillraceError } from '../../src/core/errors.js';
import type { Node } from '../../src/serve.js';
import { createTestEnv, DIALECTS, waitFor } from '../support/env.js';
import { signalGroup, spawnReady, writeConfigFile } from '../support/proc.js';
import { busClient, busInput, sleep, startBusNode, Subscriber, type WireDelivery } from './support.js';

const ROLE_LEASE_MS = 2000;
/** Failure detection only: how long past two leases a reconnect may take before the test calls the subscription stuck. */
const SLACK_MS = 3000;
const KEYS = ['k0', 'k1', 'k2', 'k3'];

interface Seen {
  id: string;
  key: string;
  pos: number;
}
const seen = (d: WireDelivery): Seen => ({
  id: JSON.parse(d.event.data) as string,
  key: d.event.key,
  pos: Number(d.pos),
});

describe.runIf(DIALECTS.includes('postgres'))(
  'a subscription whose live connection is on a hung node (SIGSTOP, postgres)',
  () => {
    const spawned: ChildProcess[] = [];
    afterEach(() => {
      for (const c of spawned.splice(0)) {
        signalGroup(c, 'SIGCONT');
        signalGroup(c, 'SIGKILL');
      }
    });

    it('can be reopened through another node within about a role lease; every event is delivered, each key in order; the resumed node lets go of it', async () => {
      // bus.lease_ms is left unset: the subscription's hold follows cluster.role_lease_ms.
      const env = await createTestEnv('postgres', {
        extra: { cluster: { role_lease_ms: ROLE_LEASE_MS, publish_deadline_ms: 6000 } },
      });
      const dir = mkdtempSync(join(tmpdir(), 'millrace-subhung-'));
      let b: Node | undefined;
      const subs: Subscriber[] = [];
      const clients: Array<ReturnType<typeof busClient>> = [];
      try {
        const { child, found } = await spawnReady(
          'test/bus/bus-child.ts',
          [writeConfigFile(dir, { ...busInput(env, { lease_ms: undefined }), node_id: 'node-a' })],
          /grpc (\d+)/,
          { group: true },
        );
        spawned.push(child);
        const started = await startBusNode(env, { lease_ms: undefined });
        b = started.node;
        const bus = started.bus;
        const clientA = busClient(`127.0.0.1:${found}`);
        const clientB = busClient(started.addr);
        clients.push(clientA, clientB);

        const onA: Seen[] = [];
        const subA = new Subscriber(clientA, 'billing', { topics: ['orders'], start: 'earliest' }, (d, s) => {
          onA.push(seen(d));
          s.ack([d.deliveryId]);
        });
        subs.push(subA);
        await subA.opened;

        /** Publishes through node B, retrying what is refused as retryable (the sequencer may be moving). */
        const publish = async (id: string, key: string): Promise<void> => {
          for (;;) {
            try {
              await bus.publish([{ id, topic: 'orders', key, type: 't', data: id }]);
              return;
            } catch (err) {
              if (!isMillraceError(err) || !err.retryable) throw err;
              await sleep(100);
            }
          }
        };
        const first = Array.from({ length: 20 }, (_, i) => `first-${i}`);
        for (const [i, id] of first.entries()) await publish(id, KEYS[i % KEYS.length]!);
        await waitFor(() => first.every((id) => onA.some((s) => s.id === id)), 15_000, 'delivery through node A');

        signalGroup(child, 'SIGSTOP');
        const frozenAt = Date.now();
        // The client gives up on the frozen node and reconnects through B, while publishes go on through B.
        subA.cancel();
        const during = Array.from({ length: 20 }, (_, i) => `during-${i}`);
        const publishing = (async () => {
          for (const [i, id] of during.entries()) await publish(id, KEYS[i % KEYS.length]!);
        })();

        const onB: Seen[] = [];
        let subB: Subscriber | undefined;
        let busy = 0;
        while (subB === undefined) {
          const attempt = new Subscriber(clientB, 'billing', undefined, (d, s) => {
            onB.push(seen(d));
            s.ack([d.deliveryId]);
          });
          try {
            await attempt.opened;
            subB = attempt;
            subs.push(attempt);
          } catch {
            const st = await attempt.status;
            // The only refusal expected while A's hold runs out.
            expect(st.errorCode).toBe('subscription_busy');
            busy++;
            expect(Date.now() - frozenAt).toBeLessThan(2 * ROLE_LEASE_MS + SLACK_MS);
            await sleep(200);
          }
        }
        const reopenedAfter = Date.now() - frozenAt;
        expect(reopenedAfter).toBeLessThan(2 * ROLE_LEASE_MS + SLACK_MS);
        // A still held it when the client first came: the refusals show the hold was real, and bounded.
        expect(busy).toBeGreaterThan(0);
        await publishing;
        await waitFor(
          () => during.every((id) => onB.some((s) => s.id === id)),
          15_000,
          'delivery through node B of what was published during the freeze',
        );
        expect(child.exitCode).toBe(null);

        // Nothing was lost: every event reached the subscriber through A or B (what A delivered but had
        // not stored the ack of may come again through B: at least once).
        const all = new Set([...onA, ...onB].map((s) => s.id));
        for (const id of [...first, ...during]) expect(all.has(id)).toBe(true);
        // Through B each key's events come in position order.
        for (const k of KEYS) {
          const pos = onB.filter((s) => s.key === k).map((s) => s.pos);
          expect(pos).toEqual([...pos].sort((x, y) => x - y));
        }

        signalGroup(child, 'SIGCONT');
        await sleep(ROLE_LEASE_MS * 1.5);
        const after = Array.from({ length: 8 }, (_, i) => `after-${i}`);
        const countB = onB.length;
        for (const [i, id] of after.entries()) await publish(id, KEYS[i % KEYS.length]!);
        await waitFor(
          () => after.every((id) => onB.some((s) => s.id === id)),
          15_000,
          'delivery through B after A resumed',
        );
        await sleep(500);
        // Each once, and B's connection is still the subscription's only hold.
        for (const id of after) expect(onB.filter((s) => s.id === id)).toHaveLength(1);
        expect(onB.length).toBeGreaterThanOrEqual(countB + after.length);
        const holds = await b.runtime.storage.shards[0]!.reader.all<{ holder: string }>(
          "SELECT holder FROM leases WHERE name LIKE 'bus/sub/%'",
        );
        expect(holds.map((h) => h.holder.split('/')[0])).toEqual([b.runtime.config.node_id]);
      } finally {
        for (const s of subs) s.cancel();
        for (const c of clients) c.close();
        await b?.close();
        rmSync(dir, { recursive: true, force: true });
        await env.cleanup();
      }
    }, 120_000);
  },
);
