/**
 * What the per-write route check costs. With more than one shard, every
 * write checks inside its own transaction that its shard still owns the
 * key's hash (Storage.checkRoute: one read of the `shard_state` row per
 * transaction, shared by the callers a group commit batches into one
 * transaction where they share it). Over two shards (each owning half the
 * hash space) on one node, the same work runs three ways, in the same run
 * on the same storage, by internal switches no node turns:
 *
 * - "query": the row read by a statement of its own in the transaction
 *   (`routeCheckAtBegin` false: how the check first was);
 * - "BEGIN": the row read with BEGIN, in the same round trip, where the
 *   dialect sends statements together (PostgreSQL; on SQLite, where
 *   savepoints give each caller a scope of its own, it is the same as "query");
 * - "none": no check (`routeCheck` false), the baseline.
 *
 * Rounds of the three back to back, their order rotating, so that drift (a
 * busy box) hits all alike; each round gives a throughput ratio to "none"
 * per variant, and the table prints the median ratios, the median
 * throughputs and this process's median CPU time per operation.
 *
 * - machine calls: 100 machines, 100 calls in flight, an in-process
 *   processor, one event per call (history_range: last event only);
 * - bus publishes: one event per publish, 100 in flight, 1,000 keys;
 * - raw log appends: `Log.append`, one event each, 100 in flight, and one
 *   at a time (a transaction per append: the check's whole cost on each).
 *
 * Knobs: BENCH_ROUTE_CHECK_OPS (operations per round, default 2000),
 * BENCH_ROUTE_CHECK_ROUNDS (default 9), BENCH_ROUTE_CHECK_DIALECTS
 * (default "sqlite,postgres").
 */
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import type { Bus } from '../src/bus/bus.js';
import type { Machines } from '../src/machines/machines.js';
import type { ProcessorFn } from '../src/machines/processor.js';
import { startNode } from '../src/serve.js';
import { createPgDatabase, dropPgDatabase, fmtRate, pgUrlFor, pool, printTable, rate, scratchDir } from './support.js';

const OPS = Number(process.env.BENCH_ROUTE_CHECK_OPS ?? 2_000);
const ROUNDS = Number(process.env.BENCH_ROUTE_CHECK_ROUNDS ?? 9);
const DIALECTS = (process.env.BENCH_ROUTE_CHECK_DIALECTS ?? 'sqlite,postgres').split(',').map((s) => s.trim());
const IN_FLIGHT = 100;
const HALF = '8'.padEnd(40, '0');

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

type Task = ((i: number, w: number) => Promise<void>) & { inFlight?: number };

interface Round {
  perS: number;
  /** CPU time of this process (user + system) per operation, µs. */
  cpuUs: number;
}

async function measure(task: Task): Promise<Round> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await pool(OPS, task.inFlight ?? IN_FLIGHT, task);
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { perS: rate(OPS, ms), cpuUs: (c.user + c.system) / OPS };
}

