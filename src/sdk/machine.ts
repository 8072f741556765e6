/**
 * The machine as the SDK shows it, to a processor step (`ctx.machine`) and
 * to a client (`get`): camelCase, converted here from the wire's snake_case.
 */
import type { HistoryRange, MachineView, ResolvedHistoryRange } from '../machines/wire.js';

export type { HistoryRange, ResolvedHistoryRange };

export interface HistoryEvent<E> {
  /** Event id within the machine: 1, 2, 3… */
  id: number;
  /** RFC 3339. */
  createdAt: string;
  data: E;
}

/** A machine with its history within a range (the namespace's, the timer's, or the one a client asked for). */
export interface Machine<E, A> {
  ns: string;
  id: string;
  status: 'working' | 'failed';
  /** Why it failed (a failed machine only). */
  reason?: unknown;
  /** The aux state (null until a step sets one). */
  aux: A | null;
  timer: { dueAt: string; range: ResolvedHistoryRange | null } | null;
  tags: string[];
  history: Array<HistoryEvent<E>>;
  historyRange: ResolvedHistoryRange;
  /** Paused, by itself or with its namespace (a client's `get` says; absent in a step). */
  paused?: boolean;
}

/** The wire's machine in the SDK's casing; the data is the caller's to type. */
export function machineOf<E, A>(m: MachineView): Machine<E, A> {
  const out: Machine<E, A> = {
    ns: m.ns,
    id: m.id,
    status: m.status,
    aux: (m.aux_state ?? null) as A | null,
    timer: m.timer ? { dueAt: m.timer.due_at, range: m.timer.range } : null,
    tags: m.tags ?? [],
    history: m.history.map((e) => ({ id: e.id, createdAt: e.created_at, data: e.data as E })),
    historyRange: m.history_range,
  };
  if (m.reason !== undefined) out.reason = m.reason;
  if (m.paused !== undefined) out.paused = m.paused;
  return out;
}
