import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { jsonRequest } from '../support/http.js';
import { spawnReady, writeConfigFile } from '../support/proc.js';
import { busClient, busInput, Subscriber, type BusClient } from './support.js';

/**
 * Subscribers see each key's events in publish order when the events carry
 * ids and the keys live on two shards: gRPC live across a SIGTERM and a
 * kill -9 restart of the node, and SSE catching up afterwards.
 */
describe.each(DIALECTS)('bus subscribers see per-key publish order with ids over two shards (%s)', (dialect) => {
  let env: TestEnv;
  let child: ChildProcess | undefined;
  let cfg: string;
  beforeAll(async () => {
    env = await createTestEnv(dialect, { shards: 2 });
    cfg = writeConfigFile(env.dataDir, busInput(env), 'bus.json');
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await env?.cleanup();
  });

  const start = async (): Promise<{ url: string; grpc: string }> => {
    const r = await spawnReady('test/bus/bus-child.ts', [cfg], /ready (\S+ grpc \d+)/);
    child = r.child;
    const [url, , port] = r.found.split(' ');
    return { url: url!, grpc: `127.0.0.1:${port}` };
  };
  const stop = async (signal: NodeJS.Signals): Promise<void> => {
    const c = child!;
    const exited = new Promise<void>((r) =>
      c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()),
    );
    c.kill(signal);
    await exited;
    child = undefined;
  };

  type Mark = { batch: number; attempt: number; idx: number };
  interface Seen {
    key: string;
    shard: string;
    pos: number;
    mark: Mark;
  }
  /** Per key, the positions first seen must rise, and so must the publish order of the events they carry. */
  const expectPerKeyOrder = (seen: readonly Seen[], expectedKeys: number): void => {
    const first = new Map<string, Seen>();
    for (const s of seen) if (!first.has(`${s.shard}:${s.pos}`)) first.set(`${s.shard}:${s.pos}`, s);
    const byKey = new Map<string, Seen[]>();
    for (const s of first.values()) byKey.set(s.key, [...(byKey.get(s.key) ?? []), s]);
    expect(byKey.size).toBe(expectedKeys);
    for (const [key, ss] of byKey) {
      expect([key, new Set(ss.map((s) => s.shard)).size]).toEqual([key, 1]);
      const positions = ss.map((s) => s.pos);
      expect([key, positions]).toEqual([key, [...positions].sort((a, b) => a - b)]);
      const marks = ss.map((s) => [s.mark.batch, s.mark.attempt, s.mark.idx]);
      expect([key, marks]).toEqual([key, [...marks].sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]!)]);
    }
  };

  it('gRPC live across SIGTERM and kill -9, and SSE afterwards, see every key in publish order', async () => {
    let node = await start();
    const keys = Array.from({ length: 16 }, (_, i) => `k${i}`);
    for (const name of ['live', 'late']) {
      const r = await jsonRequest(node.url, 'PUT', `/v1/bus/subscriptions/${name}`, {
        topics: ['orders'],
        start: 'earliest',
        max_in_flight: 1000,
      });
      expect(r.status).toBe(201);
    }
    const seen: Seen[] = [];
    let client: BusClient | undefined;
    let sub: Subscriber | undefined;
    const connect = (): void => {
      client = busClient(node.grpc);
      sub = new Subscriber(client, 'live', undefined, (d, s) => {
        const data = JSON.parse(d.event.data) as Mark;
        seen.push({ key: d.event.key, shard: d.shard, pos: Number(d.pos), mark: data });
        s.ack([d.deliveryId]);
      });
      // A subscriber whose node went away reconnects to the next one.
      sub.opened.catch(() => {});
    };
    const disconnect = (): void => {
      sub?.cancel();
      client?.close();
    };
    connect();

    // Batch 0: the 100 events of 16 keys, each with an id; then smaller batches, some events without ids.
    const batches = [
      Array.from({ length: 100 }, (_, i) => ({ key: keys[i % 16]!, id: `b0-${i}` as string | undefined })),
      ...Array.from({ length: 8 }, (_, b) =>
        Array.from({ length: 24 }, (_, i) => ({
          key: keys[(i * 7 + b) % 16]!,
          id: i % 5 === 4 ? undefined : `b${b + 1}-${i}`,
        })),
      ),
    ];
    const restarts: Record<number, NodeJS.Signals> = { 3: 'SIGTERM', 6: 'SIGKILL' };
    for (let batch = 0; batch < batches.length; batch++) {
      for (let attempt = 0; ; attempt++) {
        expect(attempt).toBeLessThan(20);
        const events = batches[batch]!.map((e, idx) => ({
          ...(e.id === undefined ? {} : { id: e.id }),
          key: e.key,
          type: 't',
          data: { batch, attempt, idx },
        }));
        const publishing = jsonRequest(node.url, 'POST', '/v1/bus/topics/orders/events', { events }).catch(() => null);
        const signal = attempt === 0 ? restarts[batch] : undefined;
        if (signal !== undefined) {
          // The node goes away while the batch is in flight; the publisher does not know what was stored.
          await stop(signal);
          disconnect();
          await publishing;
          node = await start();
          connect();
          continue;
        }
        const r = await publishing;
        if (r?.status === 200) break;
      }
    }
    // Every event stored reaches the live subscriber.
    const total = batches.reduce((n, b) => n + b.length, 0);
    await waitFor(() => new Set(seen.map((s) => `${s.shard}:${s.pos}`)).size >= total, 20_000, 'live deliveries');
    // An attempt cut off by a restart may have stored its id-less events before the retry stored them again;
    // count what the topic holds, and wait for the live subscriber to have seen exactly that.
    let stored = 0;
    for (let cursor: string | null = null; ;) {
      const q: string = `/v1/bus/topics/orders/events?limit=500${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`;
      const page = await jsonRequest(node.url, 'GET', q);
      expect(page.status).toBe(200);
      const body = page.body as { items: unknown[]; next_cursor: string | null };
      stored += body.items.length;
      if (body.next_cursor === null) break;
      cursor = body.next_cursor;
    }
    expect(stored).toBeGreaterThanOrEqual(total);
    await waitFor(
      () => new Set(seen.map((s) => `${s.shard}:${s.pos}`)).size === stored,
      20_000,
      'every stored event live',
    );
    expectPerKeyOrder(seen, 16);
    disconnect();

    // SSE from the earliest position.
    const ctl = new AbortController();
    const res = await fetch(`${node.url}/v1/bus/subscriptions/late/stream`, { signal: ctl.signal });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const sse: Seen[] = [];
    const want = stored;
    while (sse.length < want) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = text.indexOf('\n\n')) >= 0) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        if (!block.includes('event: delivery')) continue;
        const d = JSON.parse(block.slice(block.indexOf('data: ') + 6)) as {
          shard: string;
          pos: number;
          event: { key: string; data: Mark };
        };
        sse.push({ key: d.event.key, shard: d.shard, pos: Number(d.pos), mark: d.event.data });
      }
    }
    ctl.abort();
    expect(sse.length).toBe(want);
    expectPerKeyOrder(sse, 16);
    await stop('SIGTERM');
  }, 90_000);
});