export async function run(): Promise<void> {
  const rows: string[][] = [];
  for (const dialect of DIALECTS) {
    const scratch = scratchDir();
    const dbs = dialect === 'postgres' ? [await createPgDatabase(), await createPgDatabase()] : [];
    const shard = (i: number) => (dbs[i] === undefined ? {} : { url: pgUrlFor(dbs[i]) });
    const input = {
      node_id: 'bench',
      data_dir: scratch.dir,
      http: { host: '127.0.0.1', port: 0 },
      grpc: { enabled: false, port: 0 },
      logging: { level: 'silent' },
      storage: {
        dialect,
        durability: 'strict',
        shards: [
          { name: 's0', from: '0', to: HALF, ...shard(0) },
          { name: 's1', from: HALF, ...shard(1) },
        ],
      },
      machines: {
        namespaces: {
          local: { processor: { in_process: 'bench' }, history_range: { direction: 'backward', limit: 1 } },
        },
      },
      bus: { topics: ['bench'] },
    } as ConfigInput;
    const local: ProcessorFn = (req) => (req.kind === 'call' ? { response: 'ok', events: [{ n: 1 }] } : {});
    const node = await startNode(buildConfig(input), { env: {}, processors: new Map([['bench', local]]) });
    try {
      const storage = node.runtime.storage;
      const machines = (node.faces.find((f) => f.name === 'machines') as unknown as { machines: Machines }).machines;
      const bus = (node.faces.find((f) => f.name === 'bus') as unknown as { bus: Bus }).bus;
      await pool(IN_FLIGHT, IN_FLIGHT, (i) => machines.start('local', `m${i}`, null).then(() => {}));
      const cases: Array<[string, Task]> = [
        ['machine calls', (_i, w) => machines.call('local', { id: `m${w}` }, { n: 1 }).then(() => {})],
        [
          'bus publishes',
          (i) => bus.publish([{ topic: 'bench', key: `k${i % 1000}`, type: 't', data: { i } }]).then(() => {}),
        ],
        ['log appends', (i, w) => node.runtime.log.append(`raw/${w}`, [{ type: 't', data: { i } }]).then(() => {})],
        // One caller: a transaction per append, so each pays the check alone (the most it can cost).
        [
          'log appends, 1 in flight',
          Object.assign(
            (i: number) => node.runtime.log.append('raw/serial', [{ type: 't', data: { i } }]).then(() => {}),
            { inFlight: 1 },
          ),
        ],
      ];
      type Variant = 'begin' | 'query' | 'off';
      const set = (v: Variant) => {
        storage.routeCheck = v !== 'off';
        storage.routeCheckAtBegin = v === 'begin';
      };
      const orders: Variant[][] = [
        ['begin', 'query', 'off'],
        ['off', 'begin', 'query'],
        ['query', 'off', 'begin'],
      ];
      for (const [label, task] of cases) {
        const runs = new Map<Variant, Round[]>([
          ['begin', []],
          ['query', []],
          ['off', []],
        ]);
        const ratios = new Map<Variant, number[]>([
          ['begin', []],
          ['query', []],
        ]);
        // A warm-up round, then rounds of the three back to back, their order rotating, so that drift
        // (caches, other work on the box) hits all alike; each round gives one ratio to "off" per variant.
        await measure(task);
        for (let r = 0; r < ROUNDS; r++) {
          const round = new Map<Variant, Round>();
          for (const v of orders[r % orders.length]!) {
            set(v);
            round.set(v, await measure(task));
          }
          for (const [v, list] of runs) list.push(round.get(v)!);
          for (const [v, list] of ratios) list.push(round.get(v)!.perS / round.get('off')!.perS);
        }
        set('begin');
        const cpu = (v: Variant) => median(runs.get(v)!.map((x) => x.cpuUs)).toFixed(0);
        const perS = (v: Variant) => fmtRate(median(runs.get(v)!.map((x) => x.perS)));
        const ratio = (v: Variant) => median(ratios.get(v)!).toFixed(3);
        rows.push([
          `${dialect} ${label}`,
          perS('query'),
          perS('begin'),
          perS('off'),
          `${cpu('query')} / ${cpu('begin')} / ${cpu('off')}`,
          ratio('query'),
          ratio('begin'),
        ]);
      }
    } finally {
      node.runtime.storage.routeCheck = true;
      node.runtime.storage.routeCheckAtBegin = true;
      await node.close();
      for (const db of dbs) await dropPgDatabase(db);
      scratch.cleanup();
    }
  }
  printTable(
    [
      `case (2 shards, ${OPS} ops a round, ${ROUNDS} rounds)`,
      'check by query /s',
      'check with BEGIN /s',
      'no check /s',
      'CPU µs/op (query / BEGIN / none)',
      'ratio query',
      'ratio BEGIN',
    ],
    rows,
  );
}
