/**
 * `defineProcessor`: a machines processor as an HTTP handler speaking the
 * processor protocol (docs/machines.md), typed per step by `ProcessorTypes`.
 */
import {
  ProcessorUnavailable,
  type MachineView,
  type ProcessorAction,
  type ProcessorRequest,
  type ProcessorResult,
  type TimerSet,
} from '../machines/wire.js';
import {
  deadlineSignal,
  DeadlineError,
  fail,
  handlers,
  json,
  requestDeadline,
  signed,
  traceparentOf,
  type Handlers,
  type RawAnswer,
  type RawRequest,
  type SignatureOptions,
} from './http-handlers.js';
import { machineOf, type HistoryRange, type Machine } from './machine.js';
import { InvalidRequestError } from './errors.js';

export type { HistoryEvent, HistoryRange, Machine } from './machine.js';

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

/** The args a step takes and the response it answers. */
export interface StepTypes {
  args?: unknown;
  response?: unknown;
}

/**
 * The types of one processor, every key optional (left out: `unknown`):
 * its history events, its aux state, and per step the args it takes and
 * the response it answers to the caller. `init` types `start`, `call` types
 * `call`, `notification` types `notify` (no response), `repair` types `repair`.
 * A type alias or an interface extending this one; say a key (not `key?:`)
 * for its type to count.
 *
 *     type Orders = {
 *       event: OrderEvent; aux: OrderAux;
 *       init: { args: { sku: string }; response: { status: string } };
 *       call: { args: { pay: string }; response: { status: string } };
 *     };
 */
export interface ProcessorTypes {
  event?: unknown;
  aux?: unknown;
  init?: StepTypes;
  call?: StepTypes;
  notification?: { args?: unknown };
  repair?: StepTypes;
}

/** The steps a client starts: the callbacks that take args. */
export type StepName = 'init' | 'call' | 'notification' | 'repair';

/** The history event type of processor types `T`. */
export type EventOf<T extends ProcessorTypes> = 'event' extends keyof T ? T['event'] : unknown;
/** The aux state type of processor types `T`. */
export type AuxOf<T extends ProcessorTypes> = 'aux' extends keyof T ? T['aux'] : unknown;
/** The args of step `S` of processor types `T`. */
export type ArgsOf<T extends ProcessorTypes, S extends StepName> = S extends keyof T
  ? 'args' extends keyof T[S]
    ? T[S]['args']
    : unknown
  : unknown;
/** The response of step `S` of processor types `T` (a notification answers none). */
export type ResponseOf<T extends ProcessorTypes, S extends Exclude<StepName, 'notification'>> = S extends keyof T
  ? 'response' extends keyof T[S]
    ? T[S]['response']
    : unknown
  : unknown;
/** The processor types a definition was made with: `TypesOf<typeof orders>`. */
export type TypesOf<P> = P extends Processor<infer T> ? T : never;

/** What a callback returns: its result, or nothing (nothing changes), or a promise of either. */
export type StepReturn<E, A, R> =
  StepResult<E, A, R> | void | undefined | Promise<StepResult<E, A, R> | void | undefined>;

export interface ProcessorDefinition<T extends ProcessorTypes = ProcessorTypes> extends SignatureOptions {
  /** The namespace the processor serves, for `client.for(processor)` (optional: `client.for(processor, ns)` names one). */
  namespace?: string;
  /** The machine is started (`/start`, the start's args). Default: nothing happens. */
  init?(
    args: ArgsOf<T, 'init'>,
    ctx: StepContext<EventOf<T>, AuxOf<T>>,
  ): StepReturn<EventOf<T>, AuxOf<T>, ResponseOf<T, 'init'>>;
  /** A call (`/call`). Default: fails the machine. */
  call?(
    args: ArgsOf<T, 'call'>,
    ctx: StepContext<EventOf<T>, AuxOf<T>>,
  ): StepReturn<EventOf<T>, AuxOf<T>, ResponseOf<T, 'call'>>;
  /** The machine's timer fired. Default: nothing happens. */
  timeout?(ctx: StepContext<EventOf<T>, AuxOf<T>>): StepReturn<EventOf<T>, AuxOf<T>, never>;
  /** A notification arrived (`/notify`). Default: nothing happens. */
  notification?(
    args: ArgsOf<T, 'notification'>,
    ctx: StepContext<EventOf<T>, AuxOf<T>>,
  ): StepReturn<EventOf<T>, AuxOf<T>, never>;
  /** A failed machine is repaired; throw `RepairFailed` to refuse (the machine stays failed). Default: refuses. */
  repair?(
    args: ArgsOf<T, 'repair'>,
    ctx: StepContext<EventOf<T>, AuxOf<T>>,
  ): StepReturn<EventOf<T>, AuxOf<T>, ResponseOf<T, 'repair'>>;
  /** The deadline of a request that carries none, ms (default 30000). */
  defaultTimeoutMs?: number;
}

/** Throw for a transient failure: the node retries the step with backoff and the machine is unchanged. */
export { ProcessorUnavailable };

/** Throw from `repair` to refuse it: the caller gets `repair_failed` with this reason, the machine stays failed. */
export class RepairFailed extends Error {
  constructor(readonly reason: unknown) {
    super(typeof reason === 'string' ? reason : 'the repair was refused');
    this.name = 'RepairFailed';
  }
}

