// A millrace node that publishes a plan of batches and reports each answer, for kill -9 tests:
// `node --import tsx test/bus/order-child.ts <config.json> <plan.json>`; prints `ack <json>` per acknowledged batch.
import { readFileSync } from 'node:fs';
import { buildConfig } from '../../src/core/config.js';
import { startNode } from '../../src/serve.js';
import { busFace } from '../../src/bus/face.js';
import type { Bus } from '../../src/bus/bus.js';
import { eventsOf, type Plan } from './order-support.js';

const input = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as unknown;
const { run, plan } = JSON.parse(readFileSync(process.argv[3]!, 'utf8')) as { run: string; plan: Plan };
const node = await startNode(buildConfig(input), { faces: [busFace] });
const bus = (node.faces.find((f) => f.name === 'bus') as unknown as { bus: Bus }).bus;
process.stdout.write('ready\n');
await Promise.all(
  plan.map(async (batches, pub) => {
    for (let batch = 0; batch < batches.length; batch++) {
      const answer = await bus.publish(eventsOf(run, pub, batch, 0, batches[batch]!));
      process.stdout.write(`ack ${JSON.stringify({ pub, batch, attempt: 0, answer })}\n`);
    }
  }),
);
process.stdout.write('done\n');
await node.close();
