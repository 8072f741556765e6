import { sleep } from '../core/clock.js';
import { isMillraceError, MillraceError } from '../core/errors.js';
import { sha1, shardKeyText } from '../core/routing.js';
import type { Runtime } from '../runtime.js';
import type { Tx } from '../storage/port.js';
import { ownsForWrite, readState } from '../storage/routing-state.js';
import type { Shard, Storage } from '../storage/storage.js';

/**
 * The pipe while a shard split moves sessions: a session lives on the shard
 * whose range holds SHA-1 of its id, and that range can move (see
 * storage/split.ts and split-mover.ts).
 */

/** A write refused because the session's range is moving or has moved: nothing was written; retry. */
export function shardMoved(shard: string): MillraceError {
  return new MillraceError('shard_moved', `shard ${shard} no longer owns, or is cutting over, this session; retry`, {
    retryAfterS: 1,
    details: { shard },
  });
}

/**
 * Runs `fn` again while its answer is `moved` or it throws `shard_moved`
 * (the routing is re-read in between), for at most `withinMs`; then gives
 * the last answer. For writes the node makes on its own behalf (a handler's
 * verdict, a failed push), which no client would retry.
 */
export async function untilRouted<T>(
  rt: Runtime,
  withinMs: number,
  fn: () => Promise<T>,
  moved: (r: T) => boolean,
): Promise<T> {
  const until = Date.now() + Math.max(withinMs, 5_000);
  for (;;) {
    try {
      const r = await fn();
      if (!moved(r) || Date.now() >= until) return r;
    } catch (err) {
      if (!isMillraceError(err, 'shard_moved') || Date.now() >= until) throw err;
    }
    await rt.storage.refreshRouting();
    await sleep(20);
  }
}

/** Whether `shard` (by name) is where routing finds the session now: rows a split left behind on its source are not. */
export function routedHere(storage: Storage, shard: string, id: string): boolean {
  return !storage.guarded || storage.ownerOf(sha1(shardKeyText(id))).shard.name === shard;
}

/**
 * In a write transaction on a shard (its routing state read under the
 * transaction's lock, as every routed write does): the ids of `ids` the
 * shard may write, that is owns and is not fencing for a split.
 */
export async function writableIn(storage: Storage, tx: Tx, ids: readonly string[]): Promise<Set<string>> {
  if (!storage.guarded) return new Set(ids);
  const state = await readState(tx);
  if (state === undefined) return new Set(ids);
  return new Set(ids.filter((id) => ownsForWrite(state, sha1(shardKeyText(id)))));
}

/**
 * In a transaction on a shard: whether its routing state still holds the
 * session's hash in a range, fenced or not (undefined: no routing state).
 * Once a split released the range, the target owns the session.
 */
export async function heldIn(tx: Tx, id: string): Promise<boolean | undefined> {
  const state = await readState(tx);
  if (state === undefined) return undefined;
  const h = sha1(shardKeyText(id));
  return state.ranges.some((r) => h >= r.from && h < r.to);
}

/** Whether `shard`'s routing state (as stored now) owns the session's hash in a range that is not fenced. */
export async function ownedUnfenced(shard: Shard, id: string): Promise<boolean> {
  const state = await readState(shard.reader);
  return state !== undefined && ownsForWrite(state, sha1(shardKeyText(id)));
}
