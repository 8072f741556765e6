import { isMillraceError } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import type { PipeConfig } from './config.js';
import {
  runExcept,
  runPlan,
  type CreateOp,
  type DeleteOp,
  type LaneOp,
  type Outcome,
  type StoreOp,
  type WriteOp,
} from './lane.js';
import { deleteCond, deliveryCond, SQL } from './pipe-sql.js';
import { TIMER_LEASE, TIMER_REDELIVER, timerKey } from './session-id.js';
import type { KindConfigOf } from './types.js';

/** true at the first operation on each session: a later one in the same run finds it already stored or gone. */
function firstOfEach(ops: ReadonlyArray<{ id: string }>): boolean[] {
  const seen = new Set<string>();
  return ops.map((o) => !seen.has(o.id) && (seen.add(o.id), true));
}

type Touched = Map<string, { now: number; ok: boolean; seqs: Set<number> }>;

/**
 * Session writes inside a shard's transaction: a lane job's operations
 * (create, append, replace, store, delete) and the session's timer as it
 * comes back. Expected refusals are returned, never thrown, so they never
 * make the group committer re-run a batch.
 */
export class SessionWrites {
  constructor(
    private readonly rt: Runtime,
    private readonly config: PipeConfig,
    private readonly kindConfig: KindConfigOf,
  ) {}

  private get ttlMs(): number {
    return this.config.session_ttl_s * 1000;
  }

  /**
   * Applies a lane job's operations, each session's in arrival order; one
   * outcome per operation. Safe to run again after a rollback. Where ranges
   * can move, each session's key is checked against the shard's routing
   * state in this transaction: an operation on a session the shard no
   * longer owns, or is fencing for a split, is `moved` (nothing written;
   * the caller retries by the new table) while the others go on.
   */
  async applyIn(tx: Tx, shard: Shard, ops: readonly LaneOp[]): Promise<Outcome[]> {
    const moved = await this.movedIn(tx, shard, ops);
    return runExcept<LaneOp, Outcome>(ops, moved, 'moved', (kept) =>
      runPlan(kept, (run) => this.applyRun(tx, shard, run)),
    );
  }

  /** Ids of the operations' sessions that `shard` may not write now (see applyIn). */
  private async movedIn(tx: Tx, shard: Shard, ops: readonly LaneOp[]): Promise<Set<string>> {
    const moved = new Set<string>();
    const storage = this.rt.storage;
    if (!storage.guarded) return moved;
    const base = shard.base;
    const seen = new Set<string>();
    for (const o of ops) {
      if (seen.has(o.id)) continue;
      seen.add(o.id);
      const view = storage.shardFor(o.id);
      if (view.name !== base.name || view.route === undefined) {
        moved.add(o.id);
        continue;
      }
      try {
        await storage.checkRoute(tx, base, view.route);
      } catch (err) {
        if (!isMillraceError(err, 'shard_moved')) throw err;
        moved.add(o.id);
      }
    }
    return moved;
  }

  /** Applies operations in the order given: runs of one kind together. */
  private async applyRun(tx: Tx, shard: Shard, ops: readonly LaneOp[]): Promise<Outcome[]> {
    const out: Outcome[] = [];
    const bulk = shard.driver.capabilities.bulkArrayParams;
    let i = 0;
    while (i < ops.length) {
      const o = ops[i]!;
      if (o.type === 'create') {
        let j = i;
        while (j < ops.length && ops[j]!.type === 'create') j++;
        await this.createManyIn(tx, ops.slice(i, j) as CreateOp[], bulk);
        for (let k = i; k < j; k++) out.push('done');
        i = j;
      } else if (bulk && (o.type === 'store' || o.type === 'delete')) {
        // Bulk: a run of stores (or of deletes) in a few statements, not a few per session.
        let j = i;
        while (j < ops.length && ops[j]!.type === o.type) j++;
        const run = ops.slice(i, j);
        out.push(
          ...(o.type === 'store'
            ? await this.storeManyIn(tx, run as StoreOp[])
            : await this.deleteManyIn(tx, run as DeleteOp[])),
        );
        i = j;
      } else if (o.type === 'store') {
        out.push((await this.storeIn(tx, o.id, o.due, o.now, o.delivery)) ? 'done' : 'refused');
        i++;
      } else if (o.type === 'delete') {
        out.push((await this.deleteIn(tx, o.id, o.delivery)) ? 'done' : 'refused');
        i++;
      } else {
        let j = i;
        while (j < ops.length && (ops[j]!.type === 'append' || ops[j]!.type === 'replace')) j++;
        out.push(...(await this.writeIn(tx, shard, ops.slice(i, j) as WriteOp[], bulk)));
        i = j;
      }
    }
    return out;
  }

