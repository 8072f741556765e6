import { EventEmitter } from 'node:events';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import { MillraceError, badRequest } from '../core/errors.js';
import type { Tx } from '../storage/port.js';
import type { Shard, Storage } from '../storage/storage.js';
import { chainHash, GENESIS_HASH, rowChainFields, type StoredEventRow } from './chain.js';
import { HeadSignal } from './head-signal.js';

/** Channel on which PostgreSQL writers wake the sequencer. */
export const APPEND_CHANNEL = 'millrace_append';
/** Channel on which the sequencer announces the new head position. */
export const POS_CHANNEL = 'millrace_pos';

export interface NewEvent {
  type: string;
  /** Any JSON value. */
  data: unknown;
  /** Optional JSON object carried beside the data (keys, headers, ids). */
  meta?: Record<string, unknown> | undefined;
}

export interface LogEvent {
  shard: string;
  /** Shard-wide position; null only while a PostgreSQL row awaits the sequencer. */
  pos: number | null;
  stream: string;
  seq: number;
  type: string;
  /** JSON text of the data, as stored (and hashed). */
  data: string;
  meta: string | null;
  createdAt: number;
  hash: Buffer | null;
}

export interface AppendOptions {
  /** The stream's current last seq; a different value is a `stream_conflict` and writes nothing. */
  expectedSeq?: number | undefined;
  /** What routes the stream to a shard (default: the stream name). */
  shardKey?: readonly string[] | string | undefined;
}

export interface AppendResult {
  shard: string;
  stream: string;
  /** seq of each appended event, in order. */
  seqs: number[];
  /** Positions, when the dialect knows them at commit (SQLite); see `Log.positions`. */
  positions: number[] | null;
  /** Internal row ids (PostgreSQL), used to wait for the sequencer. */
  rowIds: number[] | null;
  /** `created_at` stamped on the appended events (ms since the epoch). */
  createdAt: number;
}

export interface ReadRange {
  /** Exclusive bound: seqs after it (forward) or before it (backward). */
  after?: number | undefined;
  limit?: number | undefined;
  direction?: 'forward' | 'backward' | undefined;
}

const MAX_STREAM_LEN = 512;
const MAX_TYPE_LEN = 200;
/** Rows per multi-row INSERT, kept under every dialect's parameter limit. */
const INSERT_CHUNK = 500;

const EVENT_COLUMNS = 'pos, stream, seq, type, data, meta, created_at, hash';

type EventRow = StoredEventRow;

const toEvent = (shard: string, r: EventRow): LogEvent => ({
  shard,
  pos: r.pos,
  stream: r.stream,
  seq: r.seq,
  type: r.type,
  data: r.data,
  meta: r.meta,
  createdAt: r.created_at,
  hash: r.hash,
});

/** What a shard's log knows in memory: the readable head, and for SQLite the chain tip. */
export class ShardLog {
  readonly signal = new HeadSignal();
  /** Chain tip, kept only where rows are numbered on insert (SQLite). */
  tip: { pos: number; hash: Buffer } = { pos: 0, hash: GENESIS_HASH };
  constructor(readonly shard: Shard) {}
}

/**
 * A caller's statement run before an append (INSERT/UPDATE/DELETE without
 * RETURNING); where arrays bind, in the append's statement. `where`, if
 * given, is the same statement writing only where the SQL condition `ok`
 * holds: with it, a one-statement append checks its route in the statement.
 */
export interface BeforeStatement {
  sql: string;
  params: readonly unknown[];
  where?: (ok: string) => string;
}

/**
 * The ordered, hash-chained log. Streams live on the shard their shard key
 * routes to; each shard numbers its events with a gapless `pos` in commit
 * order and chains their hashes.
 */
export class Log extends EventEmitter {
  private readonly shardLogs = new Map<string, ShardLog>();
  private readonly unlisten: Array<() => Promise<void>> = [];

  constructor(
    readonly storage: Storage,
    private readonly clock: Clock = systemClock,
    /** Default bound of `positions` (config `cluster.publish_deadline_ms`). */
    private readonly positionsTimeoutMs = 10_000,
  ) {
    super();
    for (const s of storage.shards) this.shardLogs.set(s.name, new ShardLog(s));
  }

