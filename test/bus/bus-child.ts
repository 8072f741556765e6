// A millrace node serving only the bus face, for crash tests: `node --import tsx test/bus/bus-child.ts <config.json>`.
import { readFileSync } from 'node:fs';
import { buildConfig } from '../../src/core/config.js';
import { startNode } from '../../src/serve.js';
import { busFace } from '../../src/bus/face.js';

const input = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as unknown;
const node = await startNode(buildConfig(input), { faces: [busFace] });
process.stdout.write(`ready ${node.url} grpc ${node.grpc?.port ?? 0}\n`);
process.once('SIGTERM', () => {
  void node.close().then(() => process.exit(0));
});
