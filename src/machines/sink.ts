import { MillraceError, badRequest } from '../core/errors.js';
import type { LogEvent } from '../log/log.js';
import { checkpointOf } from '../log/pruner.js';
import type { Runtime } from '../runtime.js';
import { EVENT_TYPE } from './machines.js';

export interface SinkEvent {
  pos: number;
  shard: string;
  ns: string;
  machine_id: string;
  event_id: number;
  created_at: string;
  data: unknown;
  /** The foundation's chain hash of this log entry (hex). */
  hash: string | null;
}

export interface SinkPage {
  events: SinkEvent[];
  /** Position to pass as `after` next time (events of other namespaces are skipped over). */
  next_after: number;
  shard: string;
  /**
   * The shard's retention horizon: the pruning checkpoint, below which the
   * log starts (0: nothing removed). Machine events are never removed while
   * their machine exists, so no sink event is ever missing above or below it.
   */
  horizon: number;
}

const SCAN_CHUNK = 1000;

/**
 * Event sinks: readers over the log of the machine events of the namespaces
 * that name the sink, in position order per shard (the cursor engine's order,
 * with the chain hash of each entry).
 */
export class Sinks {
  /**
   * `namespaces` gives the namespaces in effect at each call (the config
   * file's, or those and the runtime definitions), so a namespace defined or
   * deleted at runtime joins or leaves its sink at once.
   */
  constructor(
    private readonly rt: Runtime,
    private readonly namespacesInEffect: () => Iterable<[string, { sink?: string | undefined }]> = () =>
      Object.entries(rt.config.machines.namespaces),
  ) {}

  private get byName(): Map<string, Set<string>> {
    const out = new Map<string, Set<string>>();
    for (const [ns, c] of this.namespacesInEffect()) {
      if (c.sink === undefined) continue;
      let s = out.get(c.sink);
      if (s === undefined) out.set(c.sink, (s = new Set()));
      s.add(ns);
    }
    return out;
  }

  /** Every sink with the namespaces it publishes, by name. */
  list(): Array<{ name: string; namespaces: string[] }> {
    return [...this.byName]
      .map(([name, nss]) => ({ name, namespaces: [...nss].sort() }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  namespaces(sink: string): Set<string> {
    const s = this.byName.get(sink);
    if (s === undefined) throw new MillraceError('sink_not_found', `no event sink "${sink}"`, { details: { sink } });
    return s;
  }

  shardName(shard: string | undefined): string {
    if (shard === undefined) {
      if (this.rt.storage.shards.length !== 1) throw badRequest('this node has several shards: name one with ?shard=');
      return this.rt.storage.shards[0]!.name;
    }
    return this.rt.storage.shard(shard).name;
  }

  /** Events after `after`, up to `limit`; waits up to `waitMs` for the first one. */
  async read(
    sink: string,
    opts: { shard?: string | undefined; after: number; limit: number; waitMs: number; abort?: AbortSignal },
  ): Promise<SinkPage> {
    const nss = this.namespaces(sink);
    const shard = this.shardName(opts.shard);
    const sl = this.rt.log.shardLog(shard);
    const until = Date.now() + opts.waitMs;
    let pos = opts.after;
    const out: SinkEvent[] = [];
    const horizon = (await checkpointOf(sl.shard)).pos;
    for (;;) {
      const batch = await this.rt.log.readShard(shard, pos, SCAN_CHUNK);
      for (const e of batch) {
        const se = toSinkEvent(e, nss);
        if (se) out.push(se);
        pos = e.pos!;
        if (out.length >= opts.limit) return { events: out, next_after: pos, shard, horizon };
      }
      if (batch.length === SCAN_CHUNK) continue;
      if (out.length > 0) return { events: out, next_after: pos, shard, horizon };
      const left = until - Date.now();
      if (left <= 0 || opts.abort?.aborted) return { events: out, next_after: pos, shard, horizon };
      await sl.signal.wait(pos, Math.min(left, this.rt.config.log.poll_ms), opts.abort);
    }
  }
}

function toSinkEvent(e: LogEvent, nss: Set<string>): SinkEvent | null {
  if (e.type !== EVENT_TYPE || e.meta === null) return null;
  const meta = JSON.parse(e.meta) as { ns?: string; id?: string };
  if (meta.ns === undefined || meta.id === undefined || !nss.has(meta.ns)) return null;
  return {
    pos: e.pos!,
    shard: e.shard,
    ns: meta.ns,
    machine_id: meta.id,
    event_id: e.seq,
    created_at: new Date(e.createdAt).toISOString(),
    data: JSON.parse(e.data) as unknown,
    hash: e.hash === null ? null : e.hash.toString('hex'),
  };
}
