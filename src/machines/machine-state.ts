import { badRequest, MillraceError } from '../core/errors.js';
import type { TimerContext } from '../scheduler/scheduler.js';
import type { HistoryRange } from './config.js';
import type { MachineState } from './planner.js';
import type { MachineSummary } from './types.js';

/** The rows, keys, names and refusals the parts of the machines face share. */

export const TIMEOUT_KIND = 'machines.timeout';
export const NOTIFY_KIND = 'machines.notify';
export const EVENT_TYPE = 'machine.event';
/** Channel on which a node asks the others for a machine's lease (payload: JSON [ns, id, asking node]). */
export const LEASE_CHANNEL = 'millrace_machine_lease';
/** Fastify refuses path parameters longer than 100 characters, so ids and tags stay within that. */
const ID_MAX = 100;
export const PRINTABLE = /^[^\x00-\x1f\x7f]+$/;
/** The history range of a namespace that names none: every event. */
export const FULL_RANGE: HistoryRange = { direction: 'forward' };

/** The deadline and trace of one step. */
export interface StepContext {
  deadline: number;
  traceparent: string;
}

/** What a step runs for besides its input: the timer it completes, or the stored notification it delivers. */
export interface Hooks {
  timer?: { ctx: TimerContext; range: HistoryRange | null };
  notification?: { nid: number; args: unknown };
}

export interface StepResult {
  skipped?: boolean;
  response?: unknown;
}

/** A machine row as stored. */
export interface Row {
  ns: string;
  id: string;
  gen: number;
  status: string;
  reason: string | null;
  aux_state: string | null;
  last_event: number;
  timer: string | null;
  tags: string;
  version: number;
}

const parseJson = (s: string | null): unknown => (s === null ? null : JSON.parse(s));

export function toState(r: Row): MachineState {
  return {
    ns: r.ns,
    id: r.id,
    gen: Number(r.gen),
    status: r.status as MachineState['status'],
    reason: parseJson(r.reason),
    auxState: parseJson(r.aux_state),
    lastEvent: Number(r.last_event),
    timer: parseJson(r.timer) as MachineState['timer'],
    tags: JSON.parse(r.tags) as string[],
    version: Number(r.version),
  };
}

/** A machine row as a namespace list reads it. */
export interface ListRow {
  id: string;
  status: string;
  reason: string | null;
  last_event: number;
  timer: string | null;
  tags: string;
  updated_at: number;
}

export function summaryOf(r: ListRow): MachineSummary {
  const out: MachineSummary = {
    id: r.id,
    status: r.status === 'failed' ? 'failed' : 'working',
    updated_at: new Date(Number(r.updated_at)).toISOString(),
    events: Number(r.last_event),
    tags: JSON.parse(r.tags) as string[],
  };
  if (r.status === 'failed') {
    const reason = parseJson(r.reason);
    out.reason = typeof reason === 'string' ? reason : JSON.stringify(reason ?? null);
  }
  const timer = parseJson(r.timer) as MachineState['timer'];
  if (timer) out.timer = { at: new Date(timer.dueAt).toISOString() };
  return out;
}

export const emptyState = (ns: string, id: string): MachineState => ({
  ns,
  id,
  gen: 0,
  status: 'none',
  reason: null,
  auxState: null,
  lastEvent: 0,
  timer: null,
  tags: [],
  version: 0,
});

export const streamOf = (ns: string, id: string, gen: number): string => `m/${ns}/${id}/${gen}`;
export const timerOwner = (ns: string, id: string): string => `m:${ns}:${id}`;
export const notifyOwner = (ns: string, id: string): string => `mn:${ns}:${id}`;

/** Raised inside a commit transaction to roll it back. */
export class Abort extends Error {
  constructor(readonly why: 'conflict' | 'timer_gone' | 'tag_taken' | 'notification_gone') {
    super(why);
  }
}

/** The in-memory key of a machine (queues, cache, leases). */
export function key(ns: string, id: string): string {
  return `${ns}\u0000${id}`;
}

export function unkey(k: string): [string, string] {
  const at = k.indexOf('\u0000');
  return [k.slice(0, at), k.slice(at + 1)];
}

export function checkId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || id.length === 0 || id.length > ID_MAX || !PRINTABLE.test(id))
    throw badRequest(`machine id must be 1-${ID_MAX} printable characters`);
}

export function failedError(id: string, reason: unknown): MillraceError {
  return new MillraceError('machine_failed', `machine ${id} failed`, { details: { reason } });
}

/** The error of a step the machine's state refuses (see the planner's `admission`). */
export function refusal(code: string, state: MachineState): MillraceError {
  switch (code) {
    case 'machine_not_found':
      return new MillraceError(code, `no machine ${state.id} in namespace ${state.ns}`);
    case 'machine_already_exists':
      return new MillraceError(code, `machine ${state.id} already exists in namespace ${state.ns}`);
    case 'machine_failed':
      return new MillraceError(code, `machine ${state.id} is failed; repair it first`, {
        details: { reason: state.reason },
      });
    case 'machine_already_working':
      return new MillraceError(code, `machine ${state.id} is working; only a failed machine can be repaired`);
    default:
      return new MillraceError('internal', code);
  }
}
