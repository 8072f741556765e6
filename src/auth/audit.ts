/**
 * The audit trail: sensitive actions (definition changes, token creation and
 * revocation, repair, simple repair, remove, redrive, dead-letter deletion,
 * subscription deletion — the rules with `audit` in the permission table) are
 * written to the log, in the stream `millrace.audit`, so they are ordered and
 * hash-chained like every other event: a changed or removed audit event breaks
 * the chain (`millrace verify`).
 *
 * Each audited request writes two events, tied by `request_id`:
 * `audit.requested` before the action runs (after authorization), committed
 * before the handler starts, so no audited action takes effect without its
 * record; and `audit.completed` with the answer's status once the handler is
 * done, before the answer is sent. A crash between the action and the second
 * event leaves a `requested` event without its `completed`: the action may or
 * may not have taken effect (read the resource to know).
 */
import type { Log, LogEvent } from '../log/log.js';
import type { Principal } from '../core/principal.js';
import type { SplitMover } from '../storage/split-mover.js';

export const AUDIT_STREAM = 'millrace.audit';

/** A shard split moves the audit stream (routed by its own name) with its history when its hash is in the moved range. */
export const AUDIT_SPLIT_MOVER: SplitMover = {
  kind: 'audit',
  keyOfStream: (stream) => (stream === AUDIT_STREAM ? stream : undefined),
  copyRows: () => Promise.resolve(0),
  dropRows: () => Promise.resolve(0),
};

export interface AuditEntry {
  /** `admin`, `token:<id>`, `jwt:<sub>`, `cert:<subject>`, or `open` when authentication is off. */
  principal: string;
  /** What was done, e.g. `machine.repair` (the table's `audit`). */
  action: string;
  /** The resource acted on: the request path (e.g. `/v1/namespaces/pay/machines/m1/repair`). */
  resource: string;
  /** The permissions the request was checked for. */
  permissions: string[];
  method: string;
  request_id: string;
  /** `completed` only: the HTTP status answered. */
  status?: number;
}

export interface AuditRecord extends AuditEntry {
  phase: 'requested' | 'completed';
  /** seq in the audit stream: the cursor of `list`. */
  seq: number;
  shard: string;
  pos: number | null;
  at: string;
}

export class AuditTrail {
  constructor(private readonly log: Log) {}

  /** Appends one audit event (its own transaction), resolving once it is committed. */
  async record(phase: 'requested' | 'completed', e: AuditEntry): Promise<void> {
    await this.log.append(AUDIT_STREAM, [{ type: `audit.${phase}`, data: e }]);
  }

  /** Audit events after `after` (a seq), oldest first. */
  async list(after: number, limit: number): Promise<AuditRecord[]> {
    const events = await this.log.read(AUDIT_STREAM, { after, limit, direction: 'forward' });
    return events.map(toRecord);
  }

  static principalId(p: Principal | undefined): string {
    return p?.id ?? 'open';
  }
}

function toRecord(ev: LogEvent): AuditRecord {
  const d = JSON.parse(ev.data) as AuditEntry;
  return {
    phase: ev.type === 'audit.completed' ? 'completed' : 'requested',
    seq: ev.seq,
    shard: ev.shard,
    pos: ev.pos,
    at: new Date(ev.createdAt).toISOString(),
    principal: d.principal,
    action: d.action,
    resource: d.resource,
    permissions: d.permissions,
    method: d.method,
    request_id: d.request_id,
    ...(d.status === undefined ? {} : { status: d.status }),
  };
}
