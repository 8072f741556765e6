import type { Server, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { canonicalSubject, permissionDenied, type Access } from '../../auth/access.js';
import {
  grpcRule,
  isOpenRule,
  noLookup,
  requiredPermissions,
  type PermissionRule,
  type Rule,
} from '../../auth/permissions.js';
import { sleep } from '../../core/clock.js';
import { MillraceError } from '../../core/errors.js';
import { isShardMoved, MOVED_RETRIES, movedRetryDelayMs } from '../../core/moved-retry.js';
import { holds, type Principal } from '../../core/principal.js';
import { toGrpcError } from './errors.js';
import { attachGuard, type CallGuard } from './call-guard.js';

function guardFor(principal: Principal, rule: Rule | undefined, access: Access): CallGuard {
  const perMessage = rule !== undefined && !isOpenRule(rule) && rule.perMessage === true ? rule : null;
  const needs = (r: PermissionRule, message: unknown, sync: boolean) => {
    const input = { params: {}, query: {}, body: message };
    if (!sync) return requiredPermissions(r, input, access.lookup);
    const rs = r.resources?.(input, noLookup);
    if (rs instanceof Promise)
      throw new MillraceError('internal', `${r.permission}: resources need a look-up; use checkAsync`);
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

/** The canonical subject of the call's verified client certificate (the server requires and checks it when configured). */
function peerSubject(call: AnyCall): string | null {
  const cert = call.getAuthContext?.()?.sslPeerCertificate;
  return cert?.subject === undefined ? null : canonicalSubject(cert.subject as unknown as Record<string, string>);
}

type AnyCall = {
  getAuthContext?: () => { sslPeerCertificate?: { subject?: unknown } } | null;
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
export function guardedServer(server: Server, access: Access, refreshRouting?: () => Promise<void>): Server {
  const view = Object.create(server) as Server;
  view.addService = (def: ServiceDefinition, impl: UntypedServiceImplementation) => {
    const wrapped: UntypedServiceImplementation = {};
    for (const [name, fn] of Object.entries(impl)) {
      const m = def[name];
      if (m === undefined) continue;
      const handler = fn as unknown as Handler;
      const rule = grpcRule(m.path);
      const unaryAnswer = !m.responseStream;
      // A unary call refused `shard_moved` (nothing written) runs again against re-read routing (see moved-retry.ts).
      const rerunnable = unaryAnswer && !m.requestStream && refreshRouting !== undefined;
      wrapped[name] = ((call: AnyCall, cb?: (err: unknown, ...rest: unknown[]) => void) => {
        const refuse = (err: unknown) => {
          const e = toGrpcError(err);
          if (unaryAnswer && cb) cb(e);
          else call.emit('error', e);
        };
        const header = call.metadata.get('authorization')[0];
        void (async () => {
          const principal = await access.authenticate(
            typeof header === 'string' ? header : undefined,
            peerSubject(call),
          );
          access.limit(principal);
          if (rule !== undefined && !isOpenRule(rule) && rule.perMessage === true) {
            if (access.enabled) access.authorizeCall(principal, rule);
          } else {
            await access.authorize(principal, rule, { params: {}, query: {}, body: call.request ?? null }, m.path);
          }
          attachGuard(call, guardFor(principal, rule, access));
        })().then(() => {
          if (call.cancelled) return;
          if (!rerunnable || cb === undefined) return handler(call, cb);
          const run = (attempt: number): void =>
            handler(call, (err: unknown, ...rest: unknown[]) => {
              if (err == null || !isShardMoved(err) || attempt >= MOVED_RETRIES || call.cancelled)
                return cb(err, ...rest);
              refreshRouting!()
                .then(() => sleep(movedRetryDelayMs(attempt)))
                .then(
                  () => run(attempt + 1),
                  // Routing could not be re-read: the refusal is the answer (retryable).
                  () => cb(err, ...rest),
                );
            });
          run(1);
        }, refuse);
      }) as unknown as UntypedServiceImplementation[string];
    }
    server.addService(def, wrapped);
  };
  return view;
}