  /** Runs a batch of writes in order; one outcome per write. Safe to run again after a rollback. */
  private async writeIn(tx: Tx, shard: Shard, ops: readonly WriteOp[], bulk: boolean): Promise<Outcome[]> {
    // Every session written in the batch: still writable? (and its lease clock moves).
    const sessions: Touched = new Map();
    for (const o of ops) {
      const s = sessions.get(o.id);
      if (s === undefined) sessions.set(o.id, { now: o.now, ok: false, seqs: new Set() });
      else if (o.now > s.now) s.now = o.now;
    }
    if (bulk && !ops.some((o) => o.type === 'replace')) return this.writeInBulk(tx, ops, sessions);
    // Sorted, so that two batches on two writer connections lock sessions in one order.
    const oneWriter = shard.driver.capabilities.singleWriter;
    for (const id of [...sessions.keys()].sort()) {
      const s = sessions.get(id)!;
      if (oneWriter) {
        // One writer: a read is enough to know the session is writable, and only
        // sessions kept alive by writes (no owner) need touched_at moved.
        const r = await tx.all<{ free: number }>(SQL.writableFree, [id]);
        s.ok = r.length === 1;
        if (s.ok && Number(r[0]!.free) === 1) await tx.run(SQL.touch, [s.now, id]);
      } else {
        // Several writers: the UPDATE's row lock orders this write against a concurrent close of the session.
        s.ok = (await tx.run(SQL.touchWritable, [s.now, id])) === 1;
      }
    }
    const out: Outcome[] = [];
    for (const o of ops) {
      if (!sessions.get(o.id)!.ok) {
        out.push('refused');
        continue;
      }
      if (o.type === 'replace') {
        if (o.seq !== undefined && (await tx.all(SQL.recordSeqExists, [o.id, o.seq])).length > 0) {
          out.push('duplicate');
          continue;
        }
        await tx.run(SQL.deleteRecords, [o.id]);
      }
      const n = await tx.run(SQL.insertRecord, [o.id, o.seq ?? null, o.record]);
      out.push(n === 0 ? 'duplicate' : 'written');
    }
    return out;
  }

  /**
   * Bulk, appends only: the whole batch in one statement (one round trip
   * instead of two per record). A seq repeated inside the batch is settled
   * here: only its first write is sent.
   */
  private async writeInBulk(tx: Tx, ops: readonly WriteOp[], sessions: Touched): Promise<Outcome[]> {
    const out: Outcome[] = new Array<Outcome>(ops.length);
    const ids: string[] = [];
    const seqs: Array<number | null> = [];
    const data: Buffer[] = [];
    const idxOf: number[] = [];
    for (let i = 0; i < ops.length; i++) {
      const o = ops[i]!;
      if (o.seq !== undefined) {
        const seen = sessions.get(o.id)!.seqs;
        if (seen.has(o.seq)) {
          out[i] = 'duplicate';
          continue;
        }
        seen.add(o.seq);
      }
      ids.push(o.id);
      seqs.push(o.seq ?? null);
      data.push(o.record);
      idxOf.push(i);
    }
    const touched = [...sessions.keys()].sort();
    const rows = await tx.all<{ ok: string[] | null; written: string[] | null }>(SQL.appendBulk, [
      touched,
      touched.map((id) => sessions.get(id)!.now),
      ids,
      seqs,
      data,
    ]);
    const ok = new Set(rows[0]?.ok ?? []);
    const written = new Set(rows[0]?.written ?? []);
    for (let j = 0; j < idxOf.length; j++) {
      const i = idxOf[j]!;
      const o = ops[i]!;
      out[i] = !ok.has(o.id)
        ? 'refused'
        : o.seq === undefined || written.has(`${o.id}:${o.seq}`)
          ? 'written'
          : 'duplicate';
    }
    for (let i = 0; i < ops.length; i++) if (out[i] === 'duplicate' && !ok.has(ops[i]!.id)) out[i] = 'refused';
    return out;
  }

