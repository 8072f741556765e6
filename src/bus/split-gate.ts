import type { Queryable } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import { readState } from '../storage/routing-state.js';

/**
 * What bus delivery must know of a shard that was a split's target. The
 * moved events stay in the source's log and are also copied into the target
 * (new positions there): the source delivers them, so the target never
 * delivers a position at or below its import horizon. The target's later
 * events of a moved key follow the source's: they are delivered to a
 * subscription only once its position on the source has passed the last
 * moved event (`sourcePos`).
 */
export interface ImportGate {
  id: string;
  source: string;
  /** The source's position of the last moved event (0: nothing to wait for). */
  sourcePos: number;
}

export interface ShardGates {
  /** An import is under way (or its split has not recorded its end): every event here is an import so far. */
  pending: boolean;
  /** Positions at or below this are imports (or anchors): never delivered from this shard. */
  horizon: number;
  /** Imports whose later events wait for the source. */
  gates: ImportGate[];
  /**
   * Nothing here changes any more: the shard owns ranges (a split goes to a
   * shard that owns none, so it is a target no more) and its imports ended.
   */
  final: boolean;
}

/** The gates of a shard, read after the events they are applied to (its ranges first: see `final`). */
export async function readShardGates(shard: Shard): Promise<ShardGates> {
  const state = await readState(shard.reader);
  const rows = await shard.reader.all<{
    id: string;
    source: string;
    source_pos: number | null;
    horizon: number | null;
    aborted: number | null;
  }>(
    `SELECT i.id AS id, i.source AS source, b.source_pos AS source_pos, b.horizon AS horizon, b.aborted AS aborted
       FROM shard_imports i LEFT JOIN bus_split_imports b ON b.id = i.id`,
  );
  let horizon = 0;
  let pending = false;
  const gates: ImportGate[] = [];
  for (const r of rows) {
    if (r.horizon === null) {
      pending = true;
      continue;
    }
    horizon = Math.max(horizon, Number(r.horizon));
    if (Number(r.aborted) === 0 && Number(r.source_pos) > 0)
      gates.push({ id: r.id, source: r.source, sourcePos: Number(r.source_pos) });
  }
  return { pending, horizon, gates, final: !pending && state !== undefined && state.ranges.length > 0 };
}

/** The import horizon of a shard (0: none), for counts that leave imports out (lag, retention losses). */
export async function importHorizon(q: Queryable): Promise<number> {
  const rows = await q.all<{ m: number | null }>('SELECT max(horizon) AS m FROM bus_split_imports');
  return Number(rows[0]?.m ?? 0);
}