  /** Loads chain tips and heads; subscribes to cross-node position notices. Call once, after migrations. */
  async open(): Promise<void> {
    for (const sl of this.shardLogs.values()) {
      const rows = await sl.shard.reader.all<{ pos: number; hash: Buffer }>(
        'SELECT pos, hash FROM events WHERE pos IS NOT NULL ORDER BY pos DESC LIMIT 1',
      );
      const last = rows[0];
      if (last) {
        sl.tip = { pos: last.pos, hash: last.hash };
        sl.signal.advance(last.pos);
      }
      if (!sl.shard.driver.capabilities.sequencesOnInsert) {
        this.unlisten.push(
          await sl.shard.driver.listen(POS_CHANNEL, (payload) => {
            const pos = Number(payload);
            if (Number.isFinite(pos) && pos > 0) sl.signal.advance(pos);
            else sl.signal.poke();
          }),
        );
      }
    }
  }

  async close(): Promise<void> {
    for (const u of this.unlisten.splice(0)) await u();
  }

  shardLog(name: string): ShardLog {
    const sl = this.shardLogs.get(name);
    if (sl === undefined)
      throw new MillraceError('shard_not_found', `no shard named "${name}"`, { details: { shard: name } });
    return sl;
  }

  shardFor(stream: string, shardKey?: readonly string[] | string): Shard {
    return this.storage.shardFor(shardKey ?? stream);
  }

  /** Appends events to a stream in their own (group-committed) transaction. */
  append(stream: string, events: readonly NewEvent[], opts: AppendOptions = {}): Promise<AppendResult> {
    const prepared = prepareEvents(stream, events, opts);
    const shard = this.shardFor(stream, opts.shardKey);
    return shard.write((tx) => this.appendPrepared(tx, shard, stream, prepared, opts.expectedSeq), {
      lockKeys: [stream],
    });
  }

  /**
   * Appends inside a caller's transaction on `shard`, so a face can commit its
   * events together with its own rows. The caller routes the stream itself.
   */
  appendIn(
    tx: Tx,
    shard: Shard,
    stream: string,
    events: readonly NewEvent[],
    opts: AppendOptions = {},
  ): Promise<AppendResult> {
    return this.appendPrepared(tx, shard, stream, prepareEvents(stream, events, opts), opts.expectedSeq);
  }

  /**
   * Appends to several streams of `shard` inside a caller's transaction, one
   * result per item, in order (a stream may appear in several items; its
   * events then follow item order). Where rows are numbered later
   * (PostgreSQL) every item is one statement together, whatever their number:
   * the streams' counters move in stream name order, then the rows go in.
   */
  async appendManyIn(
    tx: Tx,
    shard: Shard,
    items: ReadonlyArray<{ stream: string; events: readonly NewEvent[] }>,
    /** A statement of the caller's (INSERT/UPDATE/DELETE without RETURNING) run first; where arrays bind, in the same statement. */
    before?: BeforeStatement,
  ): Promise<AppendResult[]> {
    const prepared = items.map((it) => prepareEvents(it.stream, it.events, {}));
    if (shard.driver.capabilities.sequencesOnInsert || !shard.driver.capabilities.bulkArrayParams) {
      if (before !== undefined) await tx.run(before.sql, before.params);
      const out: AppendResult[] = [];
      for (let i = 0; i < items.length; i++)
        out.push(await this.appendPrepared(tx, shard, items[i]!.stream, prepared[i]!, undefined));
      return out;
    }
    const st = this.manyStatement(shard, items, prepared, before);
    const out = st.result(await tx.all(st.sql(null), st.params));
    tx.notify(APPEND_CHANNEL);
    tx.onCommit(() => this.emit('appended', shard.name, null));
    return out;
  }

