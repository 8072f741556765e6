import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMillraceError } from '../../src/core/errors.js';
import {
  BusClient,
  BusGrpcClient,
  ConflictError,
  defineProcessor,
  InvalidRequestError,
  LedgerClient,
  MachinesClient,
  MillraceError,
  NotFoundError,
  PipeClient,
  PipeGrpcClient,
  UnavailableError,
  type BatchRequest,
} from '../../src/sdk/index.js';
import { listen, startSdkNode, type SdkNode } from './support.js';

/** The error a promise rejects with (fails the test if it resolves). */
async function refusal(p: Promise<unknown>): Promise<MillraceError> {
  const r = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(r instanceof MillraceError)) throw new Error(`expected a MillraceError, got ${String(r)}`);
  return r;
}

describe('SDK clients against a node', () => {
  let n: SdkNode;
  beforeAll(async () => {
    n = await startSdkNode({ namespaces: ['m'], kinds: ['k'] });
    n.router.routes.set(
      '/machines/m',
      defineProcessor<{ init: { response: string }; call: { response: string } }>({
        init: () => ({ response: 'started' }),
        call: () => ({ response: 'called' }),
      }).handler,
    );
  });
  afterAll(async () => n?.close());

  it('machines: start, call, get, remove; errors typed with code and status', async () => {
    const m = new MachinesClient(`${n.url}/`);
    expect((await m.start<string>('m', 'a')).response).toBe('started');
    expect((await m.call<string>('m', { id: 'a' })).response).toBe('called');
    expect((await m.get('m', { id: 'a' })).status).toBe('working');
    const exists = await refusal(m.start('m', 'a'));
    expect(exists).toBeInstanceOf(ConflictError);
    expect([exists.code, exists.httpStatus, exists.grpcStatus]).toEqual(['machine_already_exists', 409, 6]);
    await m.remove('m', { id: 'a' });
    const ns = await refusal(m.call('nope', { id: 'a' }));
    expect(ns).toBeInstanceOf(NotFoundError);
    expect([ns.code, ns.httpStatus]).toEqual(['namespace_not_found', 404]);
    expect(isMillraceError(ns, 'namespace_not_found')).toBe(true); // also the server's MillraceError
    const sink = await refusal(m.sinkEvents('nope'));
    expect(sink.code).toBe('sink_not_found');
  });

  it('ledger: batch, balances, states, locks; errors typed', async () => {
    const l = new LedgerClient(n.url);
    const account = { type: 'cash', attrs: { client_id: 'c1', currency: 'EUR' } };
    const first: BatchRequest = {
      idempotencyKey: 'b1',
      dtDefault: '2026-01-05T10:00:00Z',
      events: [{ account, side: 'debit', amount: '12.34' }],
      states: [{ type: 'contract', attrs: { contract_id: 'k1' }, state: { paid: true }, expectedVersion: 0 }],
    };
    const b = await l.batch(first);
    expect(b).toEqual({
      batchId: expect.any(String),
      events: 1,
      states: [{ type: 'contract', attrs: { contract_id: 'k1' }, version: 1 }],
    });
    // The idempotency key went out: the same batch again answers the first one, another with that key is refused.
    expect((await l.batch(first)).batchId).toBe(b.batchId);
    expect((await refusal(l.batch({ ...first, events: [] }))).code).toBe('idempotency_key_reused');
    // A stale expectedVersion went out too: refused.
    expect(
      (
        await refusal(
          l.batch({ states: [{ type: 'contract', attrs: { contract_id: 'k1' }, state: {}, expectedVersion: 0 }] }),
        )
      ).code,
    ).toMatch(/version/);
    const bal = await l.balances({
      dt: '2026-02-01T00:00:00Z',
      accounts: [{ type: 'cash', key: { client_id: 'c1', currency: 'EUR' } }],
    });
    expect(bal.balances[0]!.groups[0]).toMatchObject({ debit: '12.34', credit: '0.00' });
    expect(await l.getState<{ paid: boolean }>({ type: 'contract', attrs: { contract_id: 'k1' } })).toMatchObject({
      state: { paid: true },
      version: 1,
    });
    const lock = await l.acquireLock({
      type: 'client',
      attrs: { client_id: 'c1' },
      uid: 'w1',
      mode: 'exclusive',
      timeoutS: 30,
    });
    expect(lock).toEqual({
      type: 'client',
      attrs: { client_id: 'c1' },
      uid: 'w1',
      mode: 'exclusive',
      expiresAt: expect.any(String),
    });
    expect(Date.parse(lock.expiresAt) - Date.now()).toBeGreaterThan(20_000);
    expect((await l.getLock({ type: 'client', attrs: { client_id: 'c1' } })).holders).toEqual([
      { uid: 'w1', mode: 'exclusive', expiresAt: expect.any(String) },
    ]);
    const held = await refusal(
      l.acquireLock({ type: 'client', attrs: { client_id: 'c1' }, uid: 'w2', mode: 'exclusive', timeoutS: 30 }),
    );
    expect(held).toBeInstanceOf(ConflictError);
    expect(held.code).toBe('lock_held');
    const amount = await refusal(
      l.batch({ events: [{ account, side: 'debit', amount: '-1', dt: '2026-01-05T10:00:00Z' }] }),
    );
    expect(amount).toBeInstanceOf(InvalidRequestError);
    expect([amount.code, amount.httpStatus]).toEqual(['invalid_amount', 400]);
    const cashC1 = { type: 'cash', key: { client_id: 'c1', currency: 'EUR' } };
    const turn = await l.turnovers({
      dtFrom: '2026-01-01T00:00:00Z',
      dtTo: '2026-02-01T00:00:00Z',
      accounts: [cashC1],
    });
    expect(turn).toEqual({
      dtFrom: '2026-01-01T00:00:00.000Z',
      dtTo: '2026-02-01T00:00:00.000Z',
      turnovers: [
        {
          ...cashC1,
          groups: [
            { group: {}, debitInit: '0.00', creditInit: '0.00', debitTurnover: '12.34', creditTurnover: '0.00' },
          ],
        },
      ],
    });
    // groupBy goes out as group_by: a grouping the account type does not keep is refused.
    expect(
      (
        await refusal(
          l.turnovers({
            dtFrom: '2026-01-01T00:00:00Z',
            dtTo: '2026-02-01T00:00:00Z',
            accounts: [{ ...cashC1, groupBy: ['nope'] }],
          }),
        )
      ).message,
    ).toMatch(/group/);
    const evs = await l.events({
      dtFrom: '2026-01-01T00:00:00Z',
      dtTo: '2026-02-01T00:00:00Z',
      accounts: [{ type: 'cash', key: { client_id: 'c1', currency: 'EUR' } }],
      limit: 10,
    });
    expect(evs).toMatchObject({
      nextCursor: null,
      events: [{ batchId: b.batchId, side: 'debit', amount: '12.34', account: { type: 'cash' } }],
    });
    const type = await refusal(l.balances({ dt: '2026-02-01T00:00:00Z', accounts: [{ type: 'nope', key: {} }] }));
    expect(type).toBeInstanceOf(NotFoundError);
    expect(type.code).toBe('account_type_not_found');
  });

  it('pipe over HTTP: open, append, get, store; errors typed', async () => {
    const p = new PipeClient(n.url);
    const id = await p.open('k');
    expect(await p.append(id, 'a', 1)).toEqual({ duplicate: false });
    expect(await p.append(id, 'a', 1)).toEqual({ duplicate: true });
    await p.replace(id, Buffer.from('b'));
    expect((await p.records(id)).map(String)).toEqual(['b']);
    const open = await p.get(id);
    expect(open).toEqual({
      id,
      kind: 'k',
      state: 'open',
      repeats: 0,
      createdAt: expect.any(String),
      dueAt: null,
      lastError: null,
      records: [Buffer.from('b').toString('base64')],
    });
    expect(Date.parse(open.createdAt)).toBeGreaterThan(0);
    const { dueAt } = await p.store(id, 3600);
    expect(Date.parse(dueAt)).toBeGreaterThan(Date.now() + 3000_000);
    expect(await p.get(id)).toMatchObject({ state: 'stored', dueAt });
    const closed = await refusal(p.append(id, 'c'));
    expect(closed).toBeInstanceOf(ConflictError);
    expect([closed.code, closed.httpStatus, closed.details]).toEqual([
      'session_closed',
      409,
      { session: id, state: 'stored' },
    ]);
    const kind = await refusal(p.open('nope'));
    expect(kind).toBeInstanceOf(NotFoundError);
    expect(kind.code).toBe('kind_not_found');
    expect(await p.deadLetters({ kind: 'k' })).toEqual({ deadLetters: [], nextAfter: null });
    expect((await refusal(p.redrive(id))).code).toBe('dead_letter_not_found');
  });

  it('pipe over gRPC: sessions on one stream; refusals and a broken stream typed', async () => {
    const g = new PipeGrpcClient(n.grpc);
    const s = await g.open('k');
    expect(await s.append('x', 1)).toEqual({ duplicate: false });
    expect(await s.append('x', 1)).toEqual({ duplicate: true });
    expect((await s.store(3600)).getTime()).toBeGreaterThan(0);
    const closed = await refusal(s.append('y'));
    expect(closed).toBeInstanceOf(ConflictError);
    expect([closed.code, closed.grpcStatus]).toEqual(['session_closed', 9]);
    const kind = await refusal(g.open('nope'));
    expect(kind).toBeInstanceOf(NotFoundError);
    expect(kind.code).toBe('kind_not_found');
    expect((await new PipeClient(n.url).records(s.id)).map(String)).toEqual(['x']);
    g.cancel();
    const broken = await refusal(g.open('k'));
    expect(broken).toBeInstanceOf(UnavailableError);
  });

  it('bus over HTTP: publish, subscription CRUD, server-sent deliveries with acks; errors typed', async () => {
    const bus = new BusClient(n.url);
    expect((await bus.putSubscription('h1', { topics: ['payments'], start: 'earliest' })).created).toBe(true);
    const [pos] = await bus.publish('payments', [{ id: 'p1', key: 'k', type: 'paid', data: { v: 1 } }]);
    expect(pos).toMatchObject({ duplicate: false });
    expect((await bus.publish('payments', [{ id: 'p1', key: 'k', type: 'paid', data: { v: 1 } }]))[0]!.duplicate).toBe(
      true,
    );
    const ac = new AbortController();
    const got: unknown[] = [];
    for await (const d of bus.stream<{ v: number }>('h1', { signal: ac.signal })) {
      got.push(d.event.data);
      expect(await bus.ack('h1', [d.deliveryId])).toEqual({ acked: 1, nacked: 0 });
      ac.abort();
    }
    expect(got).toEqual([{ v: 1 }]);
    expect(await bus.listSubscriptions()).toContain('h1');
    const info = await bus.getSubscription('h1');
    expect(info).toMatchObject({
      name: 'h1',
      connected: expect.any(Boolean),
      paused: false,
      deadLetterTopic: null,
      lagTotal: 0,
      config: { topics: ['payments'], start: 'earliest', filter: {} },
    });
    expect([
      typeof info.config.ackWaitMs,
      typeof info.config.maxInFlight,
      typeof info.createdAt,
      typeof info.updatedAt,
    ]).toEqual(['number', 'number', 'number', 'number']);
    // The config goes out in the wire's snake_case and comes back camelCase.
    const put = await bus.putSubscription('h2', {
      topics: ['payments'],
      filter: { keyPrefix: 'vip-', types: ['paid'] },
      ackWaitMs: 4321,
      maxInFlight: 7,
      maxDeliveries: 3,
      deadLetterTopic: 'orders',
      onExpired: 'resume',
    });
    expect(put).toMatchObject({
      name: 'h2',
      created: true,
      config: {
        filter: { keyPrefix: 'vip-', types: ['paid'] },
        ackWaitMs: 4321,
        maxInFlight: 7,
        maxDeliveries: 3,
        deadLetterTopic: 'orders',
        onExpired: 'resume',
      },
    });
    expect((await bus.getSubscription('h2')).config).toEqual(put.config);
    expect((await bus.getSubscription('h2')).deadLetterTopic).toBe('orders');
    await bus.deleteSubscription('h2');
    const topic = await refusal(bus.publish('nope', [{ type: 't' }]));
    expect(topic).toBeInstanceOf(NotFoundError);
    expect(topic.code).toBe('topic_not_found');
    const sub = await refusal(bus.getSubscription('nope'));
    expect([sub.code, sub.httpStatus]).toEqual(['subscription_not_found', 404]);
    const streamRefused = await refusal(bus.stream('nope').next());
    expect(streamRefused.code).toBe('subscription_not_found');
    await bus.deleteSubscription('h1');
  });

  it('bus over gRPC: publish, subscribe with acks as an async iterator; errors typed', async () => {
    const g = new BusGrpcClient(n.grpc);
    const [p] = await g.publish([{ id: 'g1', topic: 'orders', key: 'a', type: 'created', data: { n: 1 } }]);
    expect(p!.duplicate).toBe(false);
    const sub = g.subscribe<{ n: number }>('g-sub', {
      config: { topics: ['orders'], start: 'earliest', filter: { types: ['created'] } },
    });
    expect(Object.keys(await sub.opened)).toEqual(['s0']);
    const seen: number[] = [];
    for await (const d of sub) {
      seen.push(d.event.data.n);
      d.ack();
      if (seen.length === 1) await g.publish([{ topic: 'orders', key: 'a', type: 'created', data: { n: 2 } }]);
      if (seen.length === 2) sub.close();
    }
    expect(seen).toEqual([1, 2]);
    const topic = await refusal(g.publish([{ topic: 'nope', type: 't' }]));
    expect(topic).toBeInstanceOf(NotFoundError);
    expect([topic.code, topic.grpcStatus]).toEqual(['topic_not_found', 5]);
    const bad = await refusal(g.publish([]));
    expect(bad).toBeInstanceOf(InvalidRequestError);
    expect(bad.code).toBe('bad_request');
    const missing = await refusal(g.subscribe('never-created').opened);
    expect(missing).toBeInstanceOf(NotFoundError);
    expect(missing.code).toBe('subscription_not_found');
    g.close();
  });

  it('bus over gRPC: a publisher sends batches without waiting, answered in order; a refused batch ends it and writes nothing after', async () => {
    const g = new BusGrpcClient(n.grpc);
    const pub = g.publisher();
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        pub.publish([
          { topic: 'orders', key: 'seq', type: 'batched', data: { i } },
          { topic: 'orders', key: 'seq', type: 'batched', data: { i, second: true } },
        ]),
      ),
    );
    await pub.end();
    // Batches of one call are written in the order sent: positions grow batch by batch.
    const positions = answers.flatMap((a) => a.map((p) => Number(p.pos)));
    expect(positions).toHaveLength(40);
    expect([...positions].sort((x, y) => x - y)).toEqual(positions);
    expect(new Set(positions).size).toBe(40);

    const bad = g.publisher();
    const first = await bad.publish([{ topic: 'orders', key: 'b', type: 'batched', data: { ok: 1 } }]);
    const refused = await refusal(bad.publish([{ topic: 'nope', type: 't' }]));
    expect(refused).toBeInstanceOf(NotFoundError);
    expect(refused.code).toBe('topic_not_found');
    const after = await refusal(bad.publish([{ topic: 'orders', key: 'b', type: 'after-refusal' }]));
    expect(after.code).toBe('topic_not_found');
    await bad.end();
    expect(first).toHaveLength(1);
    // Read everything up to a marker published last: the batch sent after the refusal is not there.
    await g.publish([{ topic: 'orders', key: 'b', type: 'marker' }]);
    const sub = g.subscribe<{ i?: number }>('pub-check', {
      config: { topics: ['orders'], start: 'earliest', filter: { types: ['batched', 'after-refusal', 'marker'] } },
    });
    await sub.opened;
    const types: string[] = [];
    for await (const d of sub) {
      types.push(d.event.type);
      d.ack();
      if (d.event.type === 'marker') sub.close();
    }
    expect(types.filter((t) => t === 'batched')).toHaveLength(41);
    expect(types.filter((t) => t === 'after-refusal')).toEqual([]);
    g.close();
  });

  it('a node that cannot be reached is an UnavailableError', async () => {
    const gone = await listen((_q, r) => r.end());
    await gone.close();
    const e = await refusal(new MachinesClient(gone.url).get('m', { id: 'a' }));
    expect(e).toBeInstanceOf(UnavailableError);
    expect(e.code).toBe('unavailable');
  });
});
