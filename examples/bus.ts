/**
 * Publish over HTTP, consume over gRPC with acks.
 *
 *   millrace.yaml:  bus: { topics: [orders] }
 *   run:            npx tsx examples/bus.ts   (MILLRACE_URL, MILLRACE_GRPC)
 */
import { pathToFileURL } from 'node:url';
import { BusClient, BusGrpcClient, ConflictError } from 'millrace/sdk';

interface Order {
  total: string;
}

export async function run(
  millraceUrl: string,
  grpcAddress: string,
): Promise<{ received: Array<{ key: string; data: Order }>; busy: string }> {
  const http = new BusClient(millraceUrl);
  const name = `billing-${Date.now().toString(36)}`;
  await http.putSubscription(name, { topics: ['orders'], start: 'latest' });

  const grpc = new BusGrpcClient(grpcAddress);
  const sub = grpc.subscribe<Order>(name, { batch: true });
  await sub.opened;
  // One live connection per subscription: a second one is refused.
  let busy = '';
  try {
    await grpc.subscribe(name).opened;
  } catch (e) {
    if (e instanceof ConflictError)
      busy = e.code; // subscription_busy
    else throw e;
  }

  await http.publish('orders', [
    { id: 'o-1', key: 'cust-7', type: 'created', data: { total: '12.50' } },
    { id: 'o-2', key: 'cust-8', type: 'created', data: { total: '3.00' } },
  ]);
  await grpc.publish([{ id: 'o-1', topic: 'orders', key: 'cust-7', type: 'created', data: { total: '12.50' } }]); // a repeat: not stored again

  const received: Array<{ key: string; data: Order }> = [];
  for await (const d of sub) {
    received.push({ key: d.event.key, data: d.event.data });
    d.ack();
    if (received.length === 2) sub.close(); // stores the acked position; the loop then ends
  }
  grpc.close();
  return { received, busy };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(
    await run(process.env.MILLRACE_URL ?? 'http://127.0.0.1:7070', process.env.MILLRACE_GRPC ?? '127.0.0.1:7071'),
  );
}