  /**
   * Appends to several streams of `shard` (as `appendManyIn`, with `before`)
   * in a transaction of their own that takes `lockKeys`: where arrays bind
   * and the dialect allows, one statement that is the whole transaction, in
   * one round trip (`Shard.writeStatement`). Resolves once durable.
   */
  async appendManyAlone(
    shard: Shard,
    items: ReadonlyArray<{ stream: string; events: readonly NewEvent[] }>,
    before: BeforeStatement | undefined,
    lockKeys: readonly string[],
  ): Promise<AppendResult[]> {
    if (shard.driver.capabilities.sequencesOnInsert || !shard.driver.capabilities.bulkArrayParams) {
      return shard.write((tx) => this.appendManyIn(tx, shard, items, before), { lockKeys });
    }
    const prepared = items.map((it) => prepareEvents(it.stream, it.events, {}));
    const st = this.manyStatement(shard, items, prepared, before);
    return shard.writeStatement(
      {
        sql: st.sql,
        // Refused by the route check in it (routed by an old table), it writes nothing, not even `before`.
        routable: before === undefined || before.where !== undefined,
        params: st.params,
        channels: [APPEND_CHANNEL],
        result: (rows: Array<{ id: number; stream: string; seq: number }>) => {
          this.emit('appended', shard.name, null);
          return st.result(rows);
        },
      },
      { lockKeys },
    );
  }

  /**
   * The one statement of `appendManyIn` where arrays bind: the caller's
   * `before`, the streams' counters moved in stream name order, then the
   * rows. Given a locking query, it goes first and the rows are read from
   * its answer, so no stream row is touched before the locks are held.
   */
  private manyStatement(
    shard: Shard,
    items: ReadonlyArray<{ stream: string; events: readonly NewEvent[] }>,
    prepared: Prepared[][],
    before: BeforeStatement | undefined,
  ): {
    sql: (locks: string | null, route?: string | null) => string;
    params: unknown[];
    result: (rows: Array<{ id: number; stream: string; seq: number }>) => AppendResult[];
  } {
    const now = this.clock.now();
    const streams: string[] = [];
    const idx: number[] = [];
    const types: string[] = [];
    const datas: string[] = [];
    const metas: Array<string | null> = [];
    const counts = new Map<string, number>();
    prepared.forEach((events, j) => {
      const stream = items[j]!.stream;
      for (const e of events) {
        const i = (counts.get(stream) ?? 0) + 1;
        counts.set(stream, i);
        streams.push(stream);
        idx.push(i);
        types.push(e.type);
        datas.push(e.data);
        metas.push(e.meta);
      }
    });
    const sql = (locks: string | null, route?: string | null): string => {
      const routed = route !== undefined && route !== null;
      const gates = [
        ...(locks === null ? [] : ['(SELECT n FROM locks) >= 0']),
        ...(routed ? ['(SELECT ok FROM route)'] : []),
      ];
      const b =
        before === undefined
          ? ''
          : `b AS (${routed && before.where !== undefined ? before.where('(SELECT ok FROM route)') : before.sql}), `;
      return `WITH ${locks === null ? '' : `locks AS (${locks}), `}${routed ? `route AS (${route}), ` : ''}${b}v AS (SELECT * FROM unnest(?::text[], ?::int[], ?::text[], ?::text[], ?::text[]) WITH ORDINALITY AS v (stream, i, t, d, m, ord)${gates.length === 0 ? '' : ` WHERE ${gates.join(' AND ')}`}),
       n AS (SELECT stream, max(i) AS n FROM v GROUP BY stream),
       s AS (
         INSERT INTO streams (stream, seq) SELECT stream, n FROM n ORDER BY stream
         ON CONFLICT (stream) DO UPDATE SET seq = streams.seq + excluded.seq RETURNING stream, seq)
       INSERT INTO events (stream, seq, type, data, meta, created_at)
       SELECT v.stream, s.seq - n.n + v.i, v.t, v.d, v.m, ?::bigint FROM v JOIN n USING (stream) JOIN s USING (stream)
       ORDER BY v.ord
       RETURNING id, stream, seq`;
    };
    const result = (rows: Array<{ id: number; stream: string; seq: number }>): AppendResult[] => {
      const byKey = new Map<string, number>();
      // Each stream's seq before this statement: its highest new seq less what was added.
      const base = new Map<string, number>();
      for (const r of rows) {
        byKey.set(`${r.seq}\u0000${r.stream}`, r.id);
        const b = r.seq - counts.get(r.stream)!;
        if (b > (base.get(r.stream) ?? -1)) base.set(r.stream, b);
      }
      const seen = new Map<string, number>();
      return prepared.map((events, j): AppendResult => {
        const stream = items[j]!.stream;
        const seqs: number[] = [];
        const rowIds: number[] = [];
        for (let k = 0; k < events.length; k++) {
          const i = (seen.get(stream) ?? 0) + 1;
          seen.set(stream, i);
          const seq = base.get(stream)! + i;
          seqs.push(seq);
          rowIds.push(byKey.get(`${seq}\u0000${stream}`)!);
        }
        return { shard: shard.name, stream, seqs, positions: null, rowIds, createdAt: now };
      });
    };
    return { sql, params: [...(before?.params ?? []), streams, idx, types, datas, metas, now], result };
  }

