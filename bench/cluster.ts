/**
 * Cluster mode: machine calls per second and latency with 100 machines, each
 * call appending one event, on nodes that are separate processes over two
 * PostgreSQL databases (shards s0 and s1), the HTTP processor in a process of
 * its own; beside each, the raw `Log.append` (100 concurrent callers, one
 * event each) from the same node on the same databases.
 *
 * - 1 node alone;
 * - 3 nodes, the load through one of them (two idle peers): what a node
 *   loses to its peers' presence (target: < 10%); interleaved twice with the
 *   same load while the peers are frozen (SIGSTOP), which isolates what the
 *   peers' own work costs from the drift between cases;
 * - 3 nodes, the load spread over all three (machines split between them);
 * - 1 node again, its peers stopped (the databases have grown meanwhile: the
 *   ratios compare with the mean of the two lone runs);
 * - one node on one PostgreSQL database: in-process processor against the
 *   HTTP processor (targets: >= 3,000 and >= 2,000 calls/s on the 2-core box).
 *
 * - failover: 3 nodes, the load spread over all three; then node A is
 *   killed (kill -9) while it runs calls of its own, and its callers move to
 *   B and C (the same 100 machines);
 *   then A is started again and takes its callers back. Calls/s before,
 *   while A is dead and right after it is back (each phase starts at once:
 *   the first starts within a second of the kill, the last as soon as A
 *   serves), each as a ratio to the rate before the kill (targets: >= 0.6
 *   while dead, >= 0.9 after).
 *
 * Calls go through each node's machines face (library API), as in
 * bench/machines.ts. Knobs: BENCH_CLUSTER_CALLS (calls per case, default
 * 6000), BENCH_CLUSTER_PARTS (default "cluster,single,failover").
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { createPgDatabase, dropPgDatabase, fmtRate, pgUrlFor, printTable, rate, scratchDir } from './support.js';

const MACHINES = 100;
const CALLS = Number(process.env.BENCH_CLUSTER_CALLS ?? 6000);
const WARMUP = Math.max(200, Math.floor(CALLS / 10));
const PARTS = (process.env.BENCH_CLUSTER_PARTS ?? 'cluster,single,failover').split(',').map((s) => s.trim());

interface Timed {
  t0: number;
  t1: number;
  lat: number[];
}

/** A child process answering one JSON line per JSON line sent, in order. */
class Child {
  private readonly waiting: Array<(v: unknown) => void> = [];
  private readonly byRid = new Map<number, (v: unknown) => void>();
  private nextRid = 1;
  private readonly first: Promise<unknown>;
  readonly proc: ChildProcess;

  constructor(file: string, args: string[]) {
    this.proc = spawn(
      process.execPath,
      [
        ...(process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROF] : []),
        '--import',
        'tsx',
        join('bench', 'children', file),
        ...args,
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    this.first = new Promise((r) => this.waiting.push(r));
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      if (!line.startsWith('@@ ')) {
        // The node's own log (warnings and worse).
        process.stderr.write(`${file}: ${line}\n`);
        return;
      }
      const v = JSON.parse(line.slice(3)) as { error?: string };
      if (v.error) {
        // A failed command fails the benchmark instead of printing figures of nothing.
        process.stderr.write(`${file}: ${v.error}\n`);
        process.exit(1);
      }
      const rid = (v as { rid?: number }).rid;
      if (rid !== undefined) {
        this.byRid.get(rid)?.(v);
        this.byRid.delete(rid);
      } else this.waiting.shift()?.(v);
    });
  }

  ready(): Promise<unknown> {
    return this.first;
  }

  send<T>(cmd: unknown): Promise<T> {
    const p = new Promise<T>((r) => this.waiting.push(r as (v: unknown) => void));
    this.proc.stdin!.write(`${JSON.stringify(cmd)}\n`);
    return p;
  }

  /** Like send, for commands that run beside others: matched by id, not by order. */
  sendBeside<T>(cmd: object): Promise<T> {
    const rid = this.nextRid++;
    const p = new Promise<T>((r) => this.byRid.set(rid, r as (v: unknown) => void));
    this.proc.stdin!.write(`${JSON.stringify({ ...cmd, rid })}\n`);
    return p;
  }

  async close(): Promise<void> {
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.stdin!.end();
    await exited;
  }
}

