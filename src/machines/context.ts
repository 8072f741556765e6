import { pausesOf, type Pauses } from '../catalog/pauses.js';
import { MillraceError } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { Shard } from '../storage/storage.js';
import { namespaceSchema, type MachinesConfig, type NamespaceConfig } from './config.js';
import { MachineCache } from './history-cache.js';
import { processorClient, type ProcessorClient, type ProcessorFn } from './processor.js';
import { MachineQueues } from './queues.js';

/**
 * What the parts of the machines face share: the runtime and config, the
 * namespaces in effect with their processor clients, the pauses, the
 * per-machine queues and the machine cache.
 */
export class MachinesContext {
  readonly cfg: MachinesConfig;
  /** Namespaces in effect: the config file's, then runtime ones it does not shadow. */
  readonly namespaces = new Map<string, NamespaceConfig>();
  private readonly clients = new Map<string, ProcessorClient>();
  readonly pauses: Pauses;
  readonly queues: MachineQueues;
  readonly cache: MachineCache;
  /** Whether nodes share a shard (steps then hold a lease on the machine row). */
  readonly multiNode: boolean;
  /** This node, as it names itself in lease columns. */
  readonly holder: string;
  /** Set when the face stops: no new steps. */
  stopped = false;

  constructor(
    readonly rt: Runtime,
    private readonly processors: ReadonlyMap<string, ProcessorFn> | undefined,
  ) {
    this.cfg = rt.config.machines;
    this.pauses = pausesOf(rt.catalog);
    this.refreshNamespaces();
    rt.catalog.on('machines.namespace', () => this.refreshNamespaces());
    this.queues = new MachineQueues({
      queueLimit: this.cfg.queue_limit,
      maxActive: this.cfg.max_active_machines,
      memoryLimitMb: this.cfg.memory_limit_mb,
    });
    this.cache = new MachineCache(this.cfg.cache_size, this.cfg.history_cache_mb * 1024 * 1024);
    this.multiNode = rt.storage.shards.some((s) => s.driver.capabilities.multiNode);
    this.holder = rt.config.node_id;
  }

  /**
   * Rebuilds the namespaces in effect. A deleted runtime namespace answers
   * namespace_not_found; its machines keep their rows and history (defining
   * it again brings them back), and their due timers are dropped.
   */
  private refreshNamespaces(): void {
    const next = new Map<string, NamespaceConfig>(Object.entries(this.cfg.namespaces));
    for (const d of this.rt.catalog.list('machines.namespace')) {
      if (next.has(d.name)) continue;
      const parsed = namespaceSchema.safeParse(d.definition);
      if (parsed.success) next.set(d.name, parsed.data);
    }
    for (const ns of [...this.namespaces.keys()]) if (!next.has(ns)) this.namespaces.delete(ns);
    for (const [ns, c] of next) {
      if (this.namespaces.has(ns) && JSON.stringify(this.namespaces.get(ns)) === JSON.stringify(c)) continue;
      this.namespaces.set(ns, c);
      this.clients.set(ns, processorClient(ns, c, this.processors, this.rt.signer));
    }
    for (const ns of [...this.clients.keys()]) if (!next.has(ns)) this.clients.delete(ns);
  }

  /** The processor client of a namespace in effect. */
  client(ns: string): ProcessorClient {
    return this.clients.get(ns)!;
  }

  /** Whether `processor: {in_process: name}` would find a processor on this node. */
  hasInProcess(name: string): boolean {
    return this.processors?.has(name) === true;
  }

  /** Whether a namespace comes from the config file, was defined at runtime, or does not exist. */
  namespaceSource(ns: string): 'config' | 'runtime' | null {
    if (Object.hasOwn(this.cfg.namespaces, ns)) return 'config';
    return this.namespaces.has(ns) ? 'runtime' : null;
  }

  nsConfig(ns: string): NamespaceConfig {
    const c = this.namespaces.get(ns);
    if (c === undefined) throw new MillraceError('namespace_not_found', `no namespace "${ns}"`, { details: { ns } });
    return c;
  }

  shardOf(ns: string, id: string): Shard {
    return this.rt.storage.shardFor([ns, id]);
  }

  tagShard(ns: string, tag: string): Shard {
    return this.rt.storage.shardFor([ns, 'tag', tag]);
  }
}