  /**
   * Copies events of other shards into `shard` as they were (stream, seq,
   * type, data, meta, created_at), in the given order, in a caller's
   * transaction: a split's import. They take new positions and hashes in
   * this shard's chain; streams' counters move up to the copied seqs.
   */
  async importIn(tx: Tx, shard: Shard, rows: ReadonlyArray<Omit<StoredEventRow, 'pos' | 'hash'>>): Promise<void> {
    if (rows.length === 0) return;
    const top = new Map<string, number>();
    for (const r of rows) top.set(r.stream, Math.max(top.get(r.stream) ?? 0, Number(r.seq)));
    for (const [stream, seq] of [...top].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      await tx.run(
        'INSERT INTO streams (stream, seq) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET seq = CASE WHEN streams.seq > excluded.seq THEN streams.seq ELSE excluded.seq END',
        [stream, seq],
      );
    }
    if (shard.driver.capabilities.sequencesOnInsert) {
      const sl = this.shardLog(shard.name);
      const before = sl.tip;
      let tip = before;
      for (let off = 0; off < rows.length; off += INSERT_CHUNK) {
        const chunk = rows.slice(off, off + INSERT_CHUNK);
        const params: unknown[] = [];
        for (const r of chunk) {
          const pos = tip.pos + 1;
          const hash = chainHash(tip.hash, rowChainFields(pos, r));
          params.push(pos, r.stream, r.seq, r.type, r.data, r.meta, r.created_at, hash);
          tip = { pos, hash };
        }
        await tx.run(`INSERT INTO events (${EVENT_COLUMNS}) VALUES ${rowsOf(chunk.length, 8)}`, params);
      }
      sl.tip = tip;
      tx.onRollback(() => {
        sl.tip = before;
      });
      const head = tip.pos;
      tx.onCommit(() => {
        sl.signal.advance(head);
        this.emit('appended', shard.name, head);
      });
      return;
    }
    for (let off = 0; off < rows.length; off += INSERT_CHUNK) {
      const chunk = rows.slice(off, off + INSERT_CHUNK);
      const params: unknown[] = [];
      for (const r of chunk) params.push(r.stream, r.seq, r.type, r.data, r.meta, r.created_at);
      await tx.run(
        `INSERT INTO events (stream, seq, type, data, meta, created_at) VALUES ${rowsOf(chunk.length, 6)}`,
        params,
      );
    }
    tx.notify(APPEND_CHANNEL);
    tx.onCommit(() => this.emit('appended', shard.name, null));
  }

  /**
   * Appends only if `guard` (an UPDATE or DELETE of the caller's, without
   * RETURNING) changes a row, in the caller's transaction; null when it
   * changes none, and then nothing is appended. Where rows are numbered
   * later (PostgreSQL) the guard and the append are one statement, so a face
   * that writes its row and its events per step pays one round trip.
   */
  async appendGuarded(
    tx: Tx,
    shard: Shard,
    stream: string,
    events: readonly NewEvent[],
    guard: { sql: string; params: readonly unknown[] },
    opts: AppendOptions = {},
  ): Promise<AppendResult | null> {
    const prepared = prepareEvents(stream, events, opts);
    if (!shard.driver.capabilities.sequencesOnInsert && prepared.length <= INSERT_CHUNK) {
      return this.appendUnnumbered(tx, shard, stream, prepared, opts.expectedSeq, guard);
    }
    if ((await tx.run(guard.sql, guard.params)) === 0) return null;
    return this.appendPrepared(tx, shard, stream, prepared, opts.expectedSeq);
  }