const pct = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;

/** Calls/s over the union of the runs' wall time, with p50/p99 over every latency. */
function summarize(runs: Timed[]): { perS: number; p50: number; p99: number } {
  const lat = runs.flatMap((r) => r.lat).sort((a, b) => a - b);
  const ms = Math.max(...runs.map((r) => r.t1)) - Math.min(...runs.map((r) => r.t0));
  return { perS: rate(lat.length, ms), p50: pct(lat, 50), p99: pct(lat, 99) };
}

function nodeConfig(id: string, dataDir: string, dbs: string[], processorUrl: string): string {
  const shards =
    dbs.length === 1
      ? [{ name: 's0', url: pgUrlFor(dbs[0]!) }]
      : [
          { name: 's0', url: pgUrlFor(dbs[0]!), from: '0', to: '8' },
          { name: 's1', url: pgUrlFor(dbs[1]!), from: '8' },
        ];
  return JSON.stringify({
    node_id: id,
    data_dir: dataDir,
    http: { port: 0 },
    grpc: { enabled: false },
    logging: { level: 'warn' },
    // Three nodes over two databases stay within PostgreSQL's default 100 connections.
    storage: { dialect: 'postgres', durability: 'strict', pool_size: 6, shards },
    bus: { topics: ['bench'] },
    machines: {
      namespaces: {
        http: { processor: { url: processorUrl }, history_range: { direction: 'backward', limit: 1 } },
        local: { processor: { in_process: 'bench' }, history_range: { direction: 'backward', limit: 1 } },
      },
    },
  });
}

const ids = (prefix: string, from: number, to: number): string[] =>
  Array.from({ length: to - from }, (_, i) => `${prefix}${from + i}`);

/** Splits 100 machines between the loaded nodes. */
function split(prefix: string, n: number): string[][] {
  return Array.from({ length: n }, (_, k) =>
    ids(prefix, Math.floor((MACHINES * k) / n), Math.floor((MACHINES * (k + 1)) / n)),
  );
}

async function measureCase(
  loaded: Child[],
  ns: string,
  prefix: string,
  label: string,
  rows: string[][],
): Promise<{ calls: number; raw: number }> {
  const parts = split(prefix, loaded.length);
  await Promise.all(loaded.map((c, k) => c.send({ op: 'start', ns, ids: parts[k] })));
  const per = (total: number, k: number) => Math.floor(total / loaded.length) + (k < total % loaded.length ? 1 : 0);
  await Promise.all(loaded.map((c, k) => c.send({ op: 'calls', ns, ids: parts[k], total: per(WARMUP, k) })));
  const raw = summarize(
    await Promise.all(
      loaded.map((c, k) =>
        c.send<Timed>({ op: 'raw', total: per(CALLS, k), concurrency: parts[k]!.length, tag: `${label}-${k}` }),
      ),
    ),
  );
  const calls = summarize(
    await Promise.all(loaded.map((c, k) => c.send<Timed>({ op: 'calls', ns, ids: parts[k], total: per(CALLS, k) }))),
  );
  rows.push([
    label,
    String(CALLS),
    fmtRate(calls.perS),
    calls.p50.toFixed(1),
    calls.p99.toFixed(1),
    fmtRate(raw.perS),
    raw.p50.toFixed(1),
    (calls.perS / raw.perS).toFixed(2),
  ]);
  return { calls: calls.perS, raw: raw.perS };
}

