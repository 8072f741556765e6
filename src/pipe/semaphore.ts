/** A FIFO counting semaphore: per-kind push concurrency on this node. */
export class Semaphore {
  private active = 0;
  private readonly waiters: Array<() => void> = [];
  constructor(readonly limit: number) {}
  get waiting(): number {
    return this.waiters.length;
  }
  /** Wakes every waiter (each then holds a permit it must release): used on stop so no one waits forever. */
  wakeAll(): void {
    for (const w of this.waiters.splice(0)) {
      this.active++;
      w();
    }
  }
  async acquire(): Promise<() => void> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiters.push(r));
    else this.active++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiters.shift();
      if (next) next();
      else this.active--;
    };
  }
}
