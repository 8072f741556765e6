import { Counter } from 'prom-client';
import type { Face } from '../face.js';
import type { Runtime } from '../runtime.js';
import { MachinesFace } from '../machines/face.js';
import { BusFace } from '../bus/face.js';
import { PipeFace } from '../pipe/face.js';
import { Schedules, type ScheduleHooks } from './schedules.js';
import { BulkJobs } from './bulk.js';
import { PauseControl } from './pause-control.js';

const PRUNE_KIND = 'ops.prune_notification_keys';
/** Notification keys are needed while a fire may still be retried; a day is far beyond that. */
const KEY_KEEP_MS = 86_400_000;

/**
 * Operations over the other faces: schedules, bulk jobs, pause and resume. Built over the
 * faces this node serves (it acts through them, never around them).
 */
export class OpsFace implements Face {
  readonly name = 'ops';
  readonly schedules: Schedules;
  readonly bulk: BulkJobs;
  readonly pauses: PauseControl;
  /** Whether the node serves machines (whose notification keys the prune timer removes). */
  private readonly withMachines: boolean;

  constructor(
    readonly rt: Runtime,
    faces: readonly Face[],
    hooks: ScheduleHooks = {},
  ) {
    const machines = faces.find((f): f is MachinesFace => f instanceof MachinesFace)?.machines;
    this.withMachines = machines !== undefined;
    const bus = faces.find((f): f is BusFace => f instanceof BusFace)?.bus;
    const pipe = faces.find((f): f is PipeFace => f instanceof PipeFace)?.pipe;
    this.schedules = new Schedules(rt, { machines, bus }, hooks);
    this.bulk = new BulkJobs(rt, { machines, pipe });
    this.pauses = new PauseControl(rt, { machines, bus, pipe });
    // Registered at construction so fires due during downtime find their handler as soon as the scheduler runs.
    this.schedules.registerTimers();
    this.bulk.registerTimers();
    const fires = this.schedules.stats;
    new Counter({
      name: 'millrace_schedule_fires_total',
      help: 'Schedule fires this node stored, by status (pending, buffered, skipped, missed when recorded; done, failed, interrupted when finished)',
      labelNames: ['status'],
      registers: [rt.metrics],
      collect() {
        this.reset();
        for (const [status, n] of fires) this.inc({ status }, n);
      },
    });
    const bulk = this.bulk.stats;
    new Counter({
      name: 'millrace_bulk_targets_total',
      help: 'Targets of bulk jobs this node acted on, by outcome',
      labelNames: ['outcome'],
      registers: [rt.metrics],
      collect() {
        this.reset();
        for (const [outcome, n] of Object.entries(bulk)) this.inc({ outcome }, n);
      },
    });
  }

  async start(): Promise<void> {
    await this.schedules.applyConfig(this.rt.config.schedules as Record<string, unknown>);
    // Notification keys are machines' tables: a node without the machines face has none to prune.
    if (!this.withMachines) return;
    await this.rt.scheduler.periodic(PRUNE_KIND, 3_600_000, async () => {
      const cutoff = this.rt.clock.now() - KEY_KEEP_MS;
      for (const s of this.rt.storage.shards)
        await s.write((tx) => tx.run('DELETE FROM machine_notification_keys WHERE created_at < ?', [cutoff]));
    });
  }

  async stop(): Promise<void> {}
}