  private async appendPrepared(
    tx: Tx,
    shard: Shard,
    stream: string,
    events: Prepared[],
    expectedSeq: number | undefined,
  ): Promise<AppendResult> {
    const n = events.length;
    if (!shard.driver.capabilities.sequencesOnInsert && n <= INSERT_CHUNK)
      return (await this.appendUnnumbered(tx, shard, stream, events, expectedSeq))!;
    const up = await tx.all<{ seq: number }>(
      'INSERT INTO streams (stream, seq) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET seq = streams.seq + excluded.seq RETURNING seq',
      [stream, n],
    );
    const last = up[0]!.seq;
    const first = last - n + 1;
    if (expectedSeq !== undefined && first - 1 !== expectedSeq) {
      throw new MillraceError('stream_conflict', `stream "${stream}" is at seq ${first - 1}, expected ${expectedSeq}`, {
        details: { stream, expected_seq: expectedSeq, actual_seq: first - 1 },
      });
    }
    const now = this.clock.now();
    const seqs = events.map((_, i) => first + i);
    if (shard.driver.capabilities.sequencesOnInsert) {
      const sl = this.shardLog(shard.name);
      const before = sl.tip;
      let tip = before;
      const positions: number[] = [];
      for (let off = 0; off < n; off += INSERT_CHUNK) {
        const chunk = events.slice(off, off + INSERT_CHUNK);
        const params: unknown[] = [];
        for (let i = 0; i < chunk.length; i++) {
          const e = chunk[i]!;
          const pos = tip.pos + 1;
          const seq = first + off + i;
          const hash = chainHash(tip.hash, {
            pos,
            stream,
            seq,
            type: e.type,
            createdAt: now,
            data: e.data,
            meta: e.meta,
          });
          params.push(pos, stream, seq, e.type, e.data, e.meta, now, hash);
          positions.push(pos);
          tip = { pos, hash };
        }
        await tx.run(`INSERT INTO events (${EVENT_COLUMNS}) VALUES ${rowsOf(chunk.length, 8)}`, params);
      }
      sl.tip = tip;
      tx.onRollback(() => {
        sl.tip = before;
      });
      const head = tip.pos;
      tx.onCommit(() => {
        sl.signal.advance(head);
        this.emit('appended', shard.name, head);
      });
      return { shard: shard.name, stream, seqs, positions, rowIds: null, createdAt: now };
    }
    const rowIds: number[] = [];
    for (let off = 0; off < n; off += INSERT_CHUNK) {
      const chunk = events.slice(off, off + INSERT_CHUNK);
      const params: unknown[] = [];
      chunk.forEach((e, i) => params.push(stream, first + off + i, e.type, e.data, e.meta, now));
      const ids = await tx.all<{ id: number }>(
        `INSERT INTO events (stream, seq, type, data, meta, created_at) VALUES ${rowsOf(chunk.length, 6)} RETURNING id`,
        params,
      );
      for (const r of ids) rowIds.push(r.id);
    }
    tx.notify(APPEND_CHANNEL);
    tx.onCommit(() => this.emit('appended', shard.name, null));
    return { shard: shard.name, stream, seqs, positions: null, rowIds, createdAt: now };
  }

