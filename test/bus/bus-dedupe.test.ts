import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { jsonRequest } from '../support/http.js';
import { spawnReady, writeConfigFile } from '../support/proc.js';
import { busInput, startBusNode } from './support.js';
import type { Node } from '../../src/serve.js';
import type { Bus } from '../../src/bus/bus.js';
import { CLAIM_GRACE_MS } from '../../src/bus/publisher.js';

describe.each(DIALECTS)('bus dedupe per id across shards (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  let bus: Bus;
  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 3 });
    ({ node, bus } = await startBusNode(env));
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });
  const stored = async (id: string): Promise<number> => {
    let n = 0;
    for (const s of node.runtime.storage.shards) {
      const rows = await s.reader.all<{ meta: string | null }>(
        "SELECT meta FROM events WHERE stream LIKE 't/orders/%'",
      );
      n += rows.filter((r) => r.meta !== null && (JSON.parse(r.meta) as { id?: string }).id === id).length;
    }
    return n;
  };
  const keys = Array.from({ length: 24 }, (_, i) => `k${i}`);
  const shardOfKey = (k: string) => node.runtime.storage.shardFor(['orders', k]).name;

  it('the keys used route to every shard', () => {
    expect(new Set(keys.map(shardOfKey)).size).toBe(3);
  });

  it('a repeated id is a duplicate whatever shard its key routes to', async () => {
    const [first] = await bus.publish([{ id: 'a1', topic: 'orders', key: 'k0', type: 't' }]);
    expect(first!.duplicate).toBe(false);
    for (const k of keys) {
      const [p] = await bus.publish([{ id: 'a1', topic: 'orders', key: k, type: 't' }]);
      expect([k, p]).toEqual([k, { ...first, duplicate: true }]);
    }
    expect(await stored('a1')).toBe(1);
  });

  it('repeats inside one batch, on different shards, are stored once', async () => {
    const ps = await bus.publish(keys.map((k) => ({ id: 'b1', topic: 'orders', key: k, type: 't' })));
    expect(ps.filter((p) => !p.duplicate)).toHaveLength(1);
    expect(new Set(ps.map((p) => `${p.shard}:${p.pos}`)).size).toBe(1);
    expect(await stored('b1')).toBe(1);
  });

  it('concurrent publishers of one id with different keys store it once and agree on its position', async () => {
    const ps = (
      await Promise.all(keys.map((k) => bus.publish([{ id: 'c1', topic: 'orders', key: k, type: 't' }])))
    ).map((r) => r[0]!);
    expect(ps.filter((p) => !p.duplicate)).toHaveLength(1);
    expect(new Set(ps.map((p) => `${p.shard}:${p.pos}`)).size).toBe(1);
    expect(await stored('c1')).toBe(1);
  });

  it('a claim left by a publisher that died before its event committed is taken over: the event is stored once', async () => {
    // What a kill -9 between the claim (on the id's home shard) and the event's commit leaves behind.
    const ref = 'orders/d1';
    const home = node.runtime.storage.shardFor(['dedupe', ref]);
    const deadTarget = node.runtime.storage.shards.find((s) => s.name !== home.name)!;
    await home.write((tx) =>
      tx.run('INSERT INTO bus_dedupe (ref, stream, seq, created_at, token, target) VALUES (?, ?, -1, ?, ?, ?)', [
        ref,
        't/orders/gone',
        Date.now(),
        'dead-attempt',
        deadTarget.name,
      ]),
    );
    const k = keys.find((x) => shardOfKey(x) !== deadTarget.name)!;
    const [p] = await bus.publish([{ id: 'd1', topic: 'orders', key: k, type: 't' }]);
    expect(p!.duplicate).toBe(false);
    // the dead attempt is fenced out on its target: had it been slow rather than dead, its commit would now fail
    const fence = await deadTarget.reader.all<{ seq: number; token: string }>(
      'SELECT seq, token FROM bus_dedupe WHERE ref = ?',
      [ref],
    );
    expect(fence.map((r) => [Number(r.seq), r.token])).toEqual([[-2, 'dead-attempt']]);
    for (const other of keys) {
      const [q] = await bus.publish([{ id: 'd1', topic: 'orders', key: other, type: 't' }]);
      expect([other, q]).toEqual([other, { ...p, duplicate: true }]);
    }
    expect(await stored('d1')).toBe(1);
  });

  it('a fence of a later attempt does not lift the fence of an earlier one still in flight: the id is stored once', async () => {
    // Four publishers of one id, each held between its claim and its write, take the claim over in turn;
    // the third takeover fences the second attempt aimed at the first one's shard.
    const ref = 'orders/g1';
    const home = node.runtime.storage.shardFor(['dedupe', ref]);
    const [t1, t2] = node.runtime.storage.shards.filter((s) => s.name !== home.name);
    const keyOn = (s: { name: string }) => keys.find((k) => shardOfKey(k) === s.name)!;
    const gates = new Map<string, { open: () => void; opened: Promise<void> }>();
    for (const g of ['A', 'B', 'C', 'D']) {
      let open!: () => void;
      const opened = new Promise<void>((r) => (open = r));
      gates.set(g, { open, opened });
    }
    type Held = { event: { data: unknown } };
    const publisher = bus.publisher as unknown as {
      writeShard: (s: unknown, list: Held[], ...rest: unknown[]) => Promise<unknown>;
    };
    const write = publisher.writeShard.bind(publisher);
    publisher.writeShard = async (s, list, ...rest) => {
      const g = list.map((p) => (p.event.data as { gate?: string } | null)?.gate).find((x) => x !== undefined);
      if (g !== undefined) await gates.get(g)!.opened;
      return write(s, list, ...rest);
    };
    const claimOnHome = async () =>
      (
        await home.reader.all<{ target: string; token: string }>('SELECT target, token FROM bus_dedupe WHERE ref = ?', [
          ref,
        ])
      )[0];
    // Each attempt, once it holds the claim, looks dead to the next (its claim older than the grace): as a paused process would.
    const age = () =>
      home.write((tx) =>
        tx.run('UPDATE bus_dedupe SET created_at = created_at - ? WHERE ref = ?', [CLAIM_GRACE_MS + 1000, ref]),
      );
    try {
      const publishHeld = (gate: string, key: string) =>
        bus.publish([{ id: 'g1', topic: 'orders', key, type: 't', data: { gate } }]);
      // A's id sits between two events of the same key without ids: its claim is retried, and the three keep their order.
      const a = bus
        .publish([
          { topic: 'orders', key: keyOn(t1!), type: 'before', data: { gate: 'A' } },
          { id: 'g1', topic: 'orders', key: keyOn(t1!), type: 't', data: { gate: 'A' } },
          { topic: 'orders', key: keyOn(t1!), type: 'after', data: { gate: 'A' } },
        ])
        .then((r) => {
          expect(r.map((p) => p.shard)).toEqual([t1!.name, t1!.name, t1!.name]);
          expect(r[0]!.pos).toBeLessThan(r[1]!.pos);
          expect(r[1]!.pos).toBeLessThan(r[2]!.pos);
          return [r[1]!];
        });
      const ca = await waitFor(
        async () => (await claimOnHome())?.target === t1!.name && claimOnHome(),
        5000,
        'claim of A',
      );
      await age();
      const b = publishHeld('B', keyOn(t2!));
      await waitFor(async () => (await claimOnHome())?.target === t2!.name, 5000, 'claim of B');
      await age();
      const c = publishHeld('C', keyOn(t1!));
      await waitFor(
        async () => {
          const r = await claimOnHome();
          return r?.target === t1!.name && r.token !== ca!.token;
        },
        5000,
        'claim of C',
      );
      await age();
      const d = publishHeld('D', keyOn(home));
      await waitFor(async () => (await claimOnHome())?.target === home.name, 5000, 'claim of D');
      // A, fenced on t1 by B, and then t1's row of the id fenced again (C's attempt) by D.
      gates.get('A')!.open();
      const pa = (await a)[0]!;
      for (const g of ['B', 'C', 'D']) gates.get(g)!.open();
      const all = [pa, ...(await Promise.all([b, c, d])).map((r) => r[0]!)];
      expect(all.filter((p) => !p.duplicate)).toHaveLength(1);
      expect(new Set(all.map((p) => `${p.shard}:${p.pos}`)).size).toBe(1);
      expect(await stored('g1')).toBe(1);
    } finally {
      for (const g of gates.values()) g.open();
      publisher.writeShard = write;
    }
  });

  it('concurrent publishers of the same ids in different orders all get answers, and store each id once', async () => {
    // Without an order between publishes, each would take the others' claims over, and be taken over in turn.
    const ids = Array.from({ length: 30 }, (_, i) => `h${i}`);
    const rounds = 4;
    const errors: string[] = [];
    const answers = await Promise.all(
      Array.from({ length: 4 }, async (_, pub) => {
        const got: Array<{ id: string; shard: string; pos: number; duplicate: boolean }> = [];
        for (let r = 0; r < rounds; r++) {
          // Each publisher its own order of the ids, and its own keys for them.
          const order = ids.map((id, i) => ({ id, o: (i * (pub * 7 + 3) + r * 11) % 31 })).sort((a, b) => a.o - b.o);
          const batch = order.map(({ id }, i) => ({
            id: `${id}-${r}`,
            topic: 'orders',
            key: keys[(i + pub * 5) % keys.length]!,
            type: 't',
          }));
          try {
            const ps = await bus.publish(batch);
            ps.forEach((p, i) => got.push({ id: batch[i]!.id, ...p }));
          } catch (err) {
            errors.push((err as Error).message);
          }
        }
        return got;
      }),
    );
    expect(errors).toEqual([]);
    const byId = new Map<string, Set<string>>();
    for (const a of answers.flat()) byId.set(a.id, (byId.get(a.id) ?? new Set()).add(`${a.shard}:${a.pos}`));
    // Every publisher was answered the same position for an id.
    for (const [id, at] of byId) expect([id, at.size]).toEqual([id, 1]);
    for (const id of byId.keys()) expect([id, await stored(id)]).toEqual([id, 1]);
    expect(answers.flat().filter((a) => !a.duplicate)).toHaveLength(ids.length * rounds);
  });

  it('a claim aimed at the home shard itself, left behind, is taken over too', async () => {
    const ref = 'orders/e1';
    const home = node.runtime.storage.shardFor(['dedupe', ref]);
    await home.write((tx) =>
      tx.run('INSERT INTO bus_dedupe (ref, stream, seq, created_at, token, target) VALUES (?, ?, -1, ?, ?, ?)', [
        ref,
        't/orders/gone',
        Date.now(),
        'dead',
        home.name,
      ]),
    );
    const [p] = await bus.publish([
      { id: 'e1', topic: 'orders', key: keys.find((x) => shardOfKey(x) === home.name)!, type: 't' },
    ]);
    expect(p!.duplicate).toBe(false);
    const [q] = await bus.publish([
      { id: 'e1', topic: 'orders', key: keys.find((x) => shardOfKey(x) !== home.name)!, type: 't' },
    ]);
    expect(q).toEqual({ ...p, duplicate: true });
    expect(await stored('e1')).toBe(1);
  });
});

