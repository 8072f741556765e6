import { MillraceError } from '../core/errors.js';

interface Turn {
  waiting: Array<() => void>;
}

/**
 * One step at a time per machine on this node, with bounds: a request that
 * would wait behind `queueLimit` others, or start a machine beyond
 * `maxActive`, or arrive while the process is above its memory limit, is
 * refused with `unavailable` before anything is done. A request waiting for
 * its turn is answered `deadline_exceeded` when its wait budget runs out,
 * leaving the queue at once (its slot is free for the next request).
 */
export class MachineQueues {
  private readonly turns = new Map<string, Turn>();

  constructor(private readonly opts: { queueLimit: number; maxActive: number; memoryLimitMb: number }) {}

  get active(): number {
    return this.turns.size;
  }

  /** Whether a step of the key runs (or waits) on this node. */
  busy(key: string): boolean {
    return this.turns.has(key);
  }

  /** Runs `fn` in the key's turn; `waitMs` bounds the wait for the turn (not `fn` itself). */
  async run<T>(key: string, fn: () => Promise<T>, waitMs = Infinity): Promise<T> {
    if (this.opts.memoryLimitMb > 0 && process.memoryUsage.rss() > this.opts.memoryLimitMb * 1024 * 1024) {
      throw new MillraceError('unavailable', 'the node is above its memory limit', { retryAfterS: 1 });
    }
    let turn = this.turns.get(key);
    if (turn === undefined) {
      if (this.turns.size >= this.opts.maxActive)
        throw new MillraceError('unavailable', 'too many machines in progress on this node', { retryAfterS: 1 });
      turn = { waiting: [] };
      this.turns.set(key, turn);
    } else {
      if (turn.waiting.length >= this.opts.queueLimit)
        throw new MillraceError('unavailable', 'too many requests waiting for this machine', { retryAfterS: 1 });
      if (waitMs <= 0)
        throw new MillraceError(
          'deadline_exceeded',
          'the request deadline passed before the machine could be processed',
        );
      const t = turn;
      await new Promise<void>((resolve, reject) => {
        if (!Number.isFinite(waitMs)) {
          t.waiting.push(resolve);
          return;
        }
        const wake = (): void => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          const at = t.waiting.indexOf(wake);
          if (at >= 0) t.waiting.splice(at, 1);
          reject(
            new MillraceError(
              'deadline_exceeded',
              'the request deadline passed while it waited behind another step of the machine',
            ),
          );
        }, waitMs);
        t.waiting.push(wake);
      });
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
