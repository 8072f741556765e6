import type { Page } from '../core/paging.js';
import type { Runtime } from '../runtime.js';
import type { Shard } from '../storage/storage.js';
import type { MachinesConfig, NamespaceConfig } from './config.js';
import { MachineCommits } from './commits.js';
import { MachinesContext } from './context.js';
import { MachineLeases } from './leases.js';
import type { ProcessorFn } from './processor.js';
import { MachineReads } from './reads.js';
import { MachineRequests } from './requests.js';
import { MachineSteps } from './steps.js';
import { MachineTimerHandlers } from './timer-handlers.js';
import type { MachineRef, MachineSummary, MachineView, RequestOptions } from './types.js';

export type { MachineEvent, MachineRef, MachineSummary, MachineView, RequestOptions } from './types.js';
export { checkId, EVENT_TYPE, LEASE_CHANNEL, NOTIFY_KIND, streamOf, TIMEOUT_KIND } from './machine-state.js';

export interface MachinesOptions {
  /** In-process processors by name, for namespaces with `processor: {in_process: name}` (there is no process-wide registry). */
  processors?: ReadonlyMap<string, ProcessorFn>;
}

/**
 * The machines face: Machinegun-style automata. One step of one machine at a
 * time: an in-process queue per machine, plus (where nodes share a shard) a
 * lease on the machine row. The processor runs outside any transaction; its
 * result is committed atomically with the row, the events, the timer, the tag
 * and the removal, under an optimistic version check.
 *
 * A façade over the requests (requests.ts), the steps in each machine's turn
 * (steps.ts), leases (leases.ts), the commit of a step's plan (commits.ts),
 * reads and history (reads.ts) and the timer and notification handlers
 * (timer-handlers.ts); what they share is in context.ts, and the pure step
 * planner in planner.ts.
 */
export class Machines {
  readonly cfg: MachinesConfig;
  private readonly cx: MachinesContext;
  private readonly leases: MachineLeases;
  private readonly reads: MachineReads;
  private readonly requests: MachineRequests;
  private readonly timers: MachineTimerHandlers;

  constructor(
    readonly rt: Runtime,
    opts: MachinesOptions = {},
  ) {
    const cx = (this.cx = new MachinesContext(rt, opts.processors));
    this.cfg = cx.cfg;
    this.reads = new MachineReads(cx);
    this.leases = new MachineLeases(cx, (ns, id) => this.reads.load(ns, id));
    const commits = new MachineCommits(cx, this.leases);
    const steps = new MachineSteps(cx, this.leases, this.reads, commits);
    this.requests = new MachineRequests(cx, steps, this.reads, commits);
    this.timers = new MachineTimerHandlers(cx, steps, this.reads, commits);
  }

  /** The namespaces in effect (config file and runtime definitions), by name. */
  get namespacesInEffect(): ReadonlyMap<string, NamespaceConfig> {
    return this.cx.namespaces;
  }

  /** Lease counters for metrics: steps on a kept lease (no round trip), leases taken, asks sent to peers, leases given up to one, leases taken from a node that had ended. */
  get leaseStats(): {
    readonly kept: number;
    readonly taken: number;
    readonly asked: number;
    readonly givenUp: number;
    readonly fromDead: number;
  } {
    return this.leases.stats;
  }

  /** History events handed to steps and GETs from the cache, and read from the log. */
  get historyStats(): { readonly fromMemory: number; readonly fromLog: number } {
    return this.reads.stats;
  }

  /** Machines in the cache, and the estimated bytes of their history windows. */
  get cacheStats(): { machines: number; bytes: number } {
    return { machines: this.cx.cache.size, bytes: this.cx.cache.bytes };
  }

  /** Listens for other nodes asking for machines whose lease this node keeps. */
  open(): Promise<void> {
    return this.leases.open();
  }

  /** Refuses new steps and gives up the leases kept for machines that are idle here. */
  async stop(): Promise<void> {
    this.cx.stopped = true;
    await this.leases.stop();
  }

  registerTimers(): void {
    this.timers.register();
  }

  /** Whether `processor: {in_process: name}` would find a processor on this node. */
  hasInProcess(name: string): boolean {
    return this.cx.hasInProcess(name);
  }

  /** Whether a namespace comes from the config file, was defined at runtime, or does not exist. */
  namespaceSource(ns: string): 'config' | 'runtime' | null {
    return this.cx.namespaceSource(ns);
  }

  nsConfig(ns: string): NamespaceConfig {
    return this.cx.nsConfig(ns);
  }

  shardOf(ns: string, id: string): Shard {
    return this.cx.shardOf(ns, id);
  }

  // ---- requests ----

  start(ns: string, id: string, args: unknown, opts: RequestOptions = {}): Promise<{ response: unknown }> {
    return this.requests.start(ns, id, args, opts);
  }

  call(ns: string, ref: MachineRef, args: unknown, opts: RequestOptions = {}): Promise<{ response: unknown }> {
    return this.requests.call(ns, ref, args, opts);
  }

  repair(ns: string, ref: MachineRef, args: unknown, opts: RequestOptions = {}): Promise<{ response: unknown }> {
    return this.requests.repair(ns, ref, args, opts);
  }

  /** A failed machine becomes working without asking the processor; its timer resumes. */
  simpleRepair(ns: string, ref: MachineRef, opts: RequestOptions = {}): Promise<void> {
    return this.requests.simpleRepair(ns, ref, opts);
  }

  remove(ns: string, ref: MachineRef, opts: RequestOptions = {}): Promise<void> {
    return this.requests.remove(ns, ref, opts);
  }

  /** Stores a notification for later, ordered delivery as a `notification` signal. */
  notify(
    ns: string,
    ref: MachineRef,
    args: unknown,
    opts: { key?: string } = {},
  ): Promise<{ id: number; duplicate?: boolean }> {
    return this.requests.notify(ns, ref, args, opts);
  }

  // ---- reads ----

  get(ns: string, ref: MachineRef, range: unknown = {}): Promise<MachineView> {
    return this.reads.get(ns, ref, range);
  }

  /**
   * A namespace's machines, failed first (with their reason), then working;
   * by id within each status, across every shard, paged.
   */
  list(
    ns: string,
    opts: { status?: string | undefined; limit?: number | undefined; cursor?: string | undefined } = {},
  ): Promise<Page<MachineSummary>> {
    return this.reads.list(ns, opts);
  }

  /** Machines of a namespace in total and failed (console overview). */
  counts(ns: string): Promise<{ total: number; failed: number }> {
    return this.reads.counts(ns);
  }

  /** The machine id a reference names. */
  resolve(ns: string, ref: MachineRef): Promise<string> {
    return this.reads.resolve(ns, ref);
  }

  /** Whether the namespace is paused. */
  namespacePaused(ns: string): boolean {
    return this.cx.pauses.paused('namespace', ns);
  }

  /** Whether the machine (or its namespace) is paused. */
  paused(ns: string, id: string): boolean {
    return this.cx.pauses.machinePaused(ns, id);
  }
}
