/**
 * A level-triggered wake-up for background loops: a wake that arrives while
 * the loop is busy is remembered, so the next `sleep` returns at once instead
 * of missing it.
 */
export class Waker {
  private pending = false;
  private resolve: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;

  wake = (): void => {
    this.pending = true;
    this.finish();
  };

  /** Resolves on the next wake (or a pending one), or after `ms`. */
  sleep(ms: number): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.resolve = resolve;
      this.timer = setTimeout(() => this.finish(), Math.max(0, ms));
    });
  }

  private finish(): void {
    const r = this.resolve;
    if (r === undefined) return;
    this.resolve = undefined;
    this.pending = false;
    clearTimeout(this.timer);
    r();
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function sleepUnless(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal.addEventListener('abort', done, { once: true });
  });
}
