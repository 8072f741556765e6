/** A millrace node serving the machines face, for crash tests: argv[2] is a JSON config file; prints its URL. */
import { readFileSync } from 'node:fs';
import { buildConfig } from '../../src/core/config.js';
import { startNode } from '../../src/serve.js';
import { machinesFace } from '../../src/machines/face.js';

const node = await startNode(buildConfig(JSON.parse(readFileSync(process.argv[2]!, 'utf8'))), {
  faces: [machinesFace],
});
process.stdout.write(`URL ${node.url}\n`);
