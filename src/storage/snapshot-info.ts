/** What a shard's copy holds, read from the copy (SQLite) or in the dump's snapshot (PostgreSQL). */
export interface ShardSnapshotInfo {
  /** Highest position in the copy (0 for an empty log). */
  head: number;
  /** Hash of the event at `head` (hex). */
  headHash: string | null;
  /** Numbered events in the copy. */
  events: number;
  /** The pruning checkpoint in the copy (position 0: nothing pruned from the start). */
  checkpoint: { pos: number; hash: string | null };
}
