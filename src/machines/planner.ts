/**
 * The machine step, free of I/O: what a machine may be asked in its state,
 * and which commit a processor result turns into. The face feeds it a state
 * and a result and carries out the plan it returns.
 */
import type { HistoryRange } from './config.js';

export type MachineStatus = 'working' | 'failed' | 'none';

export interface TimerState {
  /** Due time, ms since the epoch. */
  dueAt: number;
  /** History range the timeout signal asks for (null: the namespace's). */
  range: HistoryRange | null;
}

/** What the machine row holds (the history lives on the log). */
export interface MachineState {
  ns: string;
  id: string;
  /** Incarnation: a removed and re-started machine gets a fresh history under a new one. */
  gen: number;
  status: MachineStatus;
  reason: unknown;
  auxState: unknown;
  /** Id of the last event (0: none yet). */
  lastEvent: number;
  timer: TimerState | null;
  tags: string[];
  /** Optimistic-commit version of the row (0: no row). */
  version: number;
}

export type Signal = { type: 'init'; args: unknown } | { type: 'timeout' } | { type: 'notification'; args: unknown };

export type StepInput =
  { kind: 'signal'; signal: Signal } | { kind: 'call'; args: unknown } | { kind: 'repair'; args: unknown };

export type TimerChange = 'keep' | 'unset' | TimerState;

export type Plan =
  | {
      kind: 'commit';
      events: unknown[];
      /** undefined: keep the current aux state. */
      auxState: unknown;
      timer: TimerChange;
      tag: string | undefined;
      remove: boolean;
      response: unknown;
    }
  /** The processor failed or answered nonsense: the machine becomes failed. */
  | { kind: 'fail'; reason: unknown }
  /** A repair the processor refused: nothing changes. */
  | { kind: 'repair_failed'; reason: unknown };

/** Refusals before the processor is asked, as error codes; null when the step may run. */
export function admission(
  state: MachineState,
  input: StepInput,
): 'machine_already_exists' | 'machine_not_found' | 'machine_failed' | 'machine_already_working' | 'skip' | null {
  const exists = state.status !== 'none';
  if (input.kind === 'signal') {
    if (input.signal.type === 'init') return exists ? 'machine_already_exists' : null;
    // Timers and notifications wait while the machine is failed; they vanish with it.
    return state.status === 'working' ? null : 'skip';
  }
  if (!exists) return 'machine_not_found';
  if (input.kind === 'call') return state.status === 'failed' ? 'machine_failed' : null;
  return state.status === 'working' ? 'machine_already_working' : null;
}

const RESULT_KEYS = new Set(['response', 'events', 'aux_state', 'action']);
const ACTION_KEYS = new Set(['timer', 'tag', 'remove']);
const RANGE_KEYS = new Set(['after', 'limit', 'direction']);
export const TAG_MAX = 100;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Checks a processor result and turns it into a plan. `now` resolves relative timer timeouts. */
export function planStep(state: MachineState, input: StepInput, result: unknown, now: number): Plan {
  const fail = (why: string): Plan => ({ kind: 'fail', reason: { code: 'bad_processor_result', message: why } });
  if (!isObject(result)) return fail('the processor result must be a JSON object');
  if (input.kind === 'repair' && 'repair_failed' in result) {
    const rf = result.repair_failed;
    if (!isObject(rf) || Object.keys(result).length !== 1)
      return fail('repair_failed must be the only key and an object {reason}');
    return { kind: 'repair_failed', reason: rf.reason ?? null };
  }
  for (const k of Object.keys(result))
    if (!RESULT_KEYS.has(k)) return fail(`unknown key "${k}" in the processor result`);
  const events = result.events ?? [];
  if (!Array.isArray(events)) return fail('events must be an array');
  let timer: TimerChange = 'keep';
  let tag: string | undefined;
  let remove = false;
  if (result.action !== undefined) {
    const action = result.action;
    if (!isObject(action)) return fail('action must be an object');
    for (const k of Object.keys(action)) if (!ACTION_KEYS.has(k)) return fail(`unknown key "${k}" in action`);
    if (action.timer !== undefined) {
      const t = parseTimer(action.timer, now);
      if (typeof t === 'string' && t !== 'unset') return fail(t);
      timer = t as TimerChange;
    }
    if (action.tag !== undefined) {
      if (
        typeof action.tag !== 'string' ||
        action.tag.length === 0 ||
        action.tag.length > TAG_MAX ||
        /[\x00-\x1f]/.test(action.tag)
      ) {
        return fail(`action.tag must be a string of 1-${TAG_MAX} printable characters`);
      }
      if (!state.tags.includes(action.tag)) tag = action.tag;
    }
    if (action.remove !== undefined) {
      if (action.remove !== true) return fail('action.remove must be true when present');
      remove = true;
    }
  }
  return { kind: 'commit', events, auxState: result.aux_state, timer, tag, remove, response: result.response ?? null };
}

