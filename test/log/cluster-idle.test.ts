import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import type { PostgresDriver } from '../../src/storage/postgres/postgres-driver.js';
import { createTestEnv, DIALECTS, pgUrlFor, waitFor, type TestEnv } from '../support/env.js';

interface Backend {
  pid: number;
  backend_start: string;
  application_name: string;
}

/**
 * A cluster node that only stands by (sequencer standby, every face started
 * with nothing configured) must cost a fixed set of PostgreSQL sessions: no
 * new backend per append made through another node.
 */
describe.runIf(DIALECTS.includes('postgres'))('an idle second node (postgres)', () => {
  let env: TestEnv;
  let a: Node;
  let b: Node;
  let admin: pg.Client;

  beforeAll(async () => {
    env = await createTestEnv('postgres', { extra: { storage: { pool_size: 4 } } as never });
    a = await startNode(env.config);
    await waitFor(() => a.runtime.sequencers[0]?.leader, 10_000, 'node A to lead');
    b = await startNode(buildConfig({ ...env.input, node_id: `${env.input.node_id}-b` } as ConfigInput));
    admin = new pg.Client({ connectionString: pgUrlFor(env.pgDatabases[0]!) });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
    await b?.close();
    await a?.close();
    await env?.cleanup();
  });

  const backends = async (): Promise<Backend[]> =>
    (
      await admin.query<Backend>(
        `SELECT pid, backend_start::text AS backend_start, application_name FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()`,
      )
    ).rows;

  /** Appends one event through node A and waits until it is numbered (so every node was notified). */
  const appendThroughA = async (i: number): Promise<void> => {
    const r = await a.runtime.log.append(`idle/${i % 7}`, [{ type: 't', data: { i } }]);
    await a.runtime.log.positions(r);
  };

  it('opens no new PostgreSQL session per append while it stands by', async () => {
    expect(b.runtime.sequencers[0]!.leader).toBe(false);
    // Warm up: every pool at its full size, and the notification path exercised once.
    const fill = (n: Node) =>
      Promise.all(Array.from({ length: 4 }, () => n.runtime.storage.shard('s0').reader.all('SELECT pg_sleep(0.05)')));
    await Promise.all([fill(a), fill(b)]);
    for (let i = 0; i < 10; i++) await appendThroughA(i);

    const before = await backends();
    const seen = new Map(before.map((r) => [`${r.pid}/${r.backend_start}`, r]));
    const known = new Set(seen.keys());
    // Sample while appending: a session opened and closed between two samples is caught by the next ones' successors.
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const r of await backends()) seen.set(`${r.pid}/${r.backend_start}`, r);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const appends = 60;
    for (let i = 0; i < appends; i++) {
      await appendThroughA(100 + i);
      // Give node B's notification handling time to react before the next one.
      await new Promise((r) => setTimeout(r, 15));
    }
    sampling = false;
    await sampler;
    for (const r of await backends()) seen.set(`${r.pid}/${r.backend_start}`, r);

    const opened = [...seen.entries()].filter(([k]) => !known.has(k)).map(([, r]) => r.application_name);
    expect(opened).toEqual([]);
    // Node B still stands by, and took part: its standby session is among the fixed set.
    expect(b.runtime.sequencers[0]!.leader).toBe(false);
    expect(a.runtime.sequencers[0]!.leader).toBe(true);
    expect(before.filter((r) => r.application_name.endsWith(':s0-lock')).length).toBe(2);
  });

  it('each node lists both nodes, itself first, with the sessions of each', async () => {
    for (const [self, other] of [
      [a, b],
      [b, a],
    ] as const) {
      const r = (await (await fetch(`${self.url}/v1/nodes`)).json()) as {
        items: Array<{ node_id: string; self: boolean; sessions: Record<string, { listen: number; lock: number }> }>;
      };
      expect(r.items.map((n) => [n.node_id, n.self])).toEqual([
        [self.runtime.config.node_id, true],
        [other.runtime.config.node_id, false],
      ]);
      // The leader's lock session and the standby's waiting one; one LISTEN session each.
      for (const n of r.items) expect(n.sessions.s0).toMatchObject({ listen: 1, lock: 1 });
    }
  });

  it('a standby does not listen for append notices (the server sends it none); the leader does', async () => {
    const channels = (n: Node) => (n.runtime.storage.shard('s0').driver as PostgresDriver).listeningChannels();
    expect(await channels(a)).toContain('millrace_append');
    expect(await channels(b)).not.toContain('millrace_append');
    // Positions still reach the standby's node: its readers wake on them.
    expect(await channels(b)).toContain('millrace_pos');
  });
});
