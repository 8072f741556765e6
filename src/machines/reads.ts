import { badRequest, MillraceError } from '../core/errors.js';
import { decodeCursor, encodeCursor, pageLimit, type Page } from '../core/paging.js';
import type { HistoryRange } from './config.js';
import type { MachinesContext } from './context.js';
import { frozenEvent, rangeSpan, type MachineEvent } from './history-cache.js';
import {
  emptyState,
  key,
  PRINTABLE,
  refusal,
  streamOf,
  summaryOf,
  toState,
  checkId,
  type ListRow,
  type Row,
} from './machine-state.js';
import { SQL } from './machines-sql.js';
import { parseRange, TAG_MAX, type MachineState } from './planner.js';
import type { MachineRef, MachineSummary, MachineView } from './types.js';

/**
 * Reads of the machines face: a machine's row, its view with history (from
 * the cached window where it covers the range, the log for the rest),
 * namespace lists and counts, and tag references.
 */
export class MachineReads {
  /** History events handed to steps and GETs from the cache, and read from the log. */
  readonly stats = { fromMemory: 0, fromLog: 0 };

  constructor(private readonly cx: MachinesContext) {}

  /** The machine's row as stored (an empty state when it has none). */
  async load(ns: string, id: string): Promise<MachineState> {
    const rows = await this.cx.shardOf(ns, id).reader.all<Row>(SQL.getRow, [ns, id]);
    return rows[0] ? toState(rows[0]) : emptyState(ns, id);
  }

  /** Machines of a namespace in total and failed (console overview). */
  async counts(ns: string): Promise<{ total: number; failed: number }> {
    let total = 0;
    let failed = 0;
    for (const shard of this.cx.rt.storage.shards) {
      const rows = await shard.reader.all<{ status: string; n: number | string }>(SQL.countByStatus, [ns]);
      for (const r of rows) {
        total += Number(r.n);
        if (r.status === 'failed') failed += Number(r.n);
      }
    }
    return { total, failed };
  }

  /**
   * A namespace's machines, failed first (with their reason), then working;
   * by id within each status, across every shard, paged.
   */
  async list(
    ns: string,
    opts: { status?: string | undefined; limit?: number | undefined; cursor?: string | undefined } = {},
  ): Promise<Page<MachineSummary>> {
    this.cx.nsConfig(ns);
    const limit = pageLimit(opts.limit);
    if (opts.status !== undefined && opts.status !== 'failed' && opts.status !== 'working')
      throw badRequest('status must be failed or working');
    const statuses = opts.status === undefined ? ['failed', 'working'] : [opts.status];
    const at = decodeCursor(opts.cursor, (v): v is { p: number; id: string } => {
      const c = v as { p?: unknown; id?: unknown } | null;
      return (
        typeof c === 'object' &&
        c !== null &&
        Number.isInteger(c.p) &&
        (c.p as number) >= 0 &&
        (c.p as number) < statuses.length &&
        typeof c.id === 'string'
      );
    }) ?? { p: 0, id: '' };
    const items: MachineSummary[] = [];
    for (let p = at.p; p < statuses.length; p++) {
      const need = limit - items.length;
      const rows: ListRow[] = [];
      for (const shard of this.cx.rt.storage.shards) {
        rows.push(
          ...(await shard.reader.all<ListRow>(SQL.listByStatus, [ns, statuses[p], p === at.p ? at.id : '', need + 1])),
        );
      }
      rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      for (const r of rows.slice(0, need)) items.push(summaryOf(r));
      if (rows.length > need) return { items, next_cursor: encodeCursor({ p, id: items[items.length - 1]!.id }) };
      if (items.length === limit && p + 1 < statuses.length)
        return { items, next_cursor: encodeCursor({ p: p + 1, id: '' }) };
    }
    return { items, next_cursor: null };
  }

  async get(ns: string, ref: MachineRef, range: unknown = {}): Promise<MachineView> {
    const { cx } = this;
    cx.nsConfig(ns);
    const r = parseRange(range ?? {});
    if (typeof r === 'string') throw badRequest(`history range: ${r}`);
    const id = await this.resolve(ns, ref);
    const k = key(ns, id);
    const state = (cx.multiNode ? undefined : cx.cache.state(k)) ?? (await this.load(ns, id));
    if (state.status === 'none') throw refusal('machine_not_found', state);
    if (r.after !== undefined && r.after > state.lastEvent) {
      throw new MillraceError('event_not_found', `machine ${id} has no event ${r.after}`, {
        details: { event_id: r.after },
      });
    }
    return { ...(await this.view(state, r, k, false)), paused: cx.pauses.machinePaused(ns, id) };
  }

