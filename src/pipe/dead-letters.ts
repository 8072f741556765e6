import type { Runtime } from '../runtime.js';
import { deadLetterNotFound } from './errors.js';
import { SQL } from './pipe-sql.js';
import { readSession } from './read-session.js';
import { checkId } from './session-id.js';
import type { SessionWrites } from './session-writes.js';
import type { SessionInfo } from './types.js';

/** Sessions that used up their repeats: read, put back (redrive) or deleted, by id. */
export class DeadLetters {
  constructor(
    private readonly rt: Runtime,
    private readonly writes: SessionWrites,
  ) {}

  async get(id: string): Promise<SessionInfo> {
    checkId(id, deadLetterNotFound);
    const s = await readSession(this.rt.storage.shardFor(id), id);
    if (s === null || s.state !== 'dead') throw deadLetterNotFound(id);
    return s;
  }

  /** Puts a dead session back: stored, due now, with a fresh count of repeats. */
  async redrive(id: string): Promise<void> {
    checkId(id, deadLetterNotFound);
    const now = this.rt.clock.now();
    const ok = await this.rt.storage.shardFor(id).write(async (tx) => {
      const rows = await tx.all<{ kind: string }>(SQL.redrive, [now, now, id]);
      if (!rows[0]) return false;
      await this.writes.comeBackIn(tx, id, rows[0].kind, now);
      return true;
    });
    if (!ok) throw deadLetterNotFound(id);
  }

  async delete(id: string): Promise<void> {
    checkId(id, deadLetterNotFound);
    const ok = await this.rt.storage.shardFor(id).write(async (tx) => {
      if ((await tx.run(SQL.deleteDead, [id])) === 0) return false;
      await tx.run(SQL.deleteRecords, [id]);
      return true;
    });
    if (!ok) throw deadLetterNotFound(id);
  }
}
