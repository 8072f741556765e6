import type { DialectName, Queryable, Tx } from './port.js';

/** The split a mover works for: its job id and the names of its shards. */
export interface SplitContext {
  id: string;
  source: string;
  target: string;
}

/**
 * What a face moves with its keys when a shard is split (declared in its
 * `FaceSpec`; the runtime hands every face's mover of the build to the
 * splitter).
 */
export interface SplitMover {
  readonly kind: string;
  /** Its tables exist on a shard where a migration whose id starts with this was applied (no tables: undefined). */
  readonly migrationPrefix?: string;
  /** The shard key of a log stream of this face, or undefined if the stream is not its. */
  keyOfStream(stream: string): readonly string[] | string | undefined;
  /**
   * Makes the target's rows of keys in range equal to the source's (replace:
   * the target's rows of those keys are deleted first), in the target's
   * transaction; returns how many rows were copied.
   */
  copyRows(
    source: Queryable,
    target: Tx,
    inRange: (key: readonly string[] | string) => boolean,
    dialect: DialectName,
    split?: SplitContext,
  ): Promise<number>;
  /** Deletes the source's rows of keys in range, in the source's transaction. */
  dropRows(source: Tx, inRange: (key: readonly string[] | string) => boolean): Promise<number>;
  /**
   * Optional: the mover for the face's own config section (as the face's
   * schema parsed it), where shard keys depend on it (the ledger's configured
   * types); the runtime hands the splitter this.
   */
  configured?(section: unknown): SplitMover;
  /**
   * Optional: in the target's transaction that makes it own the range (every
   * imported event is on the target and numbered; nothing else is there yet).
   * Runs again if a crash cut the split off after that transaction: it must
   * keep what an earlier run recorded.
   */
  onSwitch?(target: Tx, split: SplitContext, dialect: DialectName): Promise<void>;
  /** Optional: in a target's transaction, before a fenced split is aborted (the imported events stay there, owned by no one). */
  onAbort?(target: Tx, split: SplitContext, dialect: DialectName): Promise<void>;
}
