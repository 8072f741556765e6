/**
 * A node that runs schedules: opens a Runtime from a config file with the
 * machines, bus and ops faces. With argv[3] = "hang", the first fire whose
 * action ran prints {"acted":fire_at} and then waits forever before storing
 * its outcome (the parent kills it there with SIGKILL).
 *
 * Usage: node --import tsx test/ops/fire-child.ts <config> [hang]
 */
import { loadConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import { MachinesFace } from '../../src/machines/face.js';
import { BusFace } from '../../src/bus/face.js';
import { OpsFace } from '../../src/ops/face.js';

const hang = process.argv[3] === 'hang';
const rt = await Runtime.open(loadConfig(process.argv[2]));
const faces = [new MachinesFace(rt), new BusFace(rt)];
const ops = new OpsFace(rt, faces, {
  afterAction: async (_name, fireAt) => {
    if (!hang) return;
    process.stdout.write(`${JSON.stringify({ acted: fireAt })}\n`);
    await new Promise(() => {});
  },
});
for (const f of [...faces, ops]) await f.start();
process.stdout.write('ready\n');
