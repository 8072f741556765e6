import type { z } from 'zod';
import type { ErrorCodeTable } from './core/error-codes.js';
import type { Migration } from './storage/port.js';
import type { SplitMover } from './storage/split-mover.js';

/**
 * What a face declares to the runtime, before it is built: its tables, its
 * error codes and its section of the config file. Plain data: a face's
 * `spec.ts` imports only its migrations, error table and config schema.
 */
export interface FaceSpec {
  readonly name: string;
  /** Its tables: applied after the core's, in the order of the runtime's faces (forward-only, ids prefixed with the face name). */
  readonly migrations: readonly Migration[];
  /** Its error codes. `core/errors.ts` maps every code to its statuses; the runtime refuses a face whose codes are not mapped there. */
  readonly errors: ErrorCodeTable;
  /** Its section of the config file: the key and the schema that parses it (composed into the config schema in `core/config.ts`). */
  readonly config: { readonly key: string; readonly schema: z.ZodType };
  /** What a shard split moves of its rows with their keys (a face without keyed rows or streams has none). */
  readonly splitMover?: SplitMover;
}
