import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isMillraceError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { Sequencer } from '../../src/log/sequencer.js';
import { verifyShard } from '../../src/log/verify.js';
import type { Node } from '../../src/serve.js';
import { createTestEnv, DIALECTS, waitFor } from '../support/env.js';
import { signalGroup, spawnReady, writeConfigFile } from '../support/proc.js';
import { busClient, busInput, sleep, startBusNode, Subscriber } from './support.js';

const ROLE_LEASE_MS = 2000;
const PUBLISH_DEADLINE_MS = 6000;
/** Failure detection only: how long past its deadline a publish may take before the test calls it hung. */
const SLACK_MS = 3000;

type Outcome = { id: string; ok: true } | { id: string; ok: false; code: string };

describe.runIf(DIALECTS.includes('postgres'))('a hung node (SIGSTOP) does not stall the bus (postgres)', () => {
  const spawned: ChildProcess[] = [];
  // Also after a timed-out test: never leave a frozen child behind.
  afterEach(() => {
    for (const c of spawned.splice(0)) {
      signalGroup(c, 'SIGCONT');
      signalGroup(c, 'SIGKILL');
    }
  });
  it('publishes through another node are answered within their deadline and acknowledged once the roles move; live delivery goes on; after SIGCONT nothing is numbered twice, the chains verify, and the resumed node stands by', async () => {
    const env = await createTestEnv('postgres', {
      shards: 2,
      extra: { cluster: { role_lease_ms: ROLE_LEASE_MS, publish_deadline_ms: PUBLISH_DEADLINE_MS } },
    });
    const dir = mkdtempSync(join(tmpdir(), 'millrace-hung-'));
    let child: ChildProcess | undefined;
    let b: Node | undefined;
    let sub: Subscriber | undefined;
    const client = { current: undefined as ReturnType<typeof busClient> | undefined };
    try {
      // Node A starts first and takes the sequencer role of both shards.
      child = (
        await spawnReady(
          'test/bus/bus-child.ts',
          [writeConfigFile(dir, { ...busInput(env), node_id: 'node-a' })],
          /ready /,
          { group: true },
        )
      ).child;
      spawned.push(child);
      const shards = env.config.storage.shards.map((s) => s.name);
      const holders = async (rt: Node['runtime']): Promise<Record<string, { holder: string; epoch: number }>> => {
        const out: Record<string, { holder: string; epoch: number }> = {};
        for (const s of rt.storage.shards) {
          const rows = await s.reader.all<{ holder: string; epoch: number }>(
            'SELECT holder, epoch FROM role_leases WHERE role = ?',
            [`millrace:sequencer:${s.name}`],
          );
          if (rows[0]) out[s.name] = { holder: rows[0].holder, epoch: Number(rows[0].epoch) };
        }
        return out;
      };
      let started;
      ({ node: b, addr: started } = await startBusNode(env));
      const node = b;
      await waitFor(
        async () => {
          const h = await holders(node.runtime);
          return shards.every((s) => h[s]?.holder === 'node-a');
        },
        30_000,
        'node A to hold both sequencer roles',
      );
      expect(node.runtime.sequencers.some((s) => s.leader)).toBe(false);

      client.current = busClient(started);
      const received: string[] = [];
      sub = new Subscriber(client.current, 'live', { topics: ['orders'], start: 'latest' }, (d, s) => {
        received.push(JSON.parse(d.event.data) as string);
        s.ack([d.deliveryId]);
      });
      await sub.opened;
      const bus = (node.faces.find((f) => f.name === 'bus') as unknown as { bus: import('../../src/bus/bus.js').Bus })
        .bus;
      const keys = Array.from({ length: 8 }, (_, i) => `k${i}`);
      // Events on both shards.
      expect(new Set(keys.map((k) => node.runtime.storage.shardFor(['orders', k]).name)).size).toBe(2);
      const publishOne = async (id: string, key: string): Promise<Outcome> => {
        const answer = bus.publish([{ id, topic: 'orders', key, type: 't', data: id }]).then(
          (): Outcome => ({ id, ok: true }),
          (err: unknown): Outcome => ({ id, ok: false, code: isMillraceError(err) ? err.code : String(err) }),
        );
        const hung = sleep(PUBLISH_DEADLINE_MS + SLACK_MS).then((): Outcome => ({
          id,
          ok: false,
          code: 'no answer within the deadline',
        }));
        return Promise.race([answer, hung]);
      };
      expect(await publishOne('before', 'k0')).toEqual({ id: 'before', ok: true });
      await waitFor(() => received.includes('before'), 10_000, 'live delivery before the freeze');

      signalGroup(child, 'SIGSTOP');
      const frozenAt = Date.now();
      const outcomes: Outcome[] = [];
      for (let i = 0; i < 20; i++) outcomes.push(await publishOne(`during-${i}`, keys[i % keys.length]!));
      // Every publish got an answer within its deadline: an acknowledgement, or a retryable refusal.
      for (const o of outcomes) if (!o.ok) expect(o.code).toBe('unavailable');
      // The roles moved to this node while A stays frozen.
      const h = await holders(node.runtime);
      for (const s of shards) expect(h[s]?.holder).toBe(node.runtime.config.node_id);
      expect(node.runtime.sequencers.every((s) => s.leader)).toBe(true);
      // Refused ids are retried with the same ids: acknowledged now.
      for (const o of outcomes) if (!o.ok) expect(await publishOne(o.id, keys[0]!)).toEqual({ id: o.id, ok: true });
      const ids = outcomes.map((o) => o.id);
      await waitFor(
        () => ids.every((id) => received.includes(id)),
        10_000,
        'live delivery of what was published during the freeze',
      );
      // All of it happened while A was still frozen.
      expect(child.exitCode).toBe(null);
      const frozenFor = Date.now() - frozenAt;

      signalGroup(child, 'SIGCONT');
      // The resumed node finds its role gone and waits for it again as a standby: its lock sessions wait on the lock.
      await waitFor(
        async () => {
          const rows = await node.runtime.storage.shards[0]!.reader.all<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'millrace:node-a:s0-lock' AND wait_event_type = 'Lock'",
          );
          return rows[0]!.n === 1;
        },
        15_000,
        'the resumed node to stand by for the sequencer role',
      );
      const epochs = await holders(node.runtime);
      for (let i = 0; i < 5; i++)
        expect(await publishOne(`after-${i}`, keys[i]!)).toEqual({ id: `after-${i}`, ok: true });
      await sleep(ROLE_LEASE_MS * 1.5);
      expect(await holders(node.runtime)).toEqual(epochs);
      await waitFor(
        () => [0, 1, 2, 3, 4].every((i) => received.includes(`after-${i}`)),
        10_000,
        'live delivery after the resume',
      );

      for (const s of node.runtime.storage.shards) {
        const [c] = await s.reader.all<{ n: number; d: number; top: number | null; unnumbered: number }>(
          'SELECT count(*)::int AS n, count(DISTINCT pos)::int AS d, max(pos) AS top, count(*) FILTER (WHERE pos IS NULL)::int AS unnumbered FROM events',
        );
        expect(c!.unnumbered).toBe(0);
        expect(c!.d).toBe(c!.n);
        expect(Number(c!.top ?? 0)).toBe(c!.n);
        const v = await verifyShard(s);
        expect(v.ok, v.reason).toBe(true);
      }
      // Each id stored once, whatever the retries.
      const stored: string[] = [];
      for (const s of node.runtime.storage.shards) {
        const rows = await s.reader.all<{ data: string }>("SELECT data FROM events WHERE stream LIKE 't/orders/%'");
        stored.push(...rows.map((r) => JSON.parse(r.data) as string));
      }
      expect(stored.sort()).toEqual(['before', ...ids, ...[0, 1, 2, 3, 4].map((i) => `after-${i}`)].sort());
      expect(frozenFor).toBeGreaterThan(0);
    } finally {
      if (child) {
        signalGroup(child, 'SIGCONT');
        signalGroup(child, 'SIGKILL');
      }
      sub?.cancel();
      client.current?.close();
      await b?.close();
      rmSync(dir, { recursive: true, force: true });
      await env.cleanup();
    }
  }, 120_000);
});

