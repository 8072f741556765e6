import { PAUSED_RECHECK_MS } from '../catalog/pauses.js';
import { MillraceError } from '../core/errors.js';
import { telemetryEnabled } from '../core/telemetry.js';
import type { NamespaceConfig } from './config.js';
import type { MachinesContext } from './context.js';
import type { MachineCommits } from './commits.js';
import { checkId, NOTIFY_KIND, notifyOwner, refusal, type StepContext } from './machine-state.js';
import { SQL } from './machines-sql.js';
import { admission } from './planner.js';
import { childTraceparent } from './processor.js';
import type { MachineReads } from './reads.js';
import type { MachineSteps } from './steps.js';
import type { MachineRef, RequestOptions } from './types.js';

/**
 * The requests of the machines face: start, call, repair, remove and
 * notify. Each is checked, admitted past the pauses (refused, or queued up
 * to the namespace's limit), and run as a step in the machine's turn.
 */
export class MachineRequests {
  /** Calls waiting for their paused namespace or machine to resume, per namespace. */
  private readonly pausedWaiting = new Map<string, number>();

  constructor(
    private readonly cx: MachinesContext,
    private readonly steps: MachineSteps,
    private readonly reads: MachineReads,
    private readonly commits: MachineCommits,
  ) {}

  async start(ns: string, id: string, args: unknown, opts: RequestOptions = {}): Promise<{ response: unknown }> {
    const c = this.cx.nsConfig(ns);
    checkId(id);
    const ctx = this.ctx(c, opts);
    await this.admit(ns, id, c, ctx.deadline);
    const r = await this.steps.run(ns, id, { kind: 'signal', signal: { type: 'init', args: args ?? null } }, ctx);
    return { response: r.response ?? null };
  }

  async call(ns: string, ref: MachineRef, args: unknown, opts: RequestOptions = {}): Promise<{ response: unknown }> {
    const c = this.cx.nsConfig(ns);
    const ctx = this.ctx(c, opts);
    const id = await this.reads.resolve(ns, ref);
    await this.admit(ns, id, c, ctx.deadline);
    const r = await this.cx.rt.activity.timed('call', () =>
      this.steps.run(ns, id, { kind: 'call', args: args ?? null }, ctx),
    );
    return { response: r.response ?? null };
  }

  async repair(ns: string, ref: MachineRef, args: unknown, opts: RequestOptions = {}): Promise<{ response: unknown }> {
    const c = this.cx.nsConfig(ns);
    const ctx = this.ctx(c, opts);
    const id = await this.reads.resolve(ns, ref);
    await this.admit(ns, id, c, ctx.deadline);
    const r = await this.steps.run(ns, id, { kind: 'repair', args: args ?? null }, ctx);
    return { response: r.response ?? null };
  }

  /** A failed machine becomes working without asking the processor; its timer resumes. */
  async simpleRepair(ns: string, ref: MachineRef, opts: RequestOptions = {}): Promise<void> {
    const c = this.cx.nsConfig(ns);
    const ctx = this.ctx(c, opts);
    const id = await this.reads.resolve(ns, ref);
    await this.steps.exclusive(ns, id, ctx.deadline, async (state) => {
      const refused = admission(state, { kind: 'repair', args: null });
      if (refused !== null) throw refusal(refused, state);
      await this.commits.commit(
        state,
        { kind: 'repair', args: null },
        {
          kind: 'commit',
          events: [],
          auxState: undefined,
          timer: 'keep',
          tag: undefined,
          remove: false,
          response: null,
        },
        {},
      );
      return {};
    });
  }

  async remove(ns: string, ref: MachineRef, opts: RequestOptions = {}): Promise<void> {
    const c = this.cx.nsConfig(ns);
    const ctx = this.ctx(c, opts);
    const id = await this.reads.resolve(ns, ref);
    await this.steps.exclusive(ns, id, ctx.deadline, async (state) => {
      if (state.status === 'none') throw refusal('machine_not_found', state);
      await this.commits.commit(
        state,
        { kind: 'call', args: null },
        {
          kind: 'commit',
          events: [],
          auxState: undefined,
          timer: 'unset',
          tag: undefined,
          remove: true,
          response: null,
        },
        {},
      );
      return {};
    });
  }

