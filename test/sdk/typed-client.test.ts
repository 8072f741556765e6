import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  defineProcessor,
  InvalidRequestError,
  MachinesClient,
  NotFoundError,
  RepairFailed,
  type Machine,
} from '../../src/sdk/index.js';
import { startSdkNode, type SdkNode } from './support.js';

type Ev =
  | { type: 'placed'; sku: string }
  | { type: 'paid'; amount: string }
  | { type: 'noted'; note: string }
  | { type: 'repaired' };
type Aux = { status: 'new' | 'paid' | 'broken' };
type Shop = {
  event: Ev;
  aux: Aux;
  init: { args: { sku: string }; response: { status: Aux['status'] } };
  call: { args: { pay: string } | { breakIt: true }; response: { status: Aux['status']; events: number } };
  notification: { args: { note: string } };
  repair: { args: { force: boolean }; response: 'fixed' };
};

const shop = defineProcessor<Shop>({
  namespace: 'shop',
  init(args, ctx) {
    ctx.tag(`sku-${args.sku}-${ctx.machine.id}`);
    ctx.setTimer({ timeoutS: 3600 });
    return { events: [{ type: 'placed', sku: args.sku }], aux: { status: 'new' }, response: { status: 'new' } };
  },
  call(args, ctx) {
    if ('breakIt' in args) throw new Error('broken on purpose');
    return {
      events: [{ type: 'paid', amount: args.pay }],
      aux: { status: 'paid' },
      response: { status: 'paid', events: ctx.machine.history.length + 1 },
    };
  },
  notification(args) {
    return { events: [{ type: 'noted', note: args.note }] };
  },
  repair(args) {
    if (!args.force) throw new RepairFailed('not forced');
    return { events: [{ type: 'repaired' }], aux: { status: 'new' }, response: 'fixed' };
  },
});

/** A fetch that counts the requests it lets through. */
function countingFetch(): { fetch: typeof fetch; count: () => number } {
  let n = 0;
  return {
    fetch: (input, init) => {
      n++;
      return fetch(input, init);
    },
    count: () => n,
  };
}

