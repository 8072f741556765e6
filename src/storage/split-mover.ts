import type { Config } from '../core/config.js';
import type { DialectName, Queryable, Tx } from './port.js';

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
  ): Promise<number>;
  /** Deletes the source's rows of keys in range, in the source's transaction. */
  dropRows(source: Tx, inRange: (key: readonly string[] | string) => boolean): Promise<number>;
  /**
   * Optional: the mover for a node's configuration, where shard keys depend
   * on it (the ledger's configured types); the runtime hands the splitter this.
   */
  configured?(config: Config): SplitMover;
}
