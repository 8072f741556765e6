import type { Queryable } from '../storage/port.js';

/**
 * Ledger event ids drawn ahead from the shard's sequence, in blocks, outside
 * any write transaction (a sequence never hands a value out twice, whatever
 * happens to the transaction or the process; unused ids are only a gap). A
 * write that knows its ids before it runs can insert its events and the log
 * events that name them in one statement.
 */
export class IdBlocks {
  private ids: number[] = [];
  private refill: Promise<void> | undefined;

  constructor(
    private readonly reader: Queryable,
    private readonly sequence: string,
    private readonly block = 1000,
  ) {}

  /** `n` fresh ids, ascending. */
  async take(n: number): Promise<number[]> {
    while (this.ids.length < n) {
      this.refill ??= this.fetch(Math.max(this.block, n - this.ids.length)).finally(() => (this.refill = undefined));
      await this.refill;
    }
    const out = this.ids.splice(0, n);
    // Draw the next block before this one runs out, off the write's path.
    if (this.ids.length < this.block / 2 && this.refill === undefined) {
      // Only draws ahead: if it fails, the next take() that runs short draws again and gets the error.
      this.refill = this.fetch(this.block)
        .catch(() => {})
        .finally(() => (this.refill = undefined));
    }
    return out;
  }

  private async fetch(n: number): Promise<void> {
    const rows = await this.reader.all<{ id: number }>(
      'SELECT nextval(?::regclass) AS id FROM generate_series(1, ?::int)',
      [this.sequence, n],
    );
    for (const r of rows) this.ids.push(Number(r.id));
  }
}