describe('client.for(definition) against a node', () => {
  let n: SdkNode;
  beforeAll(async () => {
    n = await startSdkNode({ namespaces: ['shop', 'shop-eu'] });
    n.router.routes.set('/machines/shop', shop.handler);
    n.router.routes.set('/machines/shop-eu', shop.handler);
  });
  afterAll(async () => n?.close());

  it('start, call, notify and get on the definition’s namespace, with the camelCase view', async () => {
    const m = new MachinesClient(n.url).for(shop);
    expect(m.namespace).toBe('shop');
    expect(await m.start('a', { sku: 'book' })).toEqual({ response: { status: 'new' } });
    expect(await m.call({ tag: 'sku-book-a' }, { pay: '12.50' })).toEqual({ response: { status: 'paid', events: 2 } });
    const { id } = await m.notify({ id: 'a' }, { note: 'gift wrap' });
    expect(id).toBeGreaterThan(0);
    let v: Machine<Ev, Aux> | undefined;
    for (let i = 0; i < 200; i++) {
      v = await m.get({ id: 'a' });
      if (v.history.length === 3) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(v!.history.map((e) => e.data)).toEqual([
      { type: 'placed', sku: 'book' },
      { type: 'paid', amount: '12.50' },
      { type: 'noted', note: 'gift wrap' },
    ]);
    expect(v!.history.map((e) => e.id)).toEqual([1, 2, 3]);
    expect(v!.history.every((e) => !Number.isNaN(Date.parse(e.createdAt)))).toBe(true);
    expect(v).toMatchObject({
      ns: 'shop',
      id: 'a',
      status: 'working',
      aux: { status: 'paid' },
      tags: ['sku-book-a'],
      historyRange: { direction: 'forward' },
      paused: false,
    });
    expect(Date.parse(v!.timer!.dueAt)).toBeGreaterThan(Date.now());
    expect(Object.keys(v!).filter((k) => k.includes('_'))).toEqual([]);
    // A history range asked for is passed on.
    expect((await m.get({ id: 'a' }, { after: 1, limit: 1 })).history.map((e) => e.id)).toEqual([2]);
  });

  it('repair refuses or mends a failed machine; simpleRepair and remove', async () => {
    const m = new MachinesClient(n.url).for(shop);
    await m.start('b', { sku: 'pen' });
    expect((await m.call({ id: 'b' }, { breakIt: true }).catch((e: unknown) => e)) as { code?: string }).toMatchObject({
      code: 'machine_failed',
    });
    expect((await m.get({ id: 'b' })).status).toBe('failed');
    expect(await m.repair({ id: 'b' }, { force: false }).catch((e: unknown) => (e as { code: string }).code)).toBe(
      'repair_failed',
    );
    expect(await m.repair({ id: 'b' }, { force: true })).toEqual({ response: 'fixed' });
    const v = await m.get({ id: 'b' });
    expect([v.status, v.aux, v.history.at(-1)!.data]).toEqual(['working', { status: 'new' }, { type: 'repaired' }]);
    await m.call({ id: 'b' }, { breakIt: true }).catch((e: unknown) => e);
    await m.simpleRepair({ id: 'b' });
    expect((await m.get({ id: 'b' })).status).toBe('working');
    await m.remove({ id: 'b' });
    expect(await m.get({ id: 'b' }).catch((e: unknown) => e)).toBeInstanceOf(NotFoundError);
  });

  it('for(definition, namespace) and for<Types>(namespace) address another namespace', async () => {
    const c = new MachinesClient(n.url);
    await c.for(shop, 'shop-eu').start('eu-1', { sku: 'map' });
    expect((await c.for<Shop>('shop-eu').get({ id: 'eu-1' })).aux).toEqual({ status: 'new' });
    expect(
      await c
        .for(shop)
        .get({ id: 'eu-1' })
        .catch((e: unknown) => (e as { code: string }).code),
    ).toBe('machine_not_found');
  });

  it('a definition without a namespace needs one named: refused before any request', async () => {
    const counted = countingFetch();
    const c = new MachinesClient(n.url, { fetch: counted.fetch });
    const anonymous = defineProcessor<Shop>({});
    expect(anonymous.namespace).toBeUndefined();
    const e = (() => {
      try {
        c.for(anonymous);
        return undefined;
      } catch (err) {
        return err;
      }
    })();
    expect(e).toBeInstanceOf(InvalidRequestError);
    expect((e as InvalidRequestError).code).toBe('bad_request');
    expect(() => c.for('')).toThrow(InvalidRequestError);
    expect(counted.count()).toBe(0);
    await c.for(anonymous, 'shop').start('named', { sku: 'cup' });
    expect(counted.count()).toBe(1);
  });

  it('the node’s refusals come typed: an unknown namespace, a malformed id (nothing written)', async () => {
    const c = new MachinesClient(n.url);
    const nope = await c
      .for<Shop>('nope')
      .start('x', { sku: 'a' })
      .catch((e: unknown) => e);
    expect(nope).toBeInstanceOf(NotFoundError);
    expect((nope as NotFoundError).code).toBe('namespace_not_found');
    const m = c.for(shop);
    const bad = await m.start('a\u0001b', { sku: 'a' }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(InvalidRequestError);
    expect([(bad as InvalidRequestError).code, (bad as InvalidRequestError).httpStatus]).toEqual(['bad_request', 400]);
    expect(await m.get({ id: 'a\u0001b' }).catch((e: unknown) => (e as InvalidRequestError).code)).toMatch(
      /bad_request|machine_not_found/,
    );
    expect(await m.start('ok-after', { sku: 'a' })).toEqual({ response: { status: 'new' } });
  });

  it('defineProcessor refuses an empty namespace', () => {
    const e = (() => {
      try {
        return defineProcessor({ namespace: '' });
      } catch (err) {
        return err;
      }
    })();
    expect(e).toBeInstanceOf(InvalidRequestError);
    expect((e as InvalidRequestError).code).toBe('bad_request');
  });
});