  /** One new open session with its lease timer. */
  async insertSessionIn(tx: Tx, id: string, kind: string, owner: string | null, now: number): Promise<void> {
    await tx.run(SQL.insertSession, [id, kind, owner, now, now]);
    await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_LEASE, now + this.ttlMs);
  }

  /** New sessions: one multi-row INSERT per 200 where round trips cost (bulk), else one each. */
  private async createManyIn(tx: Tx, ops: readonly CreateOp[], bulk: boolean): Promise<void> {
    const ttl = this.ttlMs;
    if (!bulk) {
      for (const o of ops) await this.insertSessionIn(tx, o.id, o.kind, o.owner, o.now);
      return;
    }
    for (let off = 0; off < ops.length; off += 200) {
      const chunk = ops.slice(off, off + 200);
      await tx.run(
        SQL.insertSessions(chunk.length),
        chunk.flatMap((o) => [o.id, o.kind, o.owner, o.now, o.now]),
      );
    }
    await this.rt.scheduler.scheduleManyIn(
      tx,
      ops.map((o) => ({ owner: timerKey(o.id), kind: TIMER_LEASE, dueAt: o.now + ttl })),
    );
  }

  /** Bulk: stores a run of sessions with one UPDATE and one statement each for timers. */
  private async storeManyIn(tx: Tx, ops: readonly StoreOp[]): Promise<Outcome[]> {
    const first = firstOfEach(ops);
    const sent = ops.filter((_, k) => first[k]);
    const rows = await tx.all<{ id: string; kind: string }>(SQL.storeBulk, [
      sent.map((o) => o.id),
      sent.map((o) => o.due),
      sent.map((o) => o.now),
      sent.map((o) => o.delivery ?? null),
    ]);
    const kinds = new Map(rows.map((r) => [r.id, r.kind]));
    const timers: Array<{ owner: string; kind: string; dueAt: number; payload: string }> = [];
    const parked: string[] = [];
    for (const o of sent) {
      const kind = kinds.get(o.id);
      if (kind === undefined) continue;
      if (this.kindConfig(kind)?.handler === undefined) parked.push(o.id);
      else timers.push({ owner: timerKey(o.id), kind: TIMER_REDELIVER, dueAt: o.due, payload: kind });
    }
    // Cancel first so the new timers get new ids: ties in due time go in the order sessions were stored.
    await this.rt.scheduler.cancelManyIn(tx, [...kinds.keys()].map(timerKey));
    if (parked.length > 0) await tx.run(SQL.parkMany, [parked]);
    await this.rt.scheduler.scheduleManyIn(tx, timers);
    return ops.map((o, k) => (first[k] && kinds.has(o.id) ? 'done' : 'refused'));
  }

  /** Bulk: deletes a run of sessions, their records and timers, in three statements. */
  private async deleteManyIn(tx: Tx, ops: readonly DeleteOp[]): Promise<Outcome[]> {
    const first = firstOfEach(ops);
    const sent = ops.filter((_, k) => first[k]);
    const rows = await tx.all<{ id: string }>(SQL.deleteBulk, [
      sent.map((o) => o.id),
      sent.map((o) => o.delivery ?? null),
    ]);
    const gone = new Set(rows.map((r) => r.id));
    if (gone.size > 0) {
      await tx.run(SQL.deleteRecordsMany, [[...gone]]);
      await this.rt.scheduler.cancelManyIn(tx, [...gone].map(timerKey));
    }
    return ops.map((o, k) => (first[k] && gone.has(o.id) ? 'done' : 'refused'));
  }

  /** `delivery`: only while that delivery (its repeats count) is the current one. */
  private async storeIn(tx: Tx, id: string, due: number, now: number, delivery?: number): Promise<boolean> {
    const [cond, extra] = deliveryCond(delivery);
    const rows = await tx.all<{ kind: string }>(SQL.store(cond), [due, now, id, ...extra]);
    if (!rows[0]) return false;
    await this.comeBackIn(tx, id, rows[0].kind, due, true);
    return true;
  }

  private async deleteIn(tx: Tx, id: string, delivery?: number): Promise<boolean> {
    const [cond, extra] = deleteCond(delivery);
    if ((await tx.run(SQL.deleteSession(cond), [id, ...extra])) === 0) return false;
    await tx.run(SQL.deleteRecords, [id]);
    await this.rt.scheduler.cancelIn(tx, timerKey(id));
    return true;
  }

  /** Sets the session's timer to bring it back at `due` (or parks it if its kind has no handler). */
  async comeBackIn(tx: Tx, id: string, kind: string, due: number, parkedCleared = false): Promise<void> {
    // Cancel first so the new timer gets a new id: ties in due time go in the order sessions were stored.
    await this.rt.scheduler.cancelIn(tx, timerKey(id));
    if (this.kindConfig(kind)?.handler === undefined) {
      await tx.run(SQL.park, [id]);
      return;
    }
    if (!parkedCleared) await tx.run(SQL.unparkOne, [id]);
    await this.rt.scheduler.scheduleIn(tx, timerKey(id), TIMER_REDELIVER, due, kind);
  }
}
