import type { Logger } from 'pino';
import { MillraceError } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { BusConfig } from '../bus/config.js';
import { Exporter } from './exporter.js';
import { Ingress, type IngressPublish } from './ingress.js';

/**
 * The URL with an AMQP heartbeat of about half the role lease (unless the
 * URL sets one): a frozen node sends none, so the broker closes its
 * connection after two missed beats and hands the messages it held unacked
 * to the other nodes' consumers, within about `role_lease_ms`.
 */
export function withHeartbeat(url: string, roleLeaseMs: number): string {
  try {
    const u = new URL(url);
    if (!u.searchParams.has('heartbeat'))
      u.searchParams.set('heartbeat', String(Math.max(1, Math.floor(roleLeaseMs / 2000))));
    return u.toString();
  } catch {
    return url;
  }
}

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

  private amqpUrl(url?: string): string {
    return withHeartbeat(url ?? this.config.rabbitmq.url, this.rt.config.cluster.role_lease_ms);
  }

  /** Starts ingress and exporters as configured; a binding to an unknown topic is config_invalid. */
  async start(topics: ReadonlySet<string>): Promise<void> {
    const ingress = this.config.rabbitmq.ingress;
    if (ingress) {
      for (const b of ingress.bindings) {
        if (!topics.has(b.topic))
          throw new MillraceError(
            'config_invalid',
            `bus.rabbitmq.ingress.bindings: topic "${b.topic}" is not in bus.topics`,
          );
      }
      this.ingress = new Ingress(
        this.publish,
        { ...ingress, url: this.amqpUrl(ingress.url) },
        this.amqpUrl(),
        this.logger,
      );
      await this.ingress.start();
    }
    for (const x of this.config.exporters) {
      const e = new Exporter(this.rt, { ...x, url: this.amqpUrl(x.url) }, this.amqpUrl(), this.logger);
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
