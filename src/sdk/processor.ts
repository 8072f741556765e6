/**
 * `defineProcessor`: a machines processor as an HTTP handler speaking the
 * processor protocol (README, Machines → Processor protocol).
 */
import type { MachineView } from '../machines/machines.js';
import { deadlineSignal, DeadlineError, fail, handlers, json, requestDeadline, signed, traceparentOf, type Handlers, type RawAnswer, type RawRequest, type SignatureOptions } from './http-handlers.js';

export interface HistoryRange {
  after?: number;
  limit?: number;
  direction?: 'forward' | 'backward';
}

export interface HistoryEvent<E> {
  /** Event id within the machine: 1, 2, 3… */
  id: number;
  createdAt: string;
  data: E;
}

/** The machine as the processor sees it (history within the namespace's or the timer's range). */
export interface Machine<E, A> {
  ns: string;
  id: string;
  status: 'working' | 'failed';
  /** Why it failed (repair only). */
  reason?: unknown;
  /** The aux state (null until a step sets one). */
  aux: A | null;
  timer: { dueAt: string; range: HistoryRange | null } | null;
  tags: string[];
  history: Array<HistoryEvent<E>>;
  historyRange: HistoryRange;
}

/** What a step answers; every part is optional. */
export interface StepResult<E, A, R> {
  /** The answer to the caller of start/call/repair. */
  response?: R;
  /** Events appended to the history, in order. */
  events?: E[];
  /** The new aux state (left out: unchanged). */
  aux?: A;
}

export interface StepContext<E, A> {
  machine: Machine<E, A>;
  /** The request deadline. */
  deadline: Date;
  /** Aborts at the deadline or when the node gives up on the request. */
  signal: AbortSignal;
  /** The W3C trace context of the step, when the node sent one. */
  traceparent: string | undefined;
  /** Sets the machine's one timer: in `timeoutS` seconds or at `deadline`; `range` is the history the timeout signal gets. */
  setTimer(at: { timeoutS: number } | { deadline: Date | string }, range?: HistoryRange): void;
  /** Clears the machine's timer. */
  unsetTimer(): void;
  /** Adds a tag (the machine can then be addressed by it). */
  tag(tag: string): void;
  /** Removes the machine with this step. */
  remove(): void;
}

type Step<E, A, R> = StepResult<E, A, R> | void | undefined;
type MaybePromise<T> = T | Promise<T>;

export interface ProcessorDefinition<E, A, Args, R> extends SignatureOptions {
  /** The machine is started (`/start`, args of the start). Default: nothing happens. */
  init?(args: Args, ctx: StepContext<E, A>): MaybePromise<Step<E, A, R>>;
  /** A call (`/call`). Default: fails the machine. */
  call?(args: Args, ctx: StepContext<E, A>): MaybePromise<Step<E, A, R>>;
  /** The machine's timer fired. Default: nothing happens. */
  timeout?(ctx: StepContext<E, A>): MaybePromise<Step<E, A, never>>;
  /** A notification arrived (`/notify`). Default: nothing happens. */
  notification?(args: Args, ctx: StepContext<E, A>): MaybePromise<Step<E, A, never>>;
  /** A failed machine is repaired; throw `RepairFailed` to refuse (the machine stays failed). Default: refuses. */
  repair?(args: unknown, ctx: StepContext<E, A>): MaybePromise<Step<E, A, R>>;
  /** The deadline of a request that carries none, ms (default 30000). */
  defaultTimeoutMs?: number;
}

/** Throw for a transient failure: the node retries the step with backoff and the machine is unchanged. */
export class ProcessorUnavailable extends Error {
  constructor(message = 'the processor is unavailable') {
    super(message);
    this.name = 'ProcessorUnavailable';
  }
}

/** Throw from `repair` to refuse it: the caller gets `repair_failed` with this reason, the machine stays failed. */
export class RepairFailed extends Error {
  constructor(readonly reason: unknown) {
    super(typeof reason === 'string' ? reason : 'the repair was refused');
    this.name = 'RepairFailed';
  }
}

export interface Processor extends Handlers {
  /**
   * The same steps for a node in this process: `registerProcessor(name, p.inProcess)`
   * (from 'millrace') with `processor: {in_process: name}`. Returns the protocol
   * result or throws (ProcessorUnavailable: retried; anything else: the machine fails).
   */
  inProcess: (req: unknown, ctx: { traceparent?: string; deadline: number; signal: AbortSignal }) => Promise<Record<string, unknown>>;
}

/** The machine as the node sends it (the GET shape); a type only, so no server module is loaded. */
type WireMachine = MachineView;

type WireRequest =
  | { kind: 'signal'; signal: { type: 'init' | 'notification'; args: unknown } | { type: 'timeout' }; machine: WireMachine }
  | { kind: 'call'; args: unknown; machine: WireMachine }
  | { kind: 'repair'; args: unknown; machine: WireMachine };

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function parse(text: string): WireRequest | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'the body is not JSON';
  }
  return checked(v);
}