describe.each(DIALECTS)('bus dedupe across shards after kill -9 (%s)', (dialect) => {
  let env: TestEnv;
  let child: ChildProcess | undefined;
  let node: Node | undefined;
  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 3 });
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await node?.close();
    await env?.cleanup();
  });

  it('ids published while the node was killed are stored once each when published again with keys of other shards; acknowledged ones answer as duplicates at their position', async () => {
    const cfg = writeConfigFile(env.dataDir, busInput(env), 'bus.json');
    let url: string;
    ({ child, found: url } = await spawnReady('test/bus/bus-child.ts', [cfg], /ready (\S+)/));
    const keys = Array.from({ length: 24 }, (_, i) => `k${i}`);
    const acked = new Map<string, { shard: string; pos: number }>();
    const sent = new Set<string>();
    let next = 0;
    let killed = false;
    const worker = async (): Promise<void> => {
      while (!killed) {
        const i = next++;
        const id = `x${i}`;
        sent.add(id);
        try {
          const r = await jsonRequest(url, 'POST', '/v1/bus/topics/orders/events', {
            events: [{ id, key: keys[i % keys.length], type: 't', data: { i } }],
          });
          if (r.status === 200) {
            const p = (r.body!.positions as Array<{ shard: string; pos: number }>)[0]!;
            acked.set(id, { shard: p.shard, pos: Number(p.pos) });
          }
        } catch {
          // The node went away mid-request: not acknowledged.
        }
      }
    };
    const workers = Array.from({ length: 8 }, worker);
    while (acked.size < 200) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGKILL');
    killed = true;
    await Promise.all(workers);
    child = undefined;

    ({ node } = await startBusNode(env));
    const face = node.faces.find((f) => f.name === 'bus') as unknown as { bus: Bus };
    for (const id of sent) {
      const i = Number(id.slice(1));
      // Another key, so (mostly) another shard than the first attempt's.
      const [p] = await face.bus.publish([
        { id, topic: 'orders', key: keys[(i + 7) % keys.length]!, type: 't', data: { i } },
      ]);
      const first = acked.get(id);
      if (first) expect([id, p]).toEqual([id, { shard: first.shard, pos: first.pos, duplicate: true }]);
    }
    const counts = new Map<string, number>();
    for (const s of node.runtime.storage.shards) {
      const rows = await s.reader.all<{ meta: string | null }>(
        "SELECT meta FROM events WHERE stream LIKE 't/orders/%'",
      );
      for (const r of rows) {
        const id = r.meta === null ? undefined : (JSON.parse(r.meta) as { id?: string }).id;
        if (id !== undefined) counts.set(id, (counts.get(id) ?? 0) + 1);
      }
    }
    expect(sent.size).toBeGreaterThan(200);
    for (const id of sent) expect([id, counts.get(id)]).toEqual([id, 1]);
    expect(counts.size).toBe(sent.size);
  });
});