  /** The machine id a reference names. */
  async resolve(ns: string, ref: MachineRef): Promise<string> {
    if ('id' in ref) {
      checkId(ref.id);
      return ref.id;
    }
    const tag = ref.tag;
    if (typeof tag !== 'string' || tag.length === 0 || tag.length > TAG_MAX || !PRINTABLE.test(tag))
      throw badRequest(`tag must be 1-${TAG_MAX} printable characters`);
    const rows = await this.cx.tagShard(ns, tag).reader.all<{ id: string; gen: number }>(SQL.getTag, [ns, tag]);
    const holder = rows[0];
    if (holder) {
      const state = await this.load(ns, holder.id);
      if (state.status !== 'none' && state.gen === Number(holder.gen) && state.tags.includes(tag)) return holder.id;
    }
    throw new MillraceError('machine_not_found', `no machine holds tag "${tag}" in namespace ${ns}`, {
      details: { tag },
    });
  }

  /**
   * What the processor (or a GET) sees of a machine. The history comes from
   * the cached window where it covers the range, and the log for the rest;
   * a step (`store`, in the machine's turn) keeps what it read.
   */
  async view(state: MachineState, range: HistoryRange, k: string | undefined, store: boolean): Promise<MachineView> {
    const span = rangeSpan(state.lastEvent, range);
    const history = span === null ? [] : await this.history(state, span, range.direction === 'backward', k, store);
    const v: MachineView = {
      ns: state.ns,
      id: state.id,
      status: state.status === 'failed' ? 'failed' : 'working',
      aux_state: state.auxState ?? null,
      timer: state.timer ? { due_at: new Date(state.timer.dueAt).toISOString(), range: state.timer.range } : null,
      tags: state.tags,
      history,
      history_range: range,
    };
    if (state.status === 'failed') v.reason = state.reason;
    return v;
  }

  private async history(
    state: MachineState,
    span: { lo: number; hi: number },
    backward: boolean,
    k: string | undefined,
    store: boolean,
  ): Promise<MachineEvent[]> {
    // Taken at once: commits of other steps change the window, never this slice.
    const hit = k === undefined ? undefined : this.cx.cache.slice(k, state, span.lo, span.hi);
    let events: MachineEvent[];
    if (hit === undefined) events = await this.readEvents(state, span.lo, span.hi, k, store);
    else {
      const to = hit.from + hit.events.length - 1;
      const before = hit.from > span.lo ? await this.readEvents(state, span.lo, hit.from - 1, k, store) : [];
      const after = to < span.hi ? await this.readEvents(state, to + 1, span.hi, k, store) : [];
      events = before.length === 0 && after.length === 0 ? hit.events : before.concat(hit.events, after);
    }
    this.stats.fromMemory += hit?.events.length ?? 0;
    if (backward) events.reverse();
    return events;
  }

  /** Events lo..hi of the machine's generation from the log (kept in its window when `store`). */
  private async readEvents(
    state: MachineState,
    lo: number,
    hi: number,
    k: string | undefined,
    store: boolean,
  ): Promise<MachineEvent[]> {
    const rows = await this.cx.rt.log.read(
      streamOf(state.ns, state.id, state.gen),
      { after: lo - 1, limit: hi - lo + 1, direction: 'forward' },
      [state.ns, state.id],
    );
    const events: MachineEvent[] = [];
    const sizes: number[] = [];
    this.stats.fromLog += rows.length;
    for (const e of rows) {
      const f = frozenEvent(Number(e.seq), new Date(Number(e.createdAt)).toISOString(), e.data);
      events.push(f.event);
      sizes.push(f.bytes);
    }
    if (
      store &&
      k !== undefined &&
      this.cx.cache.keepsEvents &&
      rows.length === hi - lo + 1 &&
      Number(rows[0]!.seq) === lo
    )
      this.cx.cache.add(k, state, lo, events, sizes);
    return events;
  }
}
