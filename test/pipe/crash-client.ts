/**
 * A pipe node to be killed, with its own streaming clients. It opens
 * sessions over several gRPC streams, appends records (each awaited, with a
 * seq), stores every other session, and prints one JSON line per
 * acknowledgement, only after the ack arrived:
 *
 *   {"n":id}            session opened
 *   {"a":[id,text]}     record acknowledged
 *   {"s":id}            store acknowledged
 *   {"target":true}     `target` sessions are done; it keeps writing until killed
 *
 * Usage: node --import tsx test/pipe/crash-client.ts <config> <target>
 */
import { loadConfig } from '../../src/core/config.js';
import { startNode } from '../../src/serve.js';
import { pipeFace } from '../../src/pipe/face.js';
import { StreamClient } from './support.js';

const [configPath, targetArg] = process.argv.slice(2);
const target = Number(targetArg ?? 10_000);
const node = await startNode(loadConfig(configPath), { faces: [pipeFace] });
const line = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

const STREAMS = 4;
const WORKERS = 400;
const clients = Array.from({ length: STREAMS }, () => new StreamClient(`127.0.0.1:${node.grpc!.port}`));
let next = 0;
let done = 0;

async function worker(w: number): Promise<void> {
  const c = clients[w % STREAMS]!;
  for (;;) {
    const i = next++;
    const id = await c.newSession('crash');
    line({ n: id });
    const n = 1 + (i % 3);
    for (let k = 1; k <= n; k++) {
      const text = `${i}:${k}:${'x'.repeat(i % 50)}`;
      const r = await c.append(id, text, k);
      if (r.error) throw new Error(r.error.message);
      line({ a: [id, text] });
    }
    if (i % 2 === 0) {
      const r = await c.store(id, 600);
      if (r.error) throw new Error(r.error.message);
      line({ s: id });
    }
    if (++done === target) line({ target: true });
  }
}

await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