describe.runIf(DIALECTS.includes('postgres'))('a publish whose positions cannot be had (postgres)', () => {
  it('is answered with a retryable unavailable within its deadline; a retry with the same id, once numbered, is a duplicate stored once', async () => {
    const env = await createTestEnv('postgres', { extra: { cluster: { publish_deadline_ms: 500 } } });
    let node: Node | undefined;
    let seq: Sequencer | undefined;
    try {
      const started = await startBusNode(env);
      node = started.node;
      // No sequencer anywhere: nothing gets a position.
      await node.runtime.sequencers[0]!.stop();
      const attempt = started.bus.publish([{ id: 'p1', topic: 'orders', key: 'k', type: 't', data: 1 }]).then(
        () => 'acknowledged',
        (err: unknown) => (isMillraceError(err) ? `${err.code}/${err.retryable}/${err.httpStatus}` : String(err)),
      );
      // Failure detection only: far past the deadline.
      expect(await Promise.race([attempt, sleep(5000).then(() => 'no answer')])).toBe('unavailable/true/503');
      seq = new Sequencer(node.runtime.log, node.runtime.storage.shard('s0'), {
        batch: 100,
        pollMs: 50,
        logger: silentLogger,
      });
      seq.start();
      const [again] = await started.bus.publish([{ id: 'p1', topic: 'orders', key: 'k', type: 't', data: 1 }]);
      expect(again).toEqual({ shard: 's0', pos: 1, duplicate: true });
      const rows = await node.runtime.storage
        .shard('s0')
        .reader.all<{ n: number }>("SELECT count(*)::int AS n FROM events WHERE stream LIKE 't/orders/%'");
      expect(rows[0]!.n).toBe(1);
    } finally {
      await seq?.stop();
      await node?.close();
      await env.cleanup();
    }
  });
});