export interface Processor<T extends ProcessorTypes = ProcessorTypes> extends Handlers {
  /**
   * The same steps for a node in this process: `startNode(config, { processors: new Map([[name, p.inProcess]]) })`
   * (from 'millrace') with `processor: {in_process: name}`. Returns the protocol
   * result or throws (ProcessorUnavailable: retried; anything else: the machine fails).
   */
  inProcess: (
    req: unknown,
    ctx: { traceparent?: string; deadline: number; signal: AbortSignal },
  ) => Promise<ProcessorResult>;
  /** The namespace the definition names, if any (`client.for(processor)` uses it). */
  readonly namespace: string | undefined;
  /** The processor's types, for `client.for(processor)`; a type only, never set at run time. */
  readonly types?: T;
}

type WireRequest = ProcessorRequest<MachineView>;

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
  if (!isObject(m) || typeof m.id !== 'string' || !Array.isArray(m.history))
    return 'machine must be an object {id, history, …}';
  if (v.kind === 'call' || v.kind === 'repair') return v as WireRequest;
  if (
    v.kind === 'signal' &&
    isObject(v.signal) &&
    ['init', 'timeout', 'notification'].includes(v.signal.type as string)
  )
    return v as WireRequest;
  return 'kind must be "signal" (init, timeout, notification), "call" or "repair"';
}

/**
 * A processor for a machines namespace (`processor: {url: …}`). Each
 * callback answers one step; `.handler` serves it on node:http and `.fetch`
 * on a fetch-style server. Errors: `ProcessorUnavailable` (and a step still
 * running at the deadline) answer 503/504, which the node retries; anything
 * else thrown answers 500, which fails the machine with the message.
 */
export function defineProcessor<T extends ProcessorTypes = ProcessorTypes>(def: ProcessorDefinition<T>): Processor<T> {
  if (def.namespace !== undefined && (typeof def.namespace !== 'string' || def.namespace.length === 0)) {
    throw new InvalidRequestError('bad_request', 'defineProcessor: namespace must be a non-empty string', {
      details: { namespace: def.namespace },
    });
  }
  return {
    namespace: def.namespace,
    ...handlers(signed((r) => overHttp(def, r), def)),
    inProcess: async (req, ctx) => {
      const parsed = typeof req === 'object' ? checked(req) : 'the request must be an object';
      if (typeof parsed === 'string') throw new TypeError(parsed);
      return runStep(def, parsed, { deadline: ctx.deadline, signal: ctx.signal, traceparent: ctx.traceparent });
    },
  };
}

async function overHttp<T extends ProcessorTypes>(def: ProcessorDefinition<T>, r: RawRequest): Promise<RawAnswer> {
  if (r.method !== 'POST') return fail(405, 'method_not_allowed', 'a processor takes POST');
  const req = parse(r.body);
  if (typeof req === 'string') return fail(400, 'bad_request', req);
  const deadline = requestDeadline(r, def.defaultTimeoutMs ?? 30_000);
  const { signal, done } = deadlineSignal(deadline, r.closed);
  try {
    return json(200, await runStep(def, req, { deadline, signal, traceparent: traceparentOf(r) }));
  } catch (err) {
    if (err instanceof ProcessorUnavailable) return fail(503, 'processor_unavailable', err.message);
    if (signal.aborted && signal.reason instanceof DeadlineError)
      return fail(504, 'deadline_exceeded', 'the step ran past its deadline');
    return fail(500, 'processor_error', (err as Error)?.message ?? String(err));
  } finally {
    done();
  }
}

/** One step: the callback's answer as the protocol's result object; throws what the callback throws (but RepairFailed in a repair). */
async function runStep<T extends ProcessorTypes>(
  def: ProcessorDefinition<T>,
  req: WireRequest,
  c: { deadline: number; signal: AbortSignal; traceparent: string | undefined },
): Promise<ProcessorResult> {
  const action: ProcessorAction = {};
  const ctx: StepContext<EventOf<T>, AuxOf<T>> = {
    machine: machineOf<EventOf<T>, AuxOf<T>>(req.machine),
    deadline: new Date(c.deadline),
    signal: c.signal,
    traceparent: c.traceparent,
    setTimer(at, range) {
      let set: TimerSet;
      if ('timeoutS' in at) {
        if (!Number.isFinite(at.timeoutS) || at.timeoutS < 0)
          throw new RangeError('setTimer: timeoutS must be a non-negative number of seconds');
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
  // The args are the caller's, as sent: the types say what the processor expects, the node does not check them.
  let out: StepResult<EventOf<T>, AuxOf<T>, unknown> | void | undefined;
  try {
    if (req.kind === 'call') {
      if (!def.call) throw new Error('this processor takes no calls');
      out = await def.call(req.args as ArgsOf<T, 'call'>, ctx);
    } else if (req.kind === 'repair') {
      if (!def.repair) return { repair_failed: { reason: 'this processor does not repair machines' } };
      out = await def.repair(req.args as ArgsOf<T, 'repair'>, ctx);
    } else if (req.signal.type === 'init') {
      out = await def.init?.(req.signal.args as ArgsOf<T, 'init'>, ctx);
    } else if (req.signal.type === 'timeout') {
      out = await def.timeout?.(ctx);
    } else {
      out = await def.notification?.(req.signal.args as ArgsOf<T, 'notification'>, ctx);
    }
  } catch (err) {
    if (err instanceof RepairFailed && req.kind === 'repair') return { repair_failed: { reason: err.reason } };
    throw err;
  }
  if (c.signal.aborted && c.signal.reason instanceof DeadlineError)
    throw new ProcessorUnavailable('the step ran past its deadline');
  const result: ProcessorResult & { repair_failed?: never } = {};
  if (out?.response !== undefined) result.response = out.response;
  if (out?.events !== undefined && out.events.length > 0) result.events = out.events;
  if (out?.aux !== undefined) result.aux_state = out.aux;
  if (Object.keys(action).length > 0) result.action = action;
  return result;
}
