import { PAUSED_RECHECK_MS } from '../catalog/pauses.js';
import { isMillraceError } from '../core/errors.js';
import { RetryTimer, type Timer, type TimerContext } from '../scheduler/scheduler.js';
import type { HistoryRange } from './config.js';
import type { MachinesContext } from './context.js';
import type { MachineCommits } from './commits.js';
import { NOTIFY_KIND, TIMEOUT_KIND, type StepResult } from './machine-state.js';
import { SQL } from './machines-sql.js';
import { childTraceparent } from './processor.js';
import type { MachineReads } from './reads.js';
import type { MachineSteps } from './steps.js';

/**
 * The scheduler's handlers of the machines face: a machine's timeout (a
 * `timeout` signal) and the delivery of its stored notifications, in order,
 * as `notification` signals. Both wait while the machine is paused.
 */
export class MachineTimerHandlers {
  constructor(
    private readonly cx: MachinesContext,
    private readonly steps: MachineSteps,
    private readonly reads: MachineReads,
    private readonly commits: MachineCommits,
  ) {}

  register(): void {
    this.cx.rt.scheduler.register(TIMEOUT_KIND, (t, ctx) => this.onTimeout(t, ctx));
    this.cx.rt.scheduler.register(NOTIFY_KIND, (t, ctx) => this.onNotify(t, ctx));
  }

  private async onTimeout(timer: Timer, tctx: TimerContext): Promise<void> {
    const { cx } = this;
    const p = timer.payload as { ns: string; id: string; gen: number; range: HistoryRange | null };
    const c = cx.namespaces.get(p.ns);
    if (c === undefined) return;
    // Paused: the timeout waits (the timer stays, looked at again shortly).
    if (cx.pauses.machinePaused(p.ns, p.id)) throw new RetryTimer(PAUSED_RECHECK_MS);
    const ctx = { deadline: cx.rt.clock.now() + c.default_timeout_ms, traceparent: childTraceparent(undefined) };
    try {
      await this.steps.run(p.ns, p.id, { kind: 'signal', signal: { type: 'timeout' } }, ctx, {
        timer: { ctx: tctx, range: p.range },
      });
    } catch (err) {
      if (!isMillraceError(err) || !err.retryable) return; // machine_failed and the like: already recorded
      if (timer.attempts >= c.retry.timer_max_attempts) {
        const state = await this.reads.load(p.ns, p.id);
        if (state.status !== 'working' || state.gen !== p.gen) return;
        await this.steps
          .exclusive(p.ns, p.id, cx.rt.clock.now() + c.default_timeout_ms, async (s) => {
            if (s.status !== 'working' || s.gen !== p.gen) return;
            await this.commits.commitFailure(
              s,
              { kind: 'signal', signal: { type: 'timeout' } },
              { code: 'timer_retries_exhausted', message: err.message },
              { timer: { ctx: tctx, range: null } },
            );
          })
          // Logged and not retried: the timer has used its attempts.
          .catch((failure: unknown) =>
            cx.rt.logger.warn(
              { err: failure, ns: p.ns, id: p.id },
              'machines: could not record exhausted timer retries',
            ),
          );
        return;
      }
      throw new RetryTimer(Math.min(c.retry.max_ms, c.retry.base_ms * 2 ** Math.min(timer.attempts, 20)));
    }
  }

  private async onNotify(timer: Timer, _tctx: TimerContext): Promise<void> {
    const { cx } = this;
    const p = timer.payload as { ns: string; id: string };
    const c = cx.namespaces.get(p.ns);
    if (c === undefined) return;
    // Paused: notifications stay stored and wait.
    if (cx.pauses.machinePaused(p.ns, p.id)) throw new RetryTimer(PAUSED_RECHECK_MS);
    const shard = cx.shardOf(p.ns, p.id);
    for (;;) {
      if (cx.stopped) throw new RetryTimer(100);
      const rows = await shard.reader.all<{ nid: number; gen: number; args: string }>(SQL.firstNotification, [
        p.ns,
        p.id,
      ]);
      const n = rows[0];
      if (n === undefined) return;
      const args = JSON.parse(n.args) as unknown;
      const ctx = { deadline: cx.rt.clock.now() + c.default_timeout_ms, traceparent: childTraceparent(undefined) };
      let r: StepResult;
      try {
        r = await this.steps.run(p.ns, p.id, { kind: 'signal', signal: { type: 'notification', args } }, ctx, {
          notification: { nid: Number(n.nid), args },
        });
      } catch (err) {
        if (isMillraceError(err) && err.retryable) {
          throw new RetryTimer(
            Math.min(
              cx.cfg.notification_retry_max_ms,
              cx.cfg.notification_retry_base_ms * 2 ** Math.min(timer.attempts - 1, 20),
            ),
          );
        }
        return; // the machine failed (or is gone): delivery waits for a repair
      }
      if (r.skipped) {
        const st = await this.reads.load(p.ns, p.id);
        if (st.status === 'none') await shard.write((tx) => tx.run(SQL.deleteNotifications, [p.ns, p.id]));
        return;
      }
    }
  }
}
