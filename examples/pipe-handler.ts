/**
 * A handler for the `payments` pipe kind, and a producer writing sessions over gRPC.
 *
 *   millrace.yaml:  pipe: { kinds: { payments: { handler: http://127.0.0.1:9000/ } } }
 *   run:            npx tsx examples/pipe-handler.ts   (MILLRACE_GRPC, default 127.0.0.1:7071)
 */
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { definePipeHandler, PipeGrpcClient, verdict } from 'millrace/sdk';

/** What the handler finished, for the caller to look at. */
export const finished: Array<{ id: string; records: string[]; repeats: number }> = [];

export const payments = definePipeHandler('payments', (session, records) => {
  const texts = records.map((r) => r.toString('utf8'));
  // Not ready yet: the session comes back in 0.05 s (a real handler would wait longer).
  if (texts.includes('retry-once') && session.repeats < 2) return verdict.store(0.05);
  finished.push({ id: session.id, records: texts, repeats: session.repeats });
  return verdict.delete();
});

/** Writes two sessions on one stream and stores them; resolves once the handler has finished both. */
export async function run(grpcAddress: string): Promise<Array<{ id: string; records: string[]; repeats: number }>> {
  const pipe = new PipeGrpcClient(grpcAddress);
  const a = await pipe.open('payments');
  await a.append('charge 12.50', 1);
  await a.append('charge 12.50', 1); // same seq: acknowledged as a duplicate, not written twice
  await a.store(0);
  const b = await pipe.open('payments');
  await b.append('retry-once', 1);
  await b.store(0);
  await pipe.end();
  const ids = new Set([a.id, b.id]);
  while (finished.filter((f) => ids.has(f.id)).length < ids.size) await new Promise((r) => setTimeout(r, 10));
  return finished.filter((f) => ids.has(f.id));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const server = createServer(payments.handler).listen(9000, '127.0.0.1');
  console.log(await run(process.env.MILLRACE_GRPC ?? '127.0.0.1:7071'));
  server.close();
}