function checked(v: unknown): WireRequest | string {
  if (!isObject(v)) return 'the body must be an object';
  const m = v.machine;
  if (!isObject(m) || typeof m.id !== 'string' || !Array.isArray(m.history)) return 'machine must be an object {id, history, …}';
  if (v.kind === 'call' || v.kind === 'repair') return v as WireRequest;
  if (v.kind === 'signal' && isObject(v.signal) && ['init', 'timeout', 'notification'].includes(v.signal.type as string)) return v as WireRequest;
  return 'kind must be "signal" (init, timeout, notification), "call" or "repair"';
}

function machineOf<E, A>(m: WireMachine): Machine<E, A> {
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
  return out;
}

/**
 * A processor for a machines namespace (`processor: {url: …}`). Each
 * callback answers one step; `.handler` serves it on node:http and `.fetch`
 * on a fetch-style server. Errors: `ProcessorUnavailable` (and a step still
 * running at the deadline) answer 503/504, which the node retries; anything
 * else thrown answers 500, which fails the machine with the message.
 */
export function defineProcessor<Event = unknown, Aux = unknown, Args = unknown, Response = unknown>(def: ProcessorDefinition<Event, Aux, Args, Response>): Processor {
  return {
    ...handlers(signed((r) => overHttp(def, r), def)),
    inProcess: async (req, ctx) => {
      const parsed = typeof req === 'object' ? checked(req) : 'the request must be an object';
      if (typeof parsed === 'string') throw new TypeError(parsed);
      return runStep(def, parsed, { deadline: ctx.deadline, signal: ctx.signal, traceparent: ctx.traceparent });
    },
  };
}

async function overHttp<E, A, Args, R>(def: ProcessorDefinition<E, A, Args, R>, r: RawRequest): Promise<RawAnswer> {
  if (r.method !== 'POST') return fail(405, 'method_not_allowed', 'a processor takes POST');
  const req = parse(r.body);
  if (typeof req === 'string') return fail(400, 'bad_request', req);
  const deadline = requestDeadline(r, def.defaultTimeoutMs ?? 30_000);
  const { signal, done } = deadlineSignal(deadline, r.closed);
  try {
    return json(200, await runStep(def, req, { deadline, signal, traceparent: traceparentOf(r) }));
  } catch (err) {
    if (err instanceof ProcessorUnavailable) return fail(503, 'processor_unavailable', err.message);
    if (signal.aborted && signal.reason instanceof DeadlineError) return fail(504, 'deadline_exceeded', 'the step ran past its deadline');
    return fail(500, 'processor_error', (err as Error)?.message ?? String(err));
  } finally {
    done();
  }
}

/** One step: the callback's answer as the protocol's result object; throws what the callback throws (but RepairFailed in a repair). */
async function runStep<E, A, Args, R>(def: ProcessorDefinition<E, A, Args, R>, req: WireRequest, c: { deadline: number; signal: AbortSignal; traceparent: string | undefined }): Promise<Record<string, unknown>> {
  const action: { timer?: unknown; tag?: string; remove?: true } = {};
  const ctx: StepContext<E, A> = {
    machine: machineOf<E, A>(req.machine),
    deadline: new Date(c.deadline),
    signal: c.signal,
    traceparent: c.traceparent,
    setTimer(at, range) {
      let set: { timeout: number } | { deadline: string };
      if ('timeoutS' in at) {
        if (!Number.isFinite(at.timeoutS) || at.timeoutS < 0) throw new RangeError('setTimer: timeoutS must be a non-negative number of seconds');
        set = { timeout: at.timeoutS };
      } else set = { deadline: at.deadline instanceof Date ? at.deadline.toISOString() : at.deadline };
      action.timer = range === undefined ? { set } : { set, range };
    },
    unsetTimer() {
      action.timer = 'unset';
    },
    tag(tag) {
      action.tag = tag;
    },
    remove() {
      action.remove = true;
    },
  };
  let out: Step<E, A, R>;
  try {
    if (req.kind === 'call') {
      if (!def.call) throw new Error('this processor takes no calls');
      out = await def.call(req.args as Args, ctx);
    } else if (req.kind === 'repair') {
      if (!def.repair) return { repair_failed: { reason: 'this processor does not repair machines' } };
      out = await def.repair(req.args, ctx);
    } else if (req.signal.type === 'init') {
      out = await def.init?.(req.signal.args as Args, ctx);
    } else if (req.signal.type === 'timeout') {
      out = await def.timeout?.(ctx);
    } else {
      out = await def.notification?.(req.signal.args as Args, ctx);
    }
  } catch (err) {
    if (err instanceof RepairFailed && req.kind === 'repair') return { repair_failed: { reason: err.reason } };
    throw err;
  }
  if (c.signal.aborted && c.signal.reason instanceof DeadlineError) throw new ProcessorUnavailable('the step ran past its deadline');
  const result: Record<string, unknown> = {};
  if (out?.response !== undefined) result.response = out.response;
  if (out?.events !== undefined && out.events.length > 0) result.events = out.events;
  if (out?.aux !== undefined) result.aux_state = out.aux;
  if (Object.keys(action).length > 0) result.action = action;
  return result;
}
