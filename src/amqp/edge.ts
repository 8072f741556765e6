import type { Logger } from 'pino';
import { MillraceError } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { BusConfig } from '../bus/config.js';
import { Exporter } from './exporter.js';
import { Ingress, type IngressPublish } from './ingress.js';

/**
 * The RabbitMQ edge of the bus: ingress (exchange -> topics) and exporters
 * (log -> exchange). Wired beside the bus, not inside it: ingress gets only a
 * publish function, exporters only the runtime's cursors.
 */
export class AmqpEdge {
  ingress: Ingress | null = null;
  private readonly exporters: Exporter[] = [];

  constructor(
    private readonly rt: Runtime,
    private readonly config: BusConfig,
    private readonly publish: IngressPublish,
    private readonly logger: Logger = rt.logger,
  ) {}

  /** Starts ingress and exporters as configured; a binding to an unknown topic is config_invalid. */
  async start(topics: ReadonlySet<string>): Promise<void> {
    const ingress = this.config.rabbitmq.ingress;
    if (ingress) {
      for (const b of ingress.bindings) {
        if (!topics.has(b.topic)) throw new MillraceError('config_invalid', `bus.rabbitmq.ingress.bindings: topic "${b.topic}" is not in bus.topics`);
      }
      this.ingress = new Ingress(this.publish, ingress, this.config.rabbitmq.url, this.logger);
      await this.ingress.start();
    }
    for (const x of this.config.exporters) {
      const e = new Exporter(this.rt, x, this.config.rabbitmq.url, this.logger);
      await e.start();
      this.exporters.push(e);
    }
  }

  async stop(): Promise<void> {
    await this.ingress?.stop();
    this.ingress = null;
    for (const e of this.exporters.splice(0)) await e.stop();
  }
}
