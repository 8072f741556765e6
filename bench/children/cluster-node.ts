/**
 * One node of bench/cluster.ts, in a process of its own: `startNode` with
 * every face (the machines face with an in-process processor `bench`
 * besides the configured HTTP ones), config as JSON in argv[2]. Reads one
 * JSON command per stdin line and answers each with one JSON line:
 *
 *   {"op":"start","ns":..,"ids":[..]}                 starts the machines
 *   {"op":"calls","ns":..,"ids":[..],"total":N}       N calls, one caller per id
 *   {"op":"raw","total":N,"concurrency":C,"tag":..}  N raw Log.append of one event
 *   {"op":"pubs","total":N,"concurrency":C,"tag":..} N bus publishes of one event with an id (topic "bench")
 *
 * Measurements answer {"t0","t1" (wall ms),"lat":[ms,...]}. Prints
 * {"ready":true} once serving; exits when stdin closes. Answers are the
 * stdout lines starting with "@@ "; the rest is the node's log.
 */
import { createInterface } from 'node:readline';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { ledgerFace } from '../../src/ledger/ledger-face.js';
import { busFace } from '../../src/bus/face.js';
import type { Bus } from '../../src/bus/bus.js';
import { pipeFace } from '../../src/pipe/face.js';
import { type MachinesFace, machinesFaceWith } from '../../src/machines/face.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { startNode } from '../../src/serve.js';
import { pool } from '../support.js';

const local: ProcessorFn = (req) => (req.kind === 'call' ? { response: 'ok', events: [{ n: 1 }] } : {});
const config = buildConfig(JSON.parse(process.argv[2]!) as ConfigInput);
const node = await startNode(config, {
  faces: [machinesFaceWith({ processors: new Map([['bench', local]]) }), ledgerFace, pipeFace, busFace],
});
const machines = (node.faces.find((f) => f.name === 'machines') as MachinesFace).machines;
const bus = (node.faces.find((f) => f.name === 'bus') as unknown as { bus: Bus }).bus;

type Command =
  | { op: 'start'; ns: string; ids: string[] }
  | { op: 'calls'; ns: string; ids: string[]; total: number }
  | { op: 'raw'; total: number; concurrency: number; tag: string }
  | { op: 'pubs'; total: number; concurrency: number; tag: string };

async function timed(
  total: number,
  concurrency: number,
  task: (i: number, w: number) => Promise<unknown>,
): Promise<{ t0: number; t1: number; lat: number[] }> {
  const lat: number[] = [];
  const t0 = Date.now();
  await pool(total, concurrency, async (i, w) => {
    const s = performance.now();
    await task(i, w);
    lat.push(performance.now() - s);
  });
  return { t0, t1: Date.now(), lat };
}

async function handle(c: Command): Promise<unknown> {
  switch (c.op) {
    case 'start':
      await pool(c.ids.length, c.ids.length, (i) => machines.start(c.ns, c.ids[i]!, null).then(() => {}));
      return { ok: true };
    case 'calls':
      return timed(c.total, c.ids.length, (_i, w) => machines.call(c.ns, { id: c.ids[w]! }, { n: 1 }));
    case 'raw':
      return timed(c.total, c.concurrency, (i, w) =>
        node.runtime.log.append(`raw/${c.tag}/${w}`, [{ type: 't', data: { n: i } }]),
      );
    case 'pubs':
      return timed(c.total, c.concurrency, (i, w) =>
        bus.publish([{ topic: 'bench', key: `k${w}`, id: `${c.tag}-${i}`, type: 't', data: { n: i } }]),
      );
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = JSON.parse(line) as Command & { rid?: number };
  handle(cmd).then(
    // Commands may run at once: an answer carries its command's rid.
    (r) =>
      process.stdout.write(`@@ ${JSON.stringify(cmd.rid === undefined ? r : { ...(r as object), rid: cmd.rid })}\n`),
    (err: unknown) => process.stdout.write(`@@ ${JSON.stringify({ error: String((err as Error)?.stack ?? err) })}\n`),
  );
});
rl.on('close', () => {
  void node.close().then(() => process.exit(0));
});
process.stdout.write('@@ {"ready":true}\n');
