import { Counter, Gauge } from 'prom-client';
import type { Face, FaceDefinition } from '../face.js';
import type { Runtime } from '../runtime.js';
import { Machines, type MachinesOptions } from './machines.js';
import { Sinks } from './sink.js';
import { EXAMPLE_PROCESSORS } from './examples.js';
import { machinesSpec } from './spec.js';

export class MachinesFace implements Face {
  readonly name = 'machines';
  readonly machines: Machines;
  readonly sinks: Sinks;

  constructor(rt: Runtime, opts: MachinesOptions = {}) {
    // The example processors only when the config asks for them (the quick start does; production does not).
    const processors = rt.config.machines.examples
      ? new Map([...EXAMPLE_PROCESSORS, ...(opts.processors ?? [])])
      : opts.processors;
    this.machines = new Machines(rt, processors === undefined ? opts : { ...opts, processors });
    this.sinks = new Sinks(rt, () => this.machines.namespacesInEffect);
    // Registered at construction so timers due during downtime find their handler as soon as the scheduler runs.
    this.machines.registerTimers();
    const stats = this.machines.leaseStats;
    const counter = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers: [rt.metrics],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    counter(
      'millrace_machine_steps_on_kept_lease_total',
      'Machine steps that ran on the lease kept from their last commit (no lease round trip)',
      () => stats.kept,
    );
    counter(
      'millrace_machine_leases_taken_total',
      'Machine leases taken with a statement (free, expired or renewed)',
      () => stats.taken,
    );
    counter(
      'millrace_machine_lease_asks_total',
      'Times this node asked its peers for a machine lease one of them held',
      () => stats.asked,
    );
    counter(
      'millrace_machine_leases_given_up_total',
      'Kept machine leases this node gave up because a peer asked',
      () => stats.givenUp,
    );
    counter(
      'millrace_machine_leases_from_ended_nodes_total',
      'Machine leases this node took at once from a node whose process had ended',
      () => stats.fromDead,
    );
    const history = this.machines.historyStats;
    counter(
      'millrace_machine_history_events_from_memory_total',
      'History events handed to steps and GETs from the machine cache',
      () => history.fromMemory,
    );
    counter(
      'millrace_machine_history_events_from_log_total',
      'History events steps and GETs read from the log (not in the machine cache)',
      () => history.fromLog,
    );
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: [rt.metrics],
        collect() {
          this.set(read());
        },
      });
    gauge(
      'millrace_machine_cache_machines',
      'Machines whose state (and history window) this node keeps in memory',
      () => this.machines.cacheStats.machines,
    );
    gauge(
      'millrace_machine_history_cache_bytes',
      'Estimated bytes of the history windows in the machine cache (bounded by machines.history_cache_mb)',
      () => this.machines.cacheStats.bytes,
    );
  }

  async start(): Promise<void> {
    await this.machines.open();
  }

  async stop(): Promise<void> {
    await this.machines.stop();
  }
}

/** The machines face, for `BUILT_IN_FACES` or `startNode({faces})`. */
export const machinesFace: FaceDefinition = { ...machinesSpec, create: (rt) => new MachinesFace(rt) };

/** A machines face with in-process processors given by name. */
export const machinesFaceWith = (opts: MachinesOptions): FaceDefinition => ({
  ...machinesSpec,
  create: (rt) => new MachinesFace(rt, opts),
});
