import { MillraceError } from '../core/errors.js';
import { sleep } from '../core/clock.js';
import { endSpan, SpanKind, startSpan, traceparentOf } from '../core/telemetry.js';
import type { NamespaceConfig } from './config.js';
import type { MachinesContext } from './context.js';
import type { MachineCommits } from './commits.js';
import type { MachineLeases } from './leases.js';
import { Abort, failedError, key, refusal, type Hooks, type StepContext, type StepResult } from './machine-state.js';
import { admission, planStep, type MachineState, type StepInput } from './planner.js';
import { ProcessorError, type ProcessorClient } from './processor.js';
import type { MachineReads } from './reads.js';

/**
 * One step of one machine at a time: in the machine's queue turn on this
 * node (and, across nodes, holding its lease), the processor is asked
 * outside any transaction, and the planner's verdict on its answer is
 * committed.
 */
export class MachineSteps {
  constructor(
    private readonly cx: MachinesContext,
    private readonly leases: MachineLeases,
    private readonly reads: MachineReads,
    private readonly commits: MachineCommits,
  ) {}

  /** Runs one processor step for the machine, in its turn. */
  run(ns: string, id: string, input: StepInput, ctx: StepContext, hooks: Hooks = {}): Promise<StepResult> {
    return this.exclusive(
      ns,
      id,
      ctx.deadline,
      (state) => this.step(state, input, ctx, hooks),
      input.kind === 'signal' && input.signal.type === 'init',
    );
  }

  /** Runs `fn` on the machine's state while holding its queue turn (and, across nodes, its lease). */
  exclusive<T>(
    ns: string,
    id: string,
    deadline: number,
    fn: (state: MachineState) => Promise<T>,
    starting = false,
  ): Promise<T> {
    const { cx } = this;
    if (cx.stopped)
      return Promise.reject(new MillraceError('shutting_down', 'the node is stopping', { retryAfterS: 1 }));
    const k = key(ns, id);
    const waitMs = deadline - cx.rt.clock.now();
    return cx.queues.run(
      k,
      async () => {
        if (cx.rt.clock.now() >= deadline)
          throw new MillraceError(
            'deadline_exceeded',
            'the request deadline passed before the machine could be processed',
          );
        const state = await this.leases.acquire(ns, id, deadline, starting);
        if (!cx.multiNode) return fn(state);
        return this.leases.hold(ns, id, deadline, () => fn(state));
      },
      waitMs,
    );
  }

  private async step(state: MachineState, input: StepInput, ctx: StepContext, hooks: Hooks): Promise<StepResult> {
    const refused = admission(state, input);
    if (refused === 'skip') return { skipped: true };
    if (refused !== null) throw refusal(refused, state);
    if (hooks.timer && state.timer === null) return { skipped: true };
    // Counted for the console's step rates (per namespace) and p99, whether it commits or fails the machine.
    const t0 = performance.now();
    try {
      const c = this.cx.nsConfig(state.ns);
      const range = hooks.timer?.range ?? c.history_range ?? { direction: 'forward' as const };
      const starting = input.kind === 'signal' && input.signal.type === 'init';
      const machine = starting
        ? {
            ...(await this.reads.view(
              { ...state, status: 'working', lastEvent: 0, auxState: null, timer: null, tags: [] },
              range,
              undefined,
              false,
            )),
            id: state.id,
          }
        : await this.reads.view(state, range, key(state.ns, state.id), true);
      const request = { ...input, machine } as Parameters<ProcessorClient['process']>[0];
      let result: unknown;
      try {
        result = await this.callProcessor(state.ns, request, ctx, c);
      } catch (err) {
        if (err instanceof ProcessorError && !err.transient) {
          if (input.kind === 'repair')
            throw new MillraceError('repair_failed', `the repair failed: ${err.message}`, {
              details: { reason: err.reason },
            });
          await this.commits.commitFailure(state, input, err.reason, hooks);
          throw failedError(state.id, err.reason);
        }
        throw err;
      }
      const base = hooks.timer ? { ...state, timer: null } : state;
      const plan = planStep(base, input, result, this.cx.rt.clock.now());
      if (plan.kind === 'repair_failed')
        throw new MillraceError('repair_failed', 'the processor refused the repair', {
          details: { reason: plan.reason },
        });
      if (plan.kind === 'fail') {
        if (input.kind === 'repair')
          throw new MillraceError('repair_failed', 'the repair answered a bad result', {
            details: { reason: plan.reason },
          });
        await this.commits.commitFailure(state, input, plan.reason, hooks);
        throw failedError(state.id, plan.reason);
      }
      try {
        await this.commits.commit(base, input, plan, hooks);
      } catch (err) {
        if (err instanceof Abort && err.why === 'tag_taken') {
          const reason = { code: 'tag_already_taken', tag: plan.tag };
          if (input.kind === 'repair')
            throw new MillraceError('repair_failed', 'the repair asked for a tag another machine holds', {
              details: { reason },
            });
          await this.commits.commitFailure(state, input, reason, hooks);
          throw failedError(state.id, reason);
        }
        throw err;
      }
      return { response: plan.response };
    } finally {
      this.cx.rt.activity.time('step', performance.now() - t0, true, state.ns);
    }
  }

