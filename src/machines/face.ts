import type { Face, FaceFactory } from '../face.js';
import type { Runtime } from '../runtime.js';
import { Machines, type MachinesOptions } from './machines.js';
import { Sinks } from './sink.js';
import './examples.js';

export class MachinesFace implements Face {
  readonly name = 'machines';
  readonly machines: Machines;
  readonly sinks: Sinks;

  constructor(rt: Runtime, opts: MachinesOptions = {}) {
    this.machines = new Machines(rt, opts);
    this.sinks = new Sinks(rt, () => this.machines.namespacesInEffect);
    // Registered at construction so timers due during downtime find their handler as soon as the scheduler runs.
    this.machines.registerTimers();
  }

  async start(): Promise<void> {
    await this.machines.open();
  }

  async stop(): Promise<void> {
    await this.machines.stop();
  }
}

/** The machines face, for `faceFactories` or `startNode({faces})`. */
export const machinesFace: FaceFactory = (rt) => new MachinesFace(rt);

/** A machines face with in-process processors given by name. */
export const machinesFaceWith =
  (opts: MachinesOptions): FaceFactory =>
  (rt) =>
    new MachinesFace(rt, opts);