  /**
   * Where the sequencer numbers rows later (PostgreSQL): bump the stream's
   * counter and insert its rows in one statement, one round trip per caller.
   */
  private async appendUnnumbered(
    tx: Tx,
    shard: Shard,
    stream: string,
    events: Prepared[],
    expectedSeq: number | undefined,
    guard?: { sql: string; params: readonly unknown[] },
  ): Promise<AppendResult | null> {
    const n = events.length;
    const now = this.clock.now();
    const params: unknown[] = guard ? [...guard.params, stream, n, stream, n, now] : [stream, n, stream, n, now];
    events.forEach((e, i) => params.push(i + 1, e.type, e.data, e.meta));
    // With a guard, the stream counter moves (and rows are inserted) only if the guard changed a row.
    const bump = guard
      ? `g AS (${guard.sql} RETURNING 1),
         s AS (
         INSERT INTO streams (stream, seq) SELECT ?::text, ?::bigint FROM g
         ON CONFLICT (stream) DO UPDATE SET seq = streams.seq + excluded.seq RETURNING seq)`
      : `s AS (
         INSERT INTO streams (stream, seq) VALUES (?, ?)
         ON CONFLICT (stream) DO UPDATE SET seq = streams.seq + excluded.seq RETURNING seq)`;
    const rows = await tx.all<{ id: number; seq: number }>(
      `WITH ${bump}
       INSERT INTO events (stream, seq, type, data, meta, created_at)
       SELECT ?, s.seq - ? + v.i, v.t, v.d, v.m, ? FROM s,
         (VALUES ${new Array(n).fill('(?::int, ?::text, ?::text, ?::text)').join(', ')}) AS v (i, t, d, m)
       ORDER BY v.i
       RETURNING id, seq`,
      params,
    );
    if (rows.length === 0 && guard) return null;
    rows.sort((a, b) => a.seq - b.seq);
    const first = rows[0]!.seq;
    if (expectedSeq !== undefined && first - 1 !== expectedSeq) {
      throw new MillraceError('stream_conflict', `stream "${stream}" is at seq ${first - 1}, expected ${expectedSeq}`, {
        details: { stream, expected_seq: expectedSeq, actual_seq: first - 1 },
      });
    }
    tx.notify(APPEND_CHANNEL);
    tx.onCommit(() => this.emit('appended', shard.name, null));
    return {
      shard: shard.name,
      stream,
      seqs: rows.map((r) => r.seq),
      positions: null,
      rowIds: rows.map((r) => r.id),
      createdAt: now,
    };
  }