export async function run(): Promise<void> {
  const processor = new Child('cluster-processor.ts', []);
  const { url } = (await processor.ready()) as { url: string };
  const rows: string[][] = [];
  const foRows: string[][] = [];
  const notes: string[] = [];
  try {
    if (PARTS.includes('cluster')) {
      const dbs = [await createPgDatabase(), await createPgDatabase()];
      const scratch = scratchDir();
      const nodes: Child[] = [];
      try {
        const startNode = async (id: string) => {
          const c = new Child('cluster-node.ts', [nodeConfig(id, scratch.dir, dbs, url)]);
          await c.ready();
          nodes.push(c);
        };
        await startNode('node-a');
        const alone = await measureCase([nodes[0]!], 'http', 'alone-', '2 shards, 1 node, HTTP processor', rows);
        await startNode('node-b');
        await startNode('node-c');
        // Let the new processes finish starting (module loading, first polls) before measuring beside them.
        await new Promise((r) => setTimeout(r, 3000));
        // The idle peers' own cost, apart from drift (the databases grow, the
        // machine's state changes run to run): the same load with the peers
        // running and with them frozen (SIGSTOP: their sessions stay, their
        // work stops), interleaved twice.
        const freeze = (sig: 'SIGSTOP' | 'SIGCONT') => {
          for (const n of nodes.slice(1)) n.proc.kill(sig);
        };
        const running: Array<{ calls: number; raw: number }> = [];
        const frozen: Array<{ calls: number; raw: number }> = [];
        for (let round = 1; round <= 2; round++) {
          running.push(
            await measureCase(
              [nodes[0]!],
              'http',
              `peers${round}-`,
              `2 shards, 3 nodes, load on 1 (2 idle peers), round ${round}`,
              rows,
            ),
          );
          freeze('SIGSTOP');
          try {
            frozen.push(
              await measureCase(
                [nodes[0]!],
                'http',
                `frozen${round}-`,
                `2 shards, 3 nodes, load on 1 (2 peers frozen), round ${round}`,
                rows,
              ),
            );
          } finally {
            freeze('SIGCONT');
          }
        }
        const mean = (xs: Array<{ calls: number; raw: number }>) => ({
          calls: xs.reduce((a, x) => a + x.calls, 0) / xs.length,
          raw: xs.reduce((a, x) => a + x.raw, 0) / xs.length,
        });
        const peers = mean(running);
        const still = mean(frozen);
        const all = await measureCase(nodes, 'http', 'all-', '2 shards, 3 nodes, load on all 3', rows);
        // The lone node again once its peers are gone: the 3-node cases are
        // compared with the mean of the two lone runs.
        for (const n of nodes.splice(1)) await n.close();
        const again = await measureCase([nodes[0]!], 'http', 'again-', '2 shards, 1 node again (peers stopped)', rows);
        const lone = mean([alone, again]);
        notes.push(
          `idle peers running / frozen (interleaved): calls/s ${(peers.calls / still.calls).toFixed(2)} (raw appends ${(peers.raw / still.raw).toFixed(2)})`,
          `3-node/1-node calls/s (1 node: mean of the runs before and after): load on one node ${(peers.calls / lone.calls).toFixed(2)} (raw appends ${(peers.raw / lone.raw).toFixed(2)}); ` +
            `load on all three ${(all.calls / lone.calls).toFixed(2)} (raw appends ${(all.raw / lone.raw).toFixed(2)})`,
        );
      } finally {
        for (const n of nodes) await n.close();
        for (const db of dbs) await dropPgDatabase(db);
        scratch.cleanup();
      }
    }
    if (PARTS.includes('failover')) {
      const dbs = [await createPgDatabase(), await createPgDatabase()];
      const scratch = scratchDir();
      const nodes = new Map<string, Child>();
      try {
        const startNode = async (id: string): Promise<Child> => {
          const c = new Child('cluster-node.ts', [nodeConfig(id, scratch.dir, dbs, url)]);
          await c.ready();
          nodes.set(id, c);
          return c;
        };
        for (const id of ['node-a', 'node-b', 'node-c']) await startNode(id);
        await new Promise((r) => setTimeout(r, 3000));
        const parts = split('fo-', 3);
        const all = parts.flat();
        await Promise.all([...nodes.values()].map((c, k) => c.send({ op: 'start', ns: 'http', ids: parts[k] })));
        /** CALLS calls spread over `loaded`, each driving its share of `machines`, one caller per machine. */
        // With BENCH_FAILOVER_PUBS=1, each loaded node also publishes to the bus (ids, 20 callers) during each phase.
        const withPubs = process.env.BENCH_FAILOVER_PUBS === '1';
        let pubTag = 0;
        const phase = async (label: string, loaded: Child[], machines: string[][]): Promise<number> => {
          const per = (k: number) => Math.floor(CALLS / loaded.length) + (k < CALLS % loaded.length ? 1 : 0);
          const pubs = withPubs
            ? Promise.all(
                loaded.map((c, k) =>
                  c.sendBeside<Timed>({ op: 'pubs', total: per(k), concurrency: 20, tag: `p${pubTag++}` }),
                ),
              )
            : undefined;
          const r = summarize(
            await Promise.all(
              loaded.map((c, k) => c.sendBeside<Timed>({ op: 'calls', ns: 'http', ids: machines[k], total: per(k) })),
            ),
          );
          const p = pubs ? summarize(await pubs) : undefined;
          foRows.push([
            label,
            String(CALLS),
            fmtRate(r.perS),
            r.p50.toFixed(1),
            r.p99.toFixed(1),
            p ? fmtRate(p.perS) : '-',
            p ? p.p50.toFixed(1) : '-',
          ]);
          return r.perS;
        };
        const [a, b, c] = [nodes.get('node-a')!, nodes.get('node-b')!, nodes.get('node-c')!];
        await Promise.all(
          [a, b, c].map((n, k) => n.send({ op: 'calls', ns: 'http', ids: parts[k], total: Math.ceil(WARMUP / 3) })),
        );
        const before = await phase('failover: 3 nodes, before kill -9 of A', [a, b, c], parts);
        // A is killed under load: its in-flight calls hold their machines' leases (deadline + margin).
        void a.sendBeside({ op: 'calls', ns: 'http', ids: parts[0], total: CALLS * 10 });
        if (withPubs) void a.sendBeside({ op: 'pubs', total: CALLS * 10, concurrency: 20, tag: 'dying' });
        await new Promise((r) => setTimeout(r, 1000));
        const exited = new Promise((r) => a.proc.once('exit', r));
        a.proc.kill('SIGKILL');
        await exited;
        nodes.delete('node-a');
        // A's callers move to B and C.
        const survivors = [all.filter((_, i) => i % 2 === 0), all.filter((_, i) => i % 2 === 1)];
        const during = await phase('failover: A dead, its machines called through B and C', [b, c], survivors);
        const during2 = await phase('failover: A dead, second run', [b, c], survivors);
        const back = await startNode('node-a');
        const backAt = Date.now();
        const after = await phase('failover: A back, load on all 3 again (starts at once)', [back, b, c], parts);
        const afterMs = Date.now() - backAt;
        const after2 = await phase('failover: A back, second run', [back, b, c], parts);
        notes.push(
          `failover (calls/s as a ratio to before the kill): while A is dead ${(during / before).toFixed(2)} then ${(during2 / before).toFixed(2)} (target >= 0.6); ` +
            `after A is back ${(after / before).toFixed(2)} (first run, started as A served, ended ${(afterMs / 1000).toFixed(1)} s after) then ${(after2 / before).toFixed(2)} (target >= 0.9)`,
        );
      } finally {
        for (const n of nodes.values()) await n.close();
        for (const db of dbs) await dropPgDatabase(db);
        scratch.cleanup();
      }
    }
    if (PARTS.includes('single')) {
      const db = await createPgDatabase();
      const scratch = scratchDir();
      const node = new Child('cluster-node.ts', [nodeConfig('single', scratch.dir, [db], url)]);
      try {
        await node.ready();
        const local = await measureCase([node], 'local', 'local-', '1 database, 1 node, in-process processor', rows);
        const http = await measureCase([node], 'http', 'http-', '1 database, 1 node, HTTP processor', rows);
        notes.push(
          `single node: in-process ${fmtRate(local.calls)} calls/s (target 3,000), HTTP ${fmtRate(http.calls)} calls/s (target 2,000)`,
        );
      } finally {
        await node.close();
        await dropPgDatabase(db);
        scratch.cleanup();
      }
    }
  } finally {
    await processor.close();
  }
  if (rows.length)
    printTable(
      [
        'case (100 machines, 1 event per call)',
        'calls',
        'calls/s',
        'p50 ms',
        'p99 ms',
        'log appends/s',
        'log p50 ms',
        'ratio',
      ],
      rows,
    );
  if (foRows.length)
    printTable(
      ['failover phase (100 machines)', 'calls', 'calls/s', 'p50 ms', 'p99 ms', 'bus publishes/s', 'publish p50 ms'],
      foRows,
    );
  for (const n of notes) process.stdout.write(`${n}\n`);
}
