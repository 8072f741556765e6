import type { RetentionSource } from '../log/pruner.js';
import type { Shard } from '../storage/storage.js';
import type { PipeConfig } from './config.js';

/**
 * Retention of the pipe: dead sessions (past their kind's max_repeats) left
 * untouched for `pipe.dead_max_age_s` are removed with their records, a
 * bounded batch per transaction. (Deleted and finished sessions lose their
 * records in the transaction that deletes them.)
 */
export class DeadSessionRetention implements RetentionSource {
  readonly name = 'pipe';

  constructor(
    private readonly config: PipeConfig,
    private readonly now: () => number,
  ) {}

  active(): boolean {
    return this.config.dead_max_age_s !== undefined;
  }

  async sweep(shard: Shard, limit: number): Promise<number> {
    if (this.config.dead_max_age_s === undefined) return 0;
    const before = this.now() - Math.round(this.config.dead_max_age_s * 1000);
    const rows = await shard.reader.all<{ id: string }>(
      "SELECT id FROM pipe_sessions WHERE state = 'dead' AND touched_at < ? ORDER BY id LIMIT ?",
      [before, limit],
    );
    if (rows.length === 0) return 0;
    const ids = rows.map((r) => r.id);
    const marks = ids.map(() => '?').join(', ');
    return shard.write(async (tx) => {
      // The condition again: a session redriven meanwhile is not dead any more.
      const gone = await tx.all<{ id: string }>(
        `DELETE FROM pipe_sessions WHERE id IN (${marks}) AND state = 'dead' AND touched_at < ? RETURNING id`,
        [...ids, before],
      );
      if (gone.length > 0)
        await tx.run(
          `DELETE FROM pipe_records WHERE session_id IN (${gone.map(() => '?').join(', ')})`,
          gone.map((g) => g.id),
        );
      return gone.length;
    });
  }
}
