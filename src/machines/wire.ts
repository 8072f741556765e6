/**
 * The processor protocol on the wire: what a node sends a processor, what the
 * processor answers, and the machine as both the node's GET and the processor
 * see it (snake_case, as on the wire). The machines face and the SDK both
 * import this module; it imports nothing, so neither reaches the other
 * through it.
 */

/** A slice of a machine's history: events after `after`, at most `limit`, in `direction`. */
export interface HistoryRange {
  after?: number | undefined;
  limit?: number | undefined;
  direction?: 'forward' | 'backward' | undefined;
}

/** A range as the node resolved it: the direction is always said. */
export interface ResolvedHistoryRange extends HistoryRange {
  direction: 'forward' | 'backward';
}

/** One event of a machine's history as sent. */
export interface MachineEvent {
  /** Event id within the machine: 1, 2, 3… */
  id: number;
  /** RFC 3339. */
  created_at: string;
  data: unknown;
}

/** The GET shape, also what the processor receives as `machine`. */
export interface MachineView {
  ns: string;
  id: string;
  status: 'working' | 'failed';
  /** Why it failed (a failed machine only). */
  reason?: unknown;
  aux_state: unknown;
  timer: { due_at: string; range: ResolvedHistoryRange | null } | null;
  tags: string[];
  history: MachineEvent[];
  history_range: ResolvedHistoryRange;
  /** Paused, by itself or with its namespace: timers and notifications wait, calls are refused or queued. */
  paused?: boolean;
}

/** What the processor receives: a signal (init, timeout, notification), a call or a repair, with the machine. */
export type ProcessorRequest<M = MachineView> =
  | {
      kind: 'signal';
      signal: { type: 'init'; args: unknown } | { type: 'timeout' } | { type: 'notification'; args: unknown };
      machine: M;
    }
  | { kind: 'call'; args: unknown; machine: M }
  | { kind: 'repair'; args: unknown; machine: M };

/** When a timer fires: in `timeout` seconds or at the RFC 3339 `deadline`. */
export type TimerSet = { timeout: number } | { deadline: string };

/** What the step does to the machine besides its events and aux state. */
export interface ProcessorAction {
  /** Sets the machine's one timer (`range`: the history its timeout signal gets), or clears it. */
  timer?: { set: TimerSet; range?: HistoryRange } | 'unset';
  /** Adds a tag. */
  tag?: string;
  /** Removes the machine with this step. */
  remove?: true;
}

/** What a processor answers to a step; every key is optional. A refused repair answers only `repair_failed`. */
export type ProcessorResult =
  | {
      /** The answer to the caller of start, call or repair. */
      response?: unknown;
      /** Events appended to the history, in order. */
      events?: unknown[];
      /** The new aux state (left out: unchanged). */
      aux_state?: unknown;
      action?: ProcessorAction;
    }
  | { repair_failed: { reason: unknown } };

/**
 * Thrown by a processor for a transient failure: the node retries the step
 * with backoff and the machine is unchanged. One class for the SDK and the
 * node, so an in-process processor may import it from either.
 */
export class ProcessorUnavailable extends Error {
  constructor(message = 'the processor is unavailable') {
    super(message);
    this.name = 'ProcessorUnavailable';
  }
}
