/**
 * The client side of the pipe append benchmark, run as its own process (as
 * real clients are): opens `sessions` sessions over `connections` gRPC
 * streams, reports "ready", then on "go" appends `perSession` 100-byte
 * records to every session, each session keeping at most `depth` appends
 * unacknowledged (1: each awaits the durable ack of the previous one; more:
 * pipelined, which the stream keeps in order), and reports the elapsed
 * milliseconds.
 *
 *   node --import tsx bench/children/pipe-clients.ts <address> <sessions> <perSession> <connections> <batched 0|1> [depth]
 */
import { PipeStreamClient } from '../../src/pipe/client.js';

const [address, sessionsArg, perArg, connArg, batchedArg] = process.argv.slice(2);
const sessions = Number(sessionsArg);
const perSession = Number(perArg);
const connections = Number(connArg);
const batched = batchedArg === '1';
const depth = Math.max(1, Number(process.argv[7] ?? 1));
const record = Buffer.alloc(100, 0x61);

const send = (m: unknown): void => void process.send!(m);
const clients = Array.from({ length: connections }, () => new PipeStreamClient(address!, { batched }));
const ids = await Promise.all(
  Array.from({ length: sessions }, (_, i) => clients[i % connections]!.newSession('bench')),
);
process.once('message', async () => {
  const t0 = performance.now();
  await Promise.all(
    ids.map(async (id, i) => {
      const c = clients[i % connections]!;
      let next = 1;
      const lane = async (): Promise<void> => {
        while (next <= perSession) {
          const r = await c.append(id, record, next++);
          if (r.error) throw new Error(`${r.error.code}: ${r.error.message}`);
        }
      };
      await Promise.all(Array.from({ length: depth }, lane));
    }),
  );
  const ms = performance.now() - t0;
  for (const c of clients) c.cancel();
  process.send!({ ms, ids }, () => process.exit(0));
});
send({ ready: true });