  /** Stores a notification for later, ordered delivery as a `notification` signal. */
  async notify(
    ns: string,
    ref: MachineRef,
    args: unknown,
    opts: { key?: string } = {},
  ): Promise<{ id: number; duplicate?: boolean }> {
    const { cx } = this;
    cx.nsConfig(ns);
    const id = await this.reads.resolve(ns, ref);
    const shard = cx.shardOf(ns, id);
    const argsText = JSON.stringify(args ?? null);
    let duplicate = false;
    const nid = await shard.write(async (tx) => {
      if (opts.key !== undefined) {
        // A key names one notification: given again, the first one's id is the answer and nothing is stored.
        // The key is claimed first, so a concurrent notify with the same key waits for this one and then finds it.
        const claimed = await tx.run(
          'INSERT INTO machine_notification_keys (ns, id, key, nid, created_at) VALUES (?, ?, ?, 0, ?) ON CONFLICT (ns, id, key) DO NOTHING',
          [ns, id, opts.key, cx.rt.clock.now()],
        );
        if (claimed === 0) {
          const seen = await tx.all<{ nid: number }>(
            'SELECT nid FROM machine_notification_keys WHERE ns = ? AND id = ? AND key = ?',
            [ns, id, opts.key],
          );
          tx.onCommit(() => (duplicate = true));
          return Number(seen[0]!.nid);
        }
      }
      const rows = await tx.all<{ gen: number; status: string }>(SQL.genStatus, [ns, id]);
      const m = rows[0];
      if (m === undefined || m.status === 'none')
        throw new MillraceError('machine_not_found', `no machine ${id} in namespace ${ns}`);
      const ins = await tx.all<{ nid: number }>(SQL.insertNotification, [ns, id, m.gen, argsText, cx.rt.clock.now()]);
      if (m.status === 'working')
        await cx.rt.scheduler.scheduleIn(tx, notifyOwner(ns, id), NOTIFY_KIND, cx.rt.clock.now(), { ns, id });
      if (opts.key !== undefined)
        await tx.run('UPDATE machine_notification_keys SET nid = ? WHERE ns = ? AND id = ? AND key = ?', [
          Number(ins[0]!.nid),
          ns,
          id,
          opts.key,
        ]);
      return Number(ins[0]!.nid);
    });
    return duplicate ? { id: nid, duplicate } : { id: nid };
  }

  /**
   * A call to a paused machine (or namespace) is refused with `paused`, or,
   * where the namespace says `pause.calls: queue`, waits for the resume (up
   * to `queue_limit` waiting per namespace on this node, and its deadline).
   */
  private async admit(ns: string, id: string, c: NamespaceConfig, deadline: number): Promise<void> {
    const { pauses } = this.cx;
    if (!pauses.machinePaused(ns, id)) return;
    const what = pauses.paused('namespace', ns)
      ? { kind: 'namespace', name: ns }
      : { kind: 'machine', name: `${ns}/${id}` };
    if (c.pause.calls === 'refuse')
      throw new MillraceError('paused', `${what.kind} ${what.name} is paused`, { details: what, retryAfterS: 1 });
    const waiting = this.pausedWaiting.get(ns) ?? 0;
    if (waiting >= c.pause.queue_limit) {
      throw new MillraceError(
        'paused_queue_full',
        `${what.kind} ${what.name} is paused and ${waiting} calls already wait for it`,
        { details: { ...what, waiting }, retryAfterS: 1 },
      );
    }
    this.pausedWaiting.set(ns, waiting + 1);
    try {
      while (pauses.machinePaused(ns, id)) {
        const left = deadline - this.cx.rt.clock.now();
        if (left <= 0)
          throw new MillraceError(
            'deadline_exceeded',
            `${what.kind} ${what.name} stayed paused until the request deadline`,
            { details: what },
          );
        await pauses.changed(Math.min(left, PAUSED_RECHECK_MS));
      }
    } finally {
      const n = (this.pausedWaiting.get(ns) ?? 1) - 1;
      if (n <= 0) this.pausedWaiting.delete(ns);
      else this.pausedWaiting.set(ns, n);
    }
  }

  private ctx(c: NamespaceConfig, opts: RequestOptions): StepContext {
    // Traced: the processor call's span is the child (and its traceparent is what the processor gets).
    const traceparent =
      telemetryEnabled() && opts.traceparent !== undefined ? opts.traceparent : childTraceparent(opts.traceparent);
    return { deadline: opts.deadline ?? this.cx.rt.clock.now() + c.default_timeout_ms, traceparent };
  }
}
