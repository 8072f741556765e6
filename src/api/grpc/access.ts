import type { Server, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { permissionDenied, type Access } from '../../auth/access.js';
import { grpcRule, isOpenRule, noLookup, requiredPermissions, type PermissionRule, type Rule } from '../../auth/permissions.js';
import { MillraceError } from '../../core/errors.js';
import { holds, type Principal } from '../../core/principal.js';
import { toGrpcError } from './errors.js';

const GUARD = Symbol('millrace.access');

/**
 * The access decision of one call: its principal, and the check of each
 * message of a stream whose messages name their own resources (a stream's
 * handler calls it; unary calls are checked whole before their handler runs).
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

/** The guard the access layer attached to a call. A call without one is refused (it did not pass the edge). */
export function callGuard(call: object): CallGuard {
  const g = (call as { [GUARD]?: CallGuard })[GUARD];
  if (g === undefined) throw new MillraceError('internal', 'this call did not pass the access check');
  return g;
}

function guardFor(principal: Principal, rule: Rule | undefined, access: Access): CallGuard {
  const perMessage = rule !== undefined && !isOpenRule(rule) && rule.perMessage === true ? rule : null;
  const needs = (r: PermissionRule, message: unknown, sync: boolean) => {
    const input = { params: {}, query: {}, body: message };
    if (!sync) return requiredPermissions(r, input, access.lookup);
    const rs = r.resources?.(input, noLookup);
    if (rs instanceof Promise) throw new MillraceError('internal', `${r.permission}: resources need a look-up; use checkAsync`);
    const out = rs === undefined ? [r.permission] : rs.map((x) => `${r.permission}:${x}`);
    return [...out, ...(r.also?.(input) ?? [])];
  };
  const refuseMissing = (list: string[]) => {
    for (const need of list) if (!holds(principal, need)) throw permissionDenied(need, principal);
  };
  return {
    principal,
    active: perMessage !== null && access.enabled,
    check: (message) => {
      if (perMessage === null || !access.enabled) return;
      refuseMissing(needs(perMessage, message, true) as string[]);
    },
    checkAsync: async (message) => {
      if (perMessage === null || !access.enabled) return;
      refuseMissing(await needs(perMessage, message, false));
    },
  };
}

type AnyCall = {
  metadata: { get(key: string): unknown[] };
  request?: unknown;
  cancelled?: boolean;
  emit(ev: string, ...a: unknown[]): boolean;
};
type Handler = (call: AnyCall, cb?: (err: unknown, ...rest: unknown[]) => void) => void;

/**
 * A view of the server whose addService puts the access check in front of
 * every handler: authentication from the `authorization` metadata (gRPC
 * UNAUTHENTICATED), then the permission table (PERMISSION_DENIED). A unary
 * request is checked whole; a stream checked message by message needs the
 * permission on some resource to open, then each message is checked by its
 * handler through `callGuard(call)`. A method missing from the table is
 * refused to everyone when authentication is on.
 */
export function guardedServer(server: Server, access: Access): Server {
  const view = Object.create(server) as Server;
  view.addService = (def: ServiceDefinition, impl: UntypedServiceImplementation) => {
    const wrapped: UntypedServiceImplementation = {};
    for (const [name, fn] of Object.entries(impl)) {
      const m = def[name];
      if (m === undefined) continue;
      const handler = fn as unknown as Handler;
      const rule = grpcRule(m.path);
      const unaryAnswer = !m.responseStream;
      wrapped[name] = ((call: AnyCall, cb?: (err: unknown, ...rest: unknown[]) => void) => {
        const refuse = (err: unknown) => {
          const e = toGrpcError(err);
          if (unaryAnswer && cb) cb(e);
          else call.emit('error', e);
        };
        const header = call.metadata.get('authorization')[0];
        void (async () => {
          const principal = await access.authenticate(typeof header === 'string' ? header : undefined);
          if (rule !== undefined && !isOpenRule(rule) && rule.perMessage === true) {
            if (access.enabled) access.authorizeCall(principal, rule);
          } else {
            await access.authorize(principal, rule, { params: {}, query: {}, body: call.request ?? null }, m.path);
          }
          (call as unknown as { [GUARD]: CallGuard })[GUARD] = guardFor(principal, rule, access);
        })().then(
          () => {
            if (!call.cancelled) handler(call, cb);
          },
          refuse,
        );
      }) as unknown as UntypedServiceImplementation[string];
    }
    server.addService(def, wrapped);
  };
  return view;
}
