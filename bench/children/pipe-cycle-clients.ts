/**
 * The client side of the pipe cycle benchmark, in its own process: a loopback
 * HTTP handler that finishes every pushed session in its answer
 * (`{"action":"delete"}`), and producers that open a session, then append one
 * 100-byte record and store it with timeout 0 (the two pipelined), over one
 * gRPC stream.
 *
 * Messages: sends {handler} once listening; on {address, cycles, producers}
 * runs the producers, waits until the handler has seen every session, sends
 * {ms}.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PipeStreamClient } from '../../src/pipe/client.js';

const record = Buffer.alloc(100, 0x61);
let handled = 0;
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    handled++;
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"action":"delete"}');
  });
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));

process.once('message', async (m: { address: string; cycles: number; producers: number }) => {
  const c = new PipeStreamClient(m.address);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: m.producers }, async () => {
      while (next < m.cycles) {
        next++;
        const id = await c.newSession('bench');
        // Pipelined: the stream keeps a session's operations in order, so the store need not wait for the append's ack.
        const [a, r] = await Promise.all([c.append(id, record, 1), c.store(id, 0)]);
        if (a.error || r.error) throw new Error((a.error ?? r.error)!.message);
      }
    }),
  );
  while (handled < m.cycles) await new Promise((r) => setTimeout(r, 2));
  const ms = performance.now() - t0;
  c.cancel();
  server.closeAllConnections();
  process.send!({ ms }, () => process.exit(0));
});
process.send!({ handler: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` });
