import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as processorExample from '../../examples/processor.js';
import * as pipeExample from '../../examples/pipe-handler.js';
import * as busExample from '../../examples/bus.js';
import { startSdkNode, type SdkNode } from './support.js';

// The examples in examples/, run as written against a real node.
describe('examples', () => {
  let n: SdkNode;
  beforeAll(async () => {
    n = await startSdkNode({ namespaces: ['orders'], kinds: ['payments'] });
    n.router.routes.set('/machines/orders', processorExample.orders.handler);
    n.router.routes.set('/pipe/payments', pipeExample.payments.handler);
  });
  afterAll(async () => n?.close());

  it('examples/processor.ts', async () => {
    const r = await processorExample.run(n.url);
    expect(r).toEqual({
      placed: { status: 'new' },
      paid: { status: 'paid' },
      status: 'paid',
      history: [
        { type: 'placed', sku: 'book' },
        { type: 'paid', amount: '12.50' },
      ],
      missing: 'machine_not_found',
    });
  });

  it('examples/pipe-handler.ts', async () => {
    const r = await pipeExample.run(n.grpc);
    expect(r.map((f) => f.records).sort()).toEqual([['charge 12.50'], ['retry-once']]);
    // The second session was stored again by its first verdict and finished on its second push.
    expect(r.find((f) => f.records[0] === 'retry-once')!.repeats).toBe(2);
  });

  it('examples/bus.ts', async () => {
    const r = await busExample.run(n.url, n.grpc);
    expect(r.busy).toBe('subscription_busy');
    expect(r.received).toEqual([
      { key: 'cust-7', data: { total: '12.50' } },
      { key: 'cust-8', data: { total: '3.00' } },
    ]);
  });
});
