import { MillraceError } from '../core/errors.js';

interface Turn {
  waiting: Array<() => void>;
}

/**
 * One step at a time per machine on this node, with bounds: a request that
 * would wait behind `queueLimit` others, or start a machine beyond
 * `maxActive`, or arrive while the process is above its memory limit, is
 * refused with `unavailable` before anything is done.
 */
export class MachineQueues {
  private readonly turns = new Map<string, Turn>();

  constructor(private readonly opts: { queueLimit: number; maxActive: number; memoryLimitMb: number }) {}

  get active(): number {
    return this.turns.size;
  }

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    if (this.opts.memoryLimitMb > 0 && process.memoryUsage.rss() > this.opts.memoryLimitMb * 1024 * 1024) {
      throw new MillraceError('unavailable', 'the node is above its memory limit', { retryAfterS: 1 });
    }
    let turn = this.turns.get(key);
    if (turn === undefined) {
      if (this.turns.size >= this.opts.maxActive) throw new MillraceError('unavailable', 'too many machines in progress on this node', { retryAfterS: 1 });
      turn = { waiting: [] };
      this.turns.set(key, turn);
    } else {
      if (turn.waiting.length >= this.opts.queueLimit) throw new MillraceError('unavailable', 'too many requests waiting for this machine', { retryAfterS: 1 });
      const t = turn;
      await new Promise<void>((resolve) => t.waiting.push(resolve));
    }
    try {
      return await fn();
    } finally {
      const next = turn.waiting.shift();
      if (next) next();
      else this.turns.delete(key);
    }
  }
}

/** A size-bounded map evicting the least recently used entry. */
export class Lru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly max: number) {}

  get(k: K): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }

  set(k: K, v: V): void {
    if (this.max === 0) return;
    this.map.delete(k);
    this.map.set(k, v);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K);
  }

  delete(k: K): void {
    this.map.delete(k);
  }

  get size(): number {
    return this.map.size;
  }
}
