import type { Bus } from '../../src/bus/bus.js';
import type { Delivery, DeliverySession } from '../../src/bus/delivery.js';
import type { PublishEvent } from '../../src/bus/publisher.js';
import { isMillraceError } from '../../src/core/errors.js';
import { parseHashBound, sha1, shardKeyText } from '../../src/core/routing.js';

export const TOPIC = 'orders';

/** Whether [topic, key] hashes at or above the split point (moves). */
export const movesAt = (at: string, key: string): boolean => sha1(shardKeyText([TOPIC, key])) >= parseHashBound(at);

/** Publishes a batch, again with the same ids while it is refused retryably (a range cutting over, a partial store). */
export async function publishRetried(bus: Bus, events: PublishEvent[]): Promise<{ duplicates: number }> {
  let duplicates = 0;
  for (let i = 0; ; i++) {
    try {
      const out = await bus.publish(events);
      duplicates += out.filter((p) => p.duplicate).length;
      return { duplicates };
    } catch (err) {
      if (!isMillraceError(err) || !err.retryable || i > 500) throw err;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

/**
 * A subscriber that acks each delivery in the order it came, at a pace of
 * its own (`delays`, cyclic), and can restart its connection: it stops
 * acking first, so that what it acked is what the session stored, and what
 * it had not acked comes again.
 */
export class PacedSubscriber {
  /** Event ids in the order they were acknowledged. */
  readonly acked: Array<{ id: string; key: string; shard: string; pos: number }> = [];
  /** Every delivery, first or not. */
  deliveries = 0;
  private queue: Delivery[] = [];
  private session: DeliverySession | undefined;
  private loop: Promise<void> = Promise.resolve();
  private stopped = false;
  private wake: (() => void) | undefined;
  private n = 0;

  constructor(
    private readonly bus: Bus,
    readonly name: string,
    private readonly config: Record<string, unknown>,
    private readonly delays: readonly number[],
  ) {}

  async open(): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        this.stopped = false;
        this.queue = [];
        this.session = await this.bus.open(this.name, this.config, {
          deliver: (d) => {
            this.deliveries++;
            this.queue.push(d);
            this.wake?.();
          },
          gap: () => {},
          closed: () => {},
        });
        break;
      } catch (err) {
        // The previous connection's lease is being released, or the subscription's home is cutting over.
        if (!(isMillraceError(err, 'subscription_busy') || (isMillraceError(err) && err.retryable)) || i > 500)
          throw err;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    const session = this.session;
    this.loop = (async () => {
      while (!this.stopped) {
        const d = this.queue.shift();
        if (d === undefined) {
          await new Promise<void>((r) => {
            this.wake = r;
            setTimeout(r, 20);
          });
          continue;
        }
        const ms = this.delays.length === 0 ? 0 : this.delays[this.n++ % this.delays.length]!;
        if (ms > 0) await new Promise((r) => setTimeout(r, ms));
        if (this.stopped) return;
        this.acked.push({ id: d.id, key: d.key, shard: d.shard, pos: d.pos });
        session.ack([d.deliveryId]);
      }
    })();
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    await this.session?.close();
  }

  async restart(): Promise<void> {
    await this.close();
    await this.open();
  }
}

/**
 * The guarantees: every published id acknowledged exactly once, and per key
 * in publish order (`published`: per key, ids in publish order).
 */
export function checkOnceInOrder(
  acked: ReadonlyArray<{ id: string; key: string }>,
  published: ReadonlyMap<string, string[]>,
): void {
  const seen = new Set<string>();
  for (const a of acked) {
    if (seen.has(a.id)) throw new Error(`event ${a.id} was delivered (and acked) twice`);
    seen.add(a.id);
  }
  for (const [key, ids] of published) {
    const got = acked.filter((a) => a.key === key).map((a) => a.id);
    if (JSON.stringify(got) !== JSON.stringify(ids))
      throw new Error(`key ${key}: acked ${JSON.stringify(got)}, published ${JSON.stringify(ids)}`);
  }
  const all = [...published.values()].flat().length;
  if (seen.size !== all) throw new Error(`acked ${seen.size} events, published ${all}`);
}