  /**
   * Positions of appended events: immediate where rows are numbered on insert;
   * otherwise waits for the sequencer (which may run on another node).
   */
  async positions(result: AppendResult, timeoutMs = this.positionsTimeoutMs): Promise<number[]> {
    if (result.positions) return result.positions;
    const ids = result.rowIds ?? [];
    if (ids.length === 0) return [];
    const sl = this.shardLog(result.shard);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const head = sl.signal.head;
      const rows = await sl.shard.reader.all<{ id: number; pos: number | null }>(
        `SELECT id, pos FROM events WHERE id IN (${ids.map(() => '?').join(', ')})`,
        ids,
      );
      if (rows.length === ids.length && rows.every((r) => r.pos !== null)) {
        const byId = new Map(rows.map((r) => [r.id, r.pos as number]));
        return ids.map((id) => byId.get(id)!);
      }
      const left = deadline - Date.now();
      if (left <= 0)
        throw new MillraceError(
          'unavailable',
          'the sequencer did not number the events in time; they are stored and will be numbered',
          { retryAfterS: 1 },
        );
      await sl.signal.wait(head, Math.max(1, Math.min(left, 200)));
    }
  }

  /** Events of one stream by seq: forward after `after`, or backward before it. */
  async read(stream: string, range: ReadRange = {}, shardKey?: readonly string[] | string): Promise<LogEvent[]> {
    const shard = this.shardFor(stream, shardKey);
    const limit = checkLimit(range.limit ?? 1000);
    const backward = range.direction === 'backward';
    if (range.after !== undefined && (!Number.isSafeInteger(range.after) || range.after < 0))
      throw badRequest('after must be a non-negative integer');
    const rows = backward
      ? await shard.reader.all<EventRow>(
          `SELECT ${EVENT_COLUMNS} FROM events WHERE stream = ? AND seq < ? ORDER BY seq DESC LIMIT ?`,
          [stream, range.after ?? Number.MAX_SAFE_INTEGER, limit],
        )
      : await shard.reader.all<EventRow>(
          `SELECT ${EVENT_COLUMNS} FROM events WHERE stream = ? AND seq > ? ORDER BY seq ASC LIMIT ?`,
          [stream, range.after ?? 0, limit],
        );
    return rows.map((r) => toEvent(shard.name, r));
  }

  /** The stream's last seq (0 for a stream never written). */
  async streamSeq(stream: string, shardKey?: readonly string[] | string): Promise<number> {
    const shard = this.shardFor(stream, shardKey);
    const rows = await shard.reader.all<{ seq: number }>('SELECT seq FROM streams WHERE stream = ?', [stream]);
    return rows[0]?.seq ?? 0;
  }

  /** Numbered events of a shard with pos > afterPos, in pos order. */
  async readShard(shardName: string, afterPos: number, limit: number): Promise<LogEvent[]> {
    const sl = this.shardLog(shardName);
    if (!Number.isSafeInteger(afterPos) || afterPos < 0) throw badRequest('after must be a non-negative integer');
    if (sl.shard.driver.capabilities.sequencesOnInsert) {
      // Rows are numbered on insert and the head moves once their commit is
      // durable: readers never see a position that a power loss could take back.
      const rows = await sl.shard.reader.all<EventRow>(
        `SELECT ${EVENT_COLUMNS} FROM events WHERE pos > ? AND pos <= ? ORDER BY pos ASC LIMIT ?`,
        [afterPos, sl.signal.head, checkLimit(limit)],
      );
      return rows.map((r) => toEvent(shardName, r));
    }
    const rows = await sl.shard.reader.all<EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM events WHERE pos > ? ORDER BY pos ASC LIMIT ?`,
      [afterPos, checkLimit(limit)],
    );
    if (rows.length > 0) sl.signal.advance(rows[rows.length - 1]!.pos!);
    return rows.map((r) => toEvent(shardName, r));
  }

  /** Highest readable position of a shard, from the database. */
  async headPos(shardName: string): Promise<number> {
    const sl = this.shardLog(shardName);
    if (sl.shard.driver.capabilities.sequencesOnInsert) return sl.signal.head;
    const rows = await sl.shard.reader.all<{ pos: number | null }>('SELECT max(pos) AS pos FROM events');
    const pos = rows[0]?.pos ?? 0;
    sl.signal.advance(pos);
    return pos;
  }
}

interface Prepared {
  type: string;
  data: string;
  meta: string | null;
}

function prepareEvents(stream: string, events: readonly NewEvent[], opts: AppendOptions): Prepared[] {
  if (typeof stream !== 'string' || stream.length === 0 || stream.length > MAX_STREAM_LEN) {
    throw badRequest(`stream must be a non-empty string of at most ${MAX_STREAM_LEN} characters`);
  }
  // `as unknown`: Array.isArray would narrow a readonly array to any[].
  if (!Array.isArray(events as unknown) || events.length === 0) throw badRequest('events must be a non-empty array');
  if (opts.expectedSeq !== undefined && (!Number.isInteger(opts.expectedSeq) || opts.expectedSeq < 0)) {
    throw badRequest('expectedSeq must be a non-negative integer');
  }
  return events.map((e, i) => {
    if (e === null || typeof e !== 'object') throw badRequest(`events[${i}] must be an object`);
    if (typeof e.type !== 'string' || e.type.length === 0 || e.type.length > MAX_TYPE_LEN) {
      throw badRequest(`events[${i}].type must be a non-empty string of at most ${MAX_TYPE_LEN} characters`);
    }
    const data = e.data === undefined ? 'null' : JSON.stringify(e.data);
    if (data === undefined) throw badRequest(`events[${i}].data is not JSON-serialisable`);
    let meta: string | null = null;
    if (e.meta !== undefined) {
      if (e.meta === null || typeof e.meta !== 'object' || Array.isArray(e.meta))
        throw badRequest(`events[${i}].meta must be an object`);
      meta = JSON.stringify(e.meta);
    }
    return { type: e.type, data, meta };
  });
}

function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1 || limit > 100_000)
    throw badRequest('limit must be an integer from 1 to 100000');
  return limit;
}

function rowsOf(rows: number, cols: number): string {
  const one = `(${new Array(cols).fill('?').join(', ')})`;
  return new Array(rows).fill(one).join(', ');
}
