/**
 * How a node re-runs a request refused `shard_moved` (its key's hash range
 * moved, or is moving, in a shard split; nothing was written): it re-reads
 * routing and runs the request again, up to MOVED_RETRIES runs with waits of
 * 25 ms doubling to 400 ms between (about 2 s in all), so that a request
 * reaching a node during a cut-over is answered by the new owner. Used by
 * both transports (HTTP: every route; gRPC: unary methods).
 */
import { MillraceError } from './errors.js';

export const MOVED_RETRIES = 8;
const BASE_MS = 25;
const MAX_MS = 400;

/** The wait before run `attempt + 1`. */
export function movedRetryDelayMs(attempt: number): number {
  return Math.min(MAX_MS, BASE_MS * 2 ** (attempt - 1));
}

/** A `shard_moved` refusal: a MillraceError, or one already turned into a gRPC status (its `error-code` trailer). */
export function isShardMoved(err: unknown): boolean {
  if (err instanceof MillraceError) return err.code === 'shard_moved';
  const md = (err as { metadata?: { get?: (k: string) => unknown[] } } | null)?.metadata;
  return typeof md?.get === 'function' && md.get('error-code')[0] === 'shard_moved';
}
