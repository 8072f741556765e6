import { MillraceError } from '../../core/errors.js';
import type { Principal } from '../../core/principal.js';

const GUARD = Symbol('millrace.access');

/**
 * The access decision of one call: its principal, and the check of each
 * message of a stream whose messages name their own resources (a stream's
 * handler calls it; unary calls are checked whole before their handler runs).
 * Kept apart from the access layer so that service code (and the clients
 * that share its types) need not load it.
 */
export interface CallGuard {
  readonly principal: Principal;
  /** Whether messages are checked at all (authentication on, and the method's rule checks per message). */
  readonly active: boolean;
  /** Throws `permission_denied` unless the message's resources are granted (resources read without look-ups). */
  check(message: unknown): void;
  /** The same, for rules whose resources need a look-up (a pipe session's kind). */
  checkAsync(message: unknown): Promise<void>;
}

export function attachGuard(call: object, guard: CallGuard): void {
  (call as { [GUARD]?: CallGuard })[GUARD] = guard;
}

/** The guard the access layer attached to a call. A call without one is refused (it did not pass the edge). */
export function callGuard(call: object): CallGuard {
  const g = (call as { [GUARD]?: CallGuard })[GUARD];
  if (g === undefined) throw new MillraceError('internal', 'this call did not pass the access check');
  return g;
}
