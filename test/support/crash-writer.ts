/**
 * A writer to be killed: opens a Runtime from a config file and appends from
 * many concurrent callers (so commits are grouped) until the process is
 * killed. It prints one JSON line per append only after the append's promise
 * resolved, i.e. after the write was acknowledged:
 *
 *   {"ack":{"stream":..,"seqs":[..],"types":[..],"data":[..],"positions":[..]|null}}
 *   {"pos":{"stream":..,"seqs":[..],"positions":[..]}}   (PostgreSQL, once numbered)
 *   {"seq_stopped":true}                                  (after --stop-sequencer-after N acks)
 *
 * Usage: node --import tsx test/support/crash-writer.ts <config> [--stop-sequencer-after N]
 */
import { loadConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';

const [configPath, ...rest] = process.argv.slice(2);
if (configPath === undefined) {
  process.stderr.write('usage: crash-writer <config> [--stop-sequencer-after N]\n');
  process.exit(2);
}
const flag = rest.indexOf('--stop-sequencer-after');
const stopSequencerAfter = flag >= 0 ? Number(rest[flag + 1]) : undefined;

const WORKERS = 48;
const STREAMS = 24;

const rt = await Runtime.open(loadConfig(configPath));
const line = (o: unknown): void => {
  // stdout is a pipe: the write is synchronous, so a printed ack survives SIGKILL.
  process.stdout.write(`${JSON.stringify(o)}\n`);
};
line({ ready: true });

let acks = 0;
let sequencerStopping = false;

async function worker(w: number): Promise<void> {
  for (let k = 0; ; k++) {
    const stream = `crash/${(w * 7 + k) % STREAMS}`;
    const n = 1 + ((w + k) % 3);
    const events = Array.from({ length: n }, (_, j) => ({
      type: `t${j}`,
      data: { w, k, j, note: `w${w}-k${k}-j${j}`, pad: 'x'.repeat((w * 13 + k) % 40) },
    }));
    const r = await rt.log.append(stream, events);
    line({
      ack: {
        shard: r.shard,
        stream,
        seqs: r.seqs,
        types: events.map((e) => e.type),
        data: events.map((e) => e.data),
        positions: r.positions,
      },
    });
    acks++;
    if (r.positions === null && !sequencerStopping && k % 5 === 0) {
      // Report positions once the sequencer numbered them (the ack above does not wait for it).
      rt.log.positions(r).then(
        (positions) => line({ pos: { stream, seqs: r.seqs, positions } }),
        () => {},
      );
    }
    if (stopSequencerAfter !== undefined && acks >= stopSequencerAfter && !sequencerStopping) {
      sequencerStopping = true;
      void Promise.all(rt.sequencers.map((s) => s.stop())).then(() => line({ seq_stopped: true }));
    }
  }
}

await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
