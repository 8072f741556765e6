import type { Face, FaceFactory } from '../face.js';
import type { Runtime } from '../runtime.js';
import { Bus } from './bus.js';

/** The bus face: publish, durable subscriptions, RabbitMQ ingress and exporters. */
export class BusFace implements Face {
  readonly name = 'bus';
  readonly bus: Bus;

  constructor(rt: Runtime) {
    this.bus = new Bus(rt);
  }

  start(): Promise<void> {
    return this.bus.start();
  }

  stop(): Promise<void> {
    return this.bus.stop();
  }
}

export const busFace: FaceFactory = (rt) => new BusFace(rt);