// The answer is a TimerChange, or a string that says what is wrong ('unset' is checked for first).
// eslint-disable-next-line @typescript-eslint/no-redundant-type-constituents
function parseTimer(t: unknown, now: number): TimerChange | string {
  if (t === 'unset') return 'unset';
  if (!isObject(t)) return 'action.timer must be "unset" or {set, range?}';
  for (const k of Object.keys(t)) if (k !== 'set' && k !== 'range') return `unknown key "${k}" in action.timer`;
  const set = t.set;
  if (!isObject(set)) return 'action.timer.set must be {timeout: seconds} or {deadline: RFC 3339}';
  let dueAt: number;
  const keys = Object.keys(set);
  if (keys.length !== 1) return 'action.timer.set takes exactly one of timeout, deadline';
  if ('timeout' in set) {
    if (typeof set.timeout !== 'number' || !Number.isFinite(set.timeout) || set.timeout < 0)
      return 'action.timer.set.timeout must be a non-negative number of seconds';
    dueAt = now + Math.round(set.timeout * 1000);
  } else if ('deadline' in set) {
    const d = typeof set.deadline === 'string' ? parseRfc3339(set.deadline) : null;
    if (d === null) return 'action.timer.set.deadline must be an RFC 3339 date-time';
    dueAt = d;
  } else return 'action.timer.set takes exactly one of timeout, deadline';
  let range: HistoryRange | null = null;
  if (t.range !== undefined) {
    const r = parseRange(t.range);
    if (typeof r === 'string') return `action.timer.range: ${r}`;
    range = r;
  }
  return { dueAt, range };
}

/** Validates a history range given as JSON; returns a message when it is wrong. */
export function parseRange(r: unknown): HistoryRange | string {
  if (!isObject(r)) return 'a history range must be an object {after?, limit?, direction?}';
  for (const k of Object.keys(r)) if (!RANGE_KEYS.has(k)) return `unknown key "${k}"`;
  const out: HistoryRange = { direction: 'forward' };
  if (r.after !== undefined && r.after !== null) {
    if (!Number.isInteger(r.after) || (r.after as number) < 1) return 'after must be an event id (integer >= 1)';
    out.after = r.after as number;
  }
  if (r.limit !== undefined && r.limit !== null) {
    if (!Number.isInteger(r.limit) || (r.limit as number) < 1 || (r.limit as number) > 100_000)
      return 'limit must be an integer from 1 to 100000';
    out.limit = r.limit as number;
  }
  if (r.direction !== undefined) {
    if (r.direction !== 'forward' && r.direction !== 'backward') return 'direction must be "forward" or "backward"';
    out.direction = r.direction;
  }
  return out;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

export function parseRfc3339(s: string): number | null {
  if (!RFC3339.test(s)) return null;
  const t = Date.parse(s);
  return Number.isFinite(t) ? t : null;
}

/**
 * Event ids a range selects, as [from, to] inclusive in the order given,
 * for a history of ids 1..last. Empty when the range selects nothing.
 */
export function rangeIds(last: number, range: HistoryRange): number[] {
  const ids: number[] = [];
  const limit = range.limit ?? Number.MAX_SAFE_INTEGER;
  if (range.direction === 'backward') {
    const start = range.after === undefined ? last : range.after - 1;
    for (let i = start; i >= 1 && ids.length < limit; i--) ids.push(i);
  } else {
    const start = range.after === undefined ? 1 : range.after + 1;
    for (let i = start; i <= last && ids.length < limit; i++) ids.push(i);
  }
  return ids;
}

/** The state after a committed plan (new events numbered after the last one). */
export function applyPlan(
  state: MachineState,
  plan: Extract<Plan, { kind: 'commit' }>,
  opts: { starting: boolean },
): MachineState {
  if (plan.remove)
    return {
      ...state,
      status: 'none',
      reason: null,
      auxState: null,
      lastEvent: 0,
      timer: null,
      tags: [],
      version: state.version + 1,
    };
  const base = opts.starting
    ? { ...state, gen: state.gen + 1, lastEvent: 0, tags: [], timer: null, auxState: null }
    : state;
  return {
    ...base,
    status: 'working',
    reason: null,
    auxState: plan.auxState === undefined ? base.auxState : plan.auxState,
    lastEvent: base.lastEvent + plan.events.length,
    timer: plan.timer === 'keep' ? base.timer : plan.timer === 'unset' ? null : plan.timer,
    tags: plan.tag === undefined ? base.tags : [...base.tags, plan.tag],
    version: state.version + 1,
  };
}

/** The state after a step that failed the machine. */
export function applyFailure(state: MachineState, reason: unknown, opts: { starting: boolean }): MachineState {
  const base = opts.starting
    ? { ...state, gen: state.gen + 1, lastEvent: 0, tags: [], timer: null, auxState: null }
    : state;
  return { ...base, status: 'failed', reason, version: state.version + 1 };
}
