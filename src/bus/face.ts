import type { Face, FaceDefinition } from '../face.js';
import type { Runtime } from '../runtime.js';
import { AmqpEdge } from '../amqp/edge.js';
import { Bus } from './bus.js';
import { TopicRetentionSource } from './retention.js';
import { busSpec } from './spec.js';

/** The bus face: publish, durable subscriptions, and beside them the RabbitMQ edge (ingress and exporters). */
export class BusFace implements Face {
  readonly name = 'bus';
  readonly bus: Bus;
  readonly amqp: AmqpEdge;

  constructor(rt: Runtime) {
    this.bus = new Bus(rt);
    rt.pruner.register(new TopicRetentionSource(this.bus, () => rt.clock.now()));
    // Ingress stores into the bus through publish alone (bindings name the topics, so the configured-topic check is skipped).
    this.amqp = new AmqpEdge(rt, this.bus.config, (events) => this.bus.publish(events, { internal: true }));
    // The console's lag chart: the summed lag of the first 100 subscriptions (by name). Counting a lag
    // scans the backlog behind each subscription, so it is read at most every 10 s.
    rt.series.gauge(
      'subscription_lag',
      async () => {
        const page = await this.bus.listSubscriptionInfos({ limit: 100 });
        return page.items.reduce((a, s) => a + s.lag_total, 0);
      },
      10_000,
    );
  }

  async start(): Promise<void> {
    await this.bus.start();
    await this.amqp.start(this.bus.topics);
  }

  async stop(): Promise<void> {
    await this.amqp.stop();
    await this.bus.stop();
  }
}

/** The bus face, for `BUILT_IN_FACES` or `startNode({faces})`. */
export const busFace: FaceDefinition = { ...busSpec, create: (rt) => new BusFace(rt) };
