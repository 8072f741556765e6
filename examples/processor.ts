/**
 * A processor for an `orders` namespace, and a client driving one order.
 *
 *   millrace.yaml:  machines: { namespaces: { orders: { processor: { url: http://127.0.0.1:8080/ } } } }
 *   run:            npx tsx examples/processor.ts   (MILLRACE_URL, default http://127.0.0.1:7070)
 */
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { defineProcessor, MachinesClient, NotFoundError, ProcessorUnavailable } from 'millrace/sdk';

type OrderEvent =
  | { type: 'placed'; sku: string }
  | { type: 'paid'; amount: string }
  | { type: 'reminded' }
  | { type: 'noted'; text: string };
interface OrderAux {
  status: 'new' | 'paid';
  reminders: number;
}
type OrderResponse = { status: OrderAux['status'] };

/** The types of the `orders` processor: each step's args and response, the history's events and the aux state. */
export type Orders = {
  event: OrderEvent;
  aux: OrderAux;
  init: { args: { sku: string }; response: OrderResponse };
  call: { args: { pay: string }; response: OrderResponse };
  notification: { args: { note: string } };
};

export const orders = defineProcessor<Orders>({
  namespace: 'orders',
  init(args, ctx) {
    ctx.tag(`order-${ctx.machine.id}`); // the order can be addressed by its tag from now on
    ctx.setTimer({ timeoutS: 3600 }); // remind in an hour unless paid
    return {
      events: [{ type: 'placed', sku: args.sku }],
      aux: { status: 'new', reminders: 0 },
      response: { status: 'new' },
    };
  },
  async call(args, ctx) {
    // A dependency that is down: the node retries this step with backoff.
    if (args.pay === 'bank-down') throw new ProcessorUnavailable('the bank is down');
    await new Promise((r) => setTimeout(r, 1)); // real work would pass ctx.signal to fetch()
    ctx.unsetTimer();
    return {
      events: [{ type: 'paid', amount: args.pay }],
      aux: { ...ctx.machine.aux!, status: 'paid' },
      response: { status: 'paid' },
    };
  },
  notification(args) {
    return { events: [{ type: 'noted', text: args.note }] };
  },
  timeout(ctx) {
    const aux = ctx.machine.aux!;
    if (aux.status === 'new') ctx.setTimer({ timeoutS: 3600 }); // remind again in an hour
    return { events: [{ type: 'reminded' }], aux: { ...aux, reminders: aux.reminders + 1 } };
  },
});

/** Places an order, pays it by tag, and reads it back: a client typed by the definition. */
export async function run(millraceUrl: string): Promise<{
  placed: OrderResponse;
  paid: OrderResponse;
  status: OrderAux['status'] | undefined;
  history: OrderEvent[];
  missing: string;
}> {
  const m = new MachinesClient(millraceUrl).for(orders); // or .for<Orders>('orders') without the definition
  const id = `o-${Date.now().toString(36)}`;
  const placed = (await m.start(id, { sku: 'book' })).response;
  const paid = (await m.call({ tag: `order-${id}` }, { pay: '12.50' })).response;
  const view = await m.get({ id });
  let missing = '';
  try {
    await m.call({ id: 'no-such-order' }, { pay: '1' });
  } catch (e) {
    if (e instanceof NotFoundError)
      missing = e.code; // machine_not_found
    else throw e;
  }
  return { placed, paid, status: view.aux?.status, history: view.history.map((e) => e.data), missing };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const server = createServer(orders.handler).listen(8080, '127.0.0.1');
  console.log(await run(process.env.MILLRACE_URL ?? 'http://127.0.0.1:7070'));
  server.close();
}
