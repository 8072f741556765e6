// A millrace node with every face, for crash tests: `node --import tsx test/auth/node-child.ts <config.json>`.
import { readFileSync } from 'node:fs';
import { buildConfig } from '../../src/core/config.js';
import { startNode } from '../../src/serve.js';

const input = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as unknown;
const node = await startNode(buildConfig(input));
process.stdout.write(`ready ${node.url}\n`);
process.once('SIGTERM', () => {
  void node.close().then(() => process.exit(0));
});
