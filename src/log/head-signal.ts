/**
 * The highest position known to be readable on a shard, and a way to wait for
 * it to move. Fed in-process after commits (SQLite) or after the sequencer
 * numbers rows, and across nodes by LISTEN/NOTIFY.
 */
export class HeadSignal {
  private current = 0;
  private waiters = new Set<{ after: number; resolve: (moved: boolean) => void }>();

  get head(): number {
    return this.current;
  }

  advance(pos: number): void {
    if (pos <= this.current) return;
    this.current = pos;
    for (const w of this.waiters) {
      if (w.after < pos) {
        this.waiters.delete(w);
        w.resolve(true);
      }
    }
  }

  /** Wakes everyone waiting, e.g. when a notification arrives whose position is unknown. */
  poke(): void {
    for (const w of this.waiters) w.resolve(true);
    this.waiters.clear();
  }

  /**
   * Resolves true once the head is beyond `after`, false after `timeoutMs`
   * (callers then look at the database anyway: a missed signal only costs a poll).
   */
  wait(after: number, timeoutMs: number, abort?: AbortSignal): Promise<boolean> {
    if (this.current > after) return Promise.resolve(true);
    if (abort?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const w = {
        after,
        resolve: (moved: boolean) => {
          clearTimeout(timer);
          abort?.removeEventListener('abort', onAbort);
          resolve(moved);
        },
      };
      const onAbort = () => {
        this.waiters.delete(w);
        w.resolve(false);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        w.resolve(false);
      }, timeoutMs);
      abort?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(w);
    });
  }
}
