/**
 * A node that runs bulk jobs over the namespace `bulk` (processor `bulkfn`,
 * which repairs by appending a {repaired} event). With argv[3] = "hang", the
 * repair of machine argv[4] prints {"acting":id} and never answers (the
 * parent kills the process there with SIGKILL).
 *
 * Usage: node --import tsx test/ops/bulk-child.ts <config> [hang <id>]
 */
import { loadConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import { MachinesFace } from '../../src/machines/face.js';
import { OpsFace } from '../../src/ops/face.js';
import type { ProcessorFn } from '../../src/machines/processor.js';

const hangOn = process.argv[3] === 'hang' ? process.argv[4] : undefined;
const bulkfn: ProcessorFn = async (req) => {
  const id = (req.machine as { id: string }).id;
  if (req.kind === 'repair' && id === hangOn) {
    process.stdout.write(`${JSON.stringify({ acting: id })}\n`);
    await new Promise(() => {});
  }
  return { response: req.kind, events: req.kind === 'repair' ? [{ repaired: true }] : [] };
};
const rt = await Runtime.open(loadConfig(process.argv[2]));
const mf = new MachinesFace(rt, { processors: new Map([['bulkfn', bulkfn]]) });
const ops = new OpsFace(rt, [mf]);
for (const f of [mf, ops]) await f.start();
process.stdout.write('ready\n');
