import { sleep } from '../core/clock.js';
import { isMillraceError } from '../core/errors.js';
import { sha1, shardKeyText } from '../core/routing.js';
import type { Tx } from './port.js';
import { ownsForWrite, readState } from './routing-state.js';
import type { Storage } from './storage.js';

/**
 * Where a timer stands once shard splits can move its key, judged in a
 * write transaction on the timer's own shard (its routing state read under
 * that transaction's lock, as routed writes read it):
 * - `own`: the shard owns the key, unfenced: act.
 * - `leftover`: the shard no longer holds the key's range and the shard that
 *   routing names owns it, unfenced: a split's source copy of the timer (the
 *   target fires its own); drop it without acting.
 * - `wait`: the range is cutting over (fenced on the source, not yet owned by
 *   the target) or this node's routing is behind: fire again shortly.
 */
export type TimerPlace = 'own' | 'leftover' | 'wait';

export async function timerPlaceIn(
  storage: Storage,
  tx: Tx,
  timerShard: string,
  key: readonly string[] | string,
): Promise<TimerPlace> {
  if (!storage.guarded) return 'own';
  const state = await readState(tx);
  if (state === undefined) return 'own';
  const h = sha1(shardKeyText(key));
  if (ownsForWrite(state, h)) return 'own';
  if (state.ranges.some((r) => h >= r.from && h < r.to)) return 'wait';
  const owner = storage.ownerOf(h);
  if (owner.fenced || owner.shard.name === timerShard) return 'wait';
  const there = await readState(owner.shard.reader);
  return there !== undefined && ownsForWrite(there, h) ? 'leftover' : 'wait';
}

/**
 * Runs `fn` (a write routed by key, such as a timer's action on another
 * entity) again while it is refused with `shard_moved` (nothing was
 * written), re-reading the routing in between, for at most `withinMs`.
 */
export async function whileMoved<T>(storage: Storage, fn: () => Promise<T>, withinMs = 30_000): Promise<T> {
  const until = Date.now() + withinMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isMillraceError(err, 'shard_moved') || Date.now() >= until) throw err;
    }
    await storage.refreshRouting();
    await sleep(20);
  }
}