  /** Asks the processor, retrying transient failures with backoff inside the deadline. */
  private async callProcessor(
    ns: string,
    request: Parameters<ProcessorClient['process']>[0],
    ctx: StepContext,
    c: NamespaceConfig,
  ): Promise<unknown> {
    const client = this.cx.client(ns);
    let attempt = 0;
    let lastTransient: { err: ProcessorError; delay: number } | undefined;
    for (;;) {
      const left = ctx.deadline - this.cx.rt.clock.now();
      if (left <= 0) {
        // After a transient failure the cause is the processor, even when the back-off sleep ran late past the deadline.
        if (lastTransient !== undefined) throw processorUnavailable(lastTransient.err, lastTransient.delay);
        throw new MillraceError('deadline_exceeded', 'the request deadline passed before the processor answered');
      }
      try {
        // The abort signal (a timer) is made only if the processor asks for it: in-process processors mostly do not.
        let signal: AbortSignal | undefined;
        const clock = this.cx.rt.clock;
        const span = startSpan('millrace.processor.call', ctx.traceparent, SpanKind.CLIENT, {
          'millrace.namespace': ns,
          'millrace.attempt': attempt + 1,
        });
        const pctx = {
          deadline: ctx.deadline,
          traceparent: span === undefined ? ctx.traceparent : traceparentOf(span),
          get signal(): AbortSignal {
            return (signal ??= AbortSignal.timeout(Math.max(0, ctx.deadline - clock.now())));
          },
        };
        try {
          const r = await client.process(request, pctx);
          endSpan(span);
          return r;
        } catch (err) {
          endSpan(span, err);
          throw err;
        }
      } catch (err) {
        if (!(err instanceof ProcessorError) || !err.transient) throw err;
        const delay = Math.min(c.retry.max_ms, c.retry.base_ms * 2 ** Math.min(attempt++, 20));
        const after = ctx.deadline - this.cx.rt.clock.now();
        if (err.timedOut || after <= 0)
          throw new MillraceError(
            'deadline_exceeded',
            `the processor did not answer before the deadline (${err.message})`,
            { details: { reason: err.reason } },
          );
        if (delay >= after || this.cx.stopped) throw processorUnavailable(err, delay);
        lastTransient = { err, delay };
        await sleep(delay);
      }
    }
  }
}

function processorUnavailable(err: ProcessorError, delay: number): MillraceError {
  return new MillraceError('unavailable', `the processor is unavailable: ${err.message}`, {
    details: { reason: err.reason },
    retryAfterS: Math.max(1, Math.ceil(delay / 1000)),
  });
}
