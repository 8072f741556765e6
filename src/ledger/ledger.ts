import { createHash, randomUUID } from 'node:crypto';
import { MillraceError, badRequest } from '../core/errors.js';
import type { LogEvent } from '../log/log.js';
import type { Runtime } from '../runtime.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import type { AccountTypeConfig, LedgerConfig } from './config.js';
import { formatUnits, parseAmount, unitsOf } from './decimal.js';
import './errors.js';
import './migrations.js';

export type Side = 'debit' | 'credit';
type Attrs = Record<string, string>;

export interface BatchEventInput {
  account: { type: string; attrs: Attrs };
  side: Side;
  amount: string;
  dt?: string | undefined;
  info?: unknown;
}
export interface BatchRequest {
  idempotency_key?: string | undefined;
  dt_default?: string | undefined;
  events?: BatchEventInput[] | undefined;
  locks?: Array<{ type: string; attrs: Attrs; uid: string }> | undefined;
  states?: Array<{ type: string; attrs: Attrs; state: unknown; expected_version?: number | undefined }> | undefined;
}
export interface BatchAnswer {
  batch_id: string;
  events: number;
  states: Array<{ type: string; attrs: Attrs; version: number }>;
}
export interface AccountQuery {
  type: string;
  key: Attrs;
  group_by?: string[] | undefined;
  filter?: Record<string, string> | undefined;
}
export interface GroupSums {
  group: Record<string, string | null>;
  debit: string;
  credit: string;
}
export interface TurnoverSums {
  group: Record<string, string | null>;
  debit_init: string;
  credit_init: string;
  debit_turnover: string;
  credit_turnover: string;
}
export interface LedgerEventOut {
  id: number;
  shard: string;
  batch_id: string;
  account: { type: string; key: Attrs };
  aux: Record<string, string>;
  side: Side;
  amount: string;
  dt: string;
  info: unknown;
}
export type LockMode = 'exclusive' | 'shared';

/** Name of the aggregator's cursor on every shard. */
export const AGGREGATOR_CURSOR = 'ledger.aggregator';
const POSTED = 'ledger.posted';
const MAX_ATTR_LEN = 256;

/** An account type from config, with the groupings aggregates are kept for ([] = the account total). */
export interface AccountType extends AccountTypeConfig {
  name: string;
  /** [] first, then the configured groupings, each in aux order. */
  aggGroupings: string[][];
  shardKeyAttrs: string[];
}

interface Prepared {
  t: AccountType;
  keyVals: string[];
  accKey: string;
  aux: Record<string, string>;
  side: Side;
  units: bigint;
  dt: number;
  info: string | null;
  shard: Shard;
}

interface Contribution {
  vals: Record<string, string | null>;
  d: bigint;
  c: bigint;
}

const canonical = (v: unknown): string => {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
};

const sortedObject = (o: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

export function parseDt(text: unknown, what: string): number {
  if (typeof text !== 'string' || !/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/.test(text)) {
    throw new MillraceError('invalid_date', `${what}: expected an ISO 8601 date or date-time with a zone, such as 2026-01-31T12:00:00Z`);
  }
  const ms = Date.parse(text.length === 10 ? `${text}T00:00:00Z` : text);
  if (!Number.isFinite(ms)) throw new MillraceError('invalid_date', `${what}: "${text}" is not a valid date`);
  return ms;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * The ledger: config-typed accounts whose events live on the shard their
 * shard key routes to, with balances served from period aggregates built by a
 * transactional (exactly-once) cursor over each shard's log positions.
 */
export class Ledger {
  readonly types = new Map<string, AccountType>();
  readonly periodMs: number;
  readonly offsetMs: number;
  /** Aggregator transactions and the events they covered, for metrics. */
  readonly stats = { aggregatorChunks: 0, aggregatedEvents: 0 };

  constructor(
    readonly rt: Runtime,
    readonly cfg: LedgerConfig,
  ) {
    for (const [name, t] of Object.entries(cfg.accounts)) {
      const inAuxOrder = (g: string[]) => t.aux.filter((a) => g.includes(a));
      this.types.set(name, { ...t, name, aggGroupings: [[], ...t.groupings.map(inAuxOrder)], shardKeyAttrs: t.shard_key ?? t.key });
    }
    this.periodMs = cfg.aggregation.period === 'day' ? 86_400_000 : 3_600_000;
    const tz = cfg.aggregation.timezone;
    this.offsetMs = tz === 'UTC' ? 0 : (tz[0] === '-' ? -1 : 1) * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6))) * 60_000;
    if (cfg.retention_months !== undefined && rt.storage.shards.some((s) => !s.driver.capabilities.tablePartitioning)) {
      throw new MillraceError('config_invalid', 'ledger.retention_months needs PostgreSQL: SQLite keeps one unpartitioned events table and never drops events');
    }
  }

  // ---------------------------------------------------------------- retention

  /** Start of the oldest UTC month retention keeps at `now` (the current month and `retention_months` before it); null without retention. */
  retentionHorizon(now: number = this.rt.clock.now()): number | null {
    const n = this.cfg.retention_months;
    if (n === undefined) return null;
    const d = new Date(now);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - n, 1);
  }

  /** Refuses a date before the retention horizon: events of those months may be dropped, so it has no exact answer. */
  private checkRetention(ms: number, what: string): void {
    const h = this.retentionHorizon();
    if (h !== null && ms < h) {
      throw new MillraceError('retention_exceeded', `${what} ${iso(ms)} is before the retention horizon ${iso(h)} (ledger.retention_months = ${this.cfg.retention_months}): events of older months may have been dropped`, {
        details: { horizon: iso(h) },
      });
    }
  }

  // ---------------------------------------------------------------- types & routing

  accountType(name: string): AccountType {
    const t = this.types.get(name);
    if (t === undefined) throw new MillraceError('account_type_not_found', `no account type "${name}" in the ledger config`, { details: { type: name } });
    return t;
  }

  /** Validates account attributes; returns key values (in key order) and aux values. */
  accountAttrs(t: AccountType, attrs: unknown, where: string, allowAux: boolean): { keyVals: string[]; aux: Record<string, string> } {
    if (attrs === null || typeof attrs !== 'object' || Array.isArray(attrs)) throw new MillraceError('invalid_attributes', `${where}: attributes must be an object`);
    const a = attrs as Record<string, unknown>;
    for (const [k, v] of Object.entries(a)) {
      if (!t.key.includes(k) && !(allowAux && t.aux.includes(k))) {
        throw new MillraceError('invalid_attributes', `${where}: account type "${t.name}" has no ${allowAux ? '' : 'key '}attribute "${k}"`, { details: { attribute: k } });
      }
      if (typeof v !== 'string' || v.length > MAX_ATTR_LEN) throw new MillraceError('invalid_attributes', `${where}: attribute "${k}" must be a string of at most ${MAX_ATTR_LEN} characters`);
    }
    const keyVals = t.key.map((k) => {
      const v = a[k];
      if (v === undefined) throw new MillraceError('invalid_attributes', `${where}: key attribute "${k}" of account type "${t.name}" is missing`, { details: { attribute: k } });
      return v as string;
    });
    const aux: Record<string, string> = {};
    for (const k of t.aux) if (a[k] !== undefined) aux[k] = a[k] as string;
    return { keyVals, aux };
  }

  accountShard(t: AccountType, keyVals: readonly string[]): Shard {
    return this.rt.storage.shardFor(t.shardKeyAttrs.map((a) => keyVals[t.key.indexOf(a)]!));
  }

  private keyObject(t: AccountType, keyVals: readonly string[]): Attrs {
    return Object.fromEntries(t.key.map((k, i) => [k, keyVals[i]!]));
  }

  private keyedType(kind: 'locks' | 'states', name: string, attrs: unknown, where: string): { keyText: string; shard: Shard; keyVals: string[] } {
    const t = this.cfg[kind][name];
    if (t === undefined) {
      throw new MillraceError(kind === 'locks' ? 'lock_type_not_found' : 'state_type_not_found', `no ${kind === 'locks' ? 'lock' : 'state'} type "${name}" in the ledger config`, {
        details: { type: name },
      });
    }
    if (attrs === null || typeof attrs !== 'object' || Array.isArray(attrs)) throw new MillraceError('invalid_attributes', `${where}: attributes must be an object`);
    const a = attrs as Record<string, unknown>;
    for (const [k, v] of Object.entries(a)) {
      if (!t.key.includes(k)) throw new MillraceError('invalid_attributes', `${where}: ${kind === 'locks' ? 'lock' : 'state'} type "${name}" has no attribute "${k}"`);
      if (typeof v !== 'string' || v.length > MAX_ATTR_LEN) throw new MillraceError('invalid_attributes', `${where}: attribute "${k}" must be a string of at most ${MAX_ATTR_LEN} characters`);
    }
    const keyVals = t.key.map((k) => {
      if (a[k] === undefined) throw new MillraceError('invalid_attributes', `${where}: key attribute "${k}" is missing`, { details: { attribute: k } });
      return a[k] as string;
    });
    const sk = (t.shard_key ?? t.key).map((k) => keyVals[t.key.indexOf(k)]!);
    return { keyText: JSON.stringify(keyVals), shard: this.rt.storage.shardFor(sk), keyVals };
  }

  /** Start of the aggregation period holding `ms`. */
  periodStart(ms: number): number {
    return Math.floor((ms + this.offsetMs) / this.periodMs) * this.periodMs - this.offsetMs;
  }

  // ---------------------------------------------------------------- write

  async write(req: BatchRequest): Promise<BatchAnswer> {
    const now = this.rt.clock.now();
    const events = req.events ?? [];
    if (!Array.isArray(events)) throw badRequest('events must be an array');
    if (events.length > this.cfg.max_batch_events) throw badRequest(`a batch holds at most ${this.cfg.max_batch_events} events`);
    const dtDefault = req.dt_default === undefined ? undefined : parseDt(req.dt_default, 'dt_default');
    const prepared: Prepared[] = events.map((e, i) => {
      const where = `events[${i}]`;
      const t = this.accountType(e.account.type);
      const { keyVals, aux } = this.accountAttrs(t, e.account.attrs, `${where}.account.attrs`, true);
      if (e.side !== 'debit' && e.side !== 'credit') throw badRequest(`${where}.side must be "debit" or "credit"`);
      const dt = e.dt !== undefined ? parseDt(e.dt, `${where}.dt`) : dtDefault;
      if (dt === undefined) throw new MillraceError('invalid_date', `${where}.dt is missing and the batch has no dt_default`);
      this.checkRetention(dt, `${where}.dt`);
      return {
        t,
        keyVals,
        accKey: JSON.stringify(keyVals),
        aux: sortedObject(aux),
        side: e.side,
        units: parseAmount(e.amount, t.scale, `${where}.amount`),
        dt,
        info: e.info === undefined ? null : JSON.stringify(e.info),
        shard: this.accountShard(t, keyVals),
      };
    });
    const locks = (req.locks ?? []).map((l, i) => {
      if (typeof l.uid !== 'string' || l.uid.length === 0 || l.uid.length > 200) throw badRequest(`locks[${i}].uid must be 1-200 characters`);
      return { ...this.keyedType('locks', l.type, l.attrs, `locks[${i}].attrs`), type: l.type, uid: l.uid, attrs: l.attrs };
    });
    const states = (req.states ?? []).map((s, i) => {
      if (s.expected_version !== undefined && (!Number.isSafeInteger(s.expected_version) || s.expected_version < 0)) {
        throw badRequest(`states[${i}].expected_version must be a non-negative integer`);
      }
      if (s.state === undefined) throw badRequest(`states[${i}].state is missing`);
      return { ...this.keyedType('states', s.type, s.attrs, `states[${i}].attrs`), type: s.type, attrs: s.attrs, state: JSON.stringify(s.state), expected: s.expected_version };
    });
    const seenStates = new Set<string>();
    for (const s of states) {
      const k = `${s.type}\u0000${s.keyText}`;
      if (seenStates.has(k)) throw badRequest(`state ${s.type} ${s.keyText} appears twice in one batch`);
      seenStates.add(k);
    }
    if (prepared.length === 0 && states.length === 0) throw badRequest('a batch needs at least one event or state');

    const idem = req.idempotency_key;
    if (idem !== undefined && (typeof idem !== 'string' || idem.length === 0 || idem.length > 200)) throw badRequest('idempotency_key must be 1-200 characters');
    const requestHash = createHash('sha256').update(canonical({ ...req, idempotency_key: undefined })).digest('hex');
    const home = idem === undefined ? undefined : this.rt.storage.shardFor(['ledger.idempotency', idem]);
    if (idem !== undefined && home !== undefined) {
      const rows = await home.reader.all<{ request_hash: string; answer: string }>('SELECT request_hash, answer FROM ledger_idempotency WHERE key = ?', [idem]);
      const prior = rows[0];
      if (prior) {
        if (prior.request_hash !== requestHash) throw reused(idem);
        return JSON.parse(prior.answer) as BatchAnswer;
      }
    }
    const batchId = idem === undefined ? randomUUID() : `idem-${createHash('sha256').update(idem).digest('hex').slice(0, 32)}`;

    // Group the batch by shard; each shard's part commits atomically.
    const parts = new Map<string, { shard: Shard; events: Prepared[]; locks: typeof locks; states: typeof states }>();
    const part = (s: Shard) => {
      let p = parts.get(s.name);
      if (!p) parts.set(s.name, (p = { shard: s, events: [], locks: [], states: [] }));
      return p;
    };
    for (const e of prepared) part(e.shard).events.push(e);
    for (const l of locks) part(l.shard).locks.push(l);
    for (const s of states) part(s.shard).states.push(s);
    const ordered = [...parts.values()].sort((a, b) => (a.shard.name < b.shard.name ? -1 : 1));

    // Preflight across shards, so a stale version or a missing lock on one
    // shard fails the batch before any shard is written.
    if (ordered.length > 1) {
      for (const p of ordered) {
        for (const l of p.locks) await this.checkLockHeld(p.shard.reader, l.type, l.keyText, l.uid, now);
        for (const s of p.states) await this.checkStateVersion(p.shard.reader, s.type, s.keyText, s.expected);
      }
    }

    const stateVersions: BatchAnswer['states'] = [];
    const committed: string[] = [];
    for (const p of ordered) {
      try {
        const versions = await p.shard.write(async (tx) => {
          if (idem !== undefined) {
            const n = await tx.run('INSERT INTO ledger_batch_parts (key, request_hash, created_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING', [idem, requestHash, now]);
            if (n === 0) {
              const r = await tx.all<{ request_hash: string }>('SELECT request_hash FROM ledger_batch_parts WHERE key = ?', [idem]);
              if (r[0]?.request_hash !== requestHash) throw reused(idem);
              return null; // this part committed on an earlier attempt
            }
          }
          for (const l of p.locks) {
            await this.lockHead(tx, l.type, l.keyText);
            await this.checkLockHeld(tx, l.type, l.keyText, l.uid, now);
          }
          const versions: BatchAnswer['states'] = [];
          for (const s of p.states) versions.push({ type: s.type, attrs: s.attrs, version: await this.writeState(tx, s.type, s.keyText, s.state, s.expected, now) });
          await this.insertEvents(tx, p.shard, batchId, p.events);
          return versions;
        });
        if (versions) stateVersions.push(...versions);
        committed.push(p.shard.name);
      } catch (err) {
        if (committed.length > 0 && err instanceof MillraceError) {
          throw new MillraceError(err.code, `${err.message} (the parts of this batch on shards ${committed.join(', ')} were already committed; cross-shard batches are atomic per shard only)`, {
            details: { ...(err.details ?? {}), committed_shards: committed },
            cause: err,
          });
        }
        throw err;
      }
    }
    const answer: BatchAnswer = { batch_id: batchId, events: prepared.length, states: stateVersions };
    if (idem !== undefined && home !== undefined) {
      await home.write(async (tx) => {
        await tx.run('INSERT INTO ledger_idempotency (key, request_hash, answer, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING', [
          idem,
          requestHash,
          JSON.stringify(answer),
          now,
        ]);
      });
      const rows = await home.reader.all<{ request_hash: string; answer: string }>('SELECT request_hash, answer FROM ledger_idempotency WHERE key = ?', [idem]);
      if (rows[0] && rows[0].request_hash !== requestHash) throw reused(idem);
      if (rows[0]) return JSON.parse(rows[0].answer) as BatchAnswer;
    }
    return answer;
  }

  private async insertEvents(tx: Tx, shard: Shard, batchId: string, events: Prepared[]): Promise<void> {
    if (events.length === 0) return;
    const ids: number[] = [];
    const CHUNK = 400;
    for (let off = 0; off < events.length; off += CHUNK) {
      const chunk = events.slice(off, off + CHUNK);
      const params: unknown[] = [];
      for (const e of chunk) params.push(batchId, e.t.name, e.accKey, JSON.stringify(e.aux), e.side, e.units.toString(), e.dt, e.info);
      const rows = await tx.all<{ id: number }>(
        `INSERT INTO ledger_events (batch_id, type, acc_key, aux, side, amount, dt, info) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')} RETURNING id`,
        params,
      );
      for (const r of rows) ids.push(Number(r.id));
    }
    // One log event per account touched: the exporter ships these in position
    // order, and the aggregator follows their positions.
    const byAccount = new Map<string, Array<{ e: Prepared; id: number }>>();
    events.forEach((e, i) => {
      const k = `${e.t.name}\u0000${e.accKey}`;
      let l = byAccount.get(k);
      if (!l) byAccount.set(k, (l = []));
      l.push({ e, id: ids[i]! });
    });
    for (const list of byAccount.values()) {
      const first = list[0]!.e;
      const streamKey = first.accKey.length <= 400 ? first.accKey : createHash('sha1').update(first.accKey).digest('hex');
      await this.rt.log.appendIn(tx, shard, `ledger/${first.t.name}/${streamKey}`, [
        {
          type: POSTED,
          data: {
            batch_id: batchId,
            account: { type: first.t.name, key: this.keyObject(first.t, first.keyVals) },
            acc_key: first.accKey,
            events: list.map(({ e, id }) => ({
              id,
              side: e.side,
              amount: formatUnits(e.units, e.t.scale),
              units: e.units.toString(),
              dt: e.dt,
              aux: e.aux,
              ...(e.info === null ? {} : { info: JSON.parse(e.info) as unknown }),
            })),
          },
        },
      ]);
    }
  }

  // ---------------------------------------------------------------- aggregation

  /** Bucket sizes inside a period: level 1 = period / 24 (an hour for days), level 2 = level 1 / 60 (a minute). */
  bucketMs(level: number): number {
    return level === 1 ? this.periodMs / 24 : this.periodMs / 24 / 60;
  }

  /** Start of the level-`level` bucket holding `ms` (buckets nest inside periods and inside each other). */
  bucketStart(ms: number, level: number): number {
    const size = this.bucketMs(level);
    return Math.floor((ms + this.offsetMs) / size) * size - this.offsetMs;
  }

  periodEnd(ms: number): number {
    return this.periodStart(ms) + this.periodMs;
  }

  /**
   * Aggregator step, inside the cursor's transaction: stamps each posted
   * event with its log position and folds it into the period aggregates of
   * every grouping. An aggregate at boundary b holds the sums of the
   * aggregated events dated before b; a backdated event updates the
   * aggregates after its date here, off the write path.
   */
  async aggregate(batch: readonly LogEvent[], tx: Tx): Promise<void> {
    interface Delta {
      type: string;
      accKey: string;
      grp: string;
      grpVals: string;
      byEnd: Map<number, { d: bigint; c: bigint }>;
    }
    const deltas = new Map<string, Delta>();
    // Turnover buckets: per (type, account, grouping, level), bucket start -> group values -> sums.
    const buckets = new Map<string, { type: string; accKey: string; grp: string; level: number; rows: Map<string, { bucket: number; grpVals: string; d: bigint; c: bigint }> }>();
    let lastPos = 0;
    let n = 0;
    for (const le of batch) {
      lastPos = le.pos ?? lastPos;
      if (le.type !== POSTED) continue;
      const data = JSON.parse(le.data) as {
        account: { type: string };
        acc_key: string;
        events: Array<{ id: number; side: Side; units: string; dt: number; aux: Record<string, string> }>;
      };
      const ids = data.events.map((e) => e.id);
      for (let off = 0; off < ids.length; off += 500) {
        const chunk = ids.slice(off, off + 500);
        await tx.run(`UPDATE ledger_events SET pos = ? WHERE id IN (${chunk.map(() => '?').join(', ')})`, [le.pos, ...chunk]);
      }
      const t = this.types.get(data.account.type);
      if (t === undefined) continue;
      for (const e of data.events) {
        n++;
        const end = this.periodEnd(e.dt);
        const units = BigInt(e.units);
        for (const g of t.aggGroupings) {
          const grp = JSON.stringify(g);
          const grpVals = JSON.stringify(g.map((a) => e.aux[a] ?? null));
          const k = `${t.name}\u0000${data.acc_key}\u0000${grp}\u0000${grpVals}`;
          let d = deltas.get(k);
          if (!d) deltas.set(k, (d = { type: t.name, accKey: data.acc_key, grp, grpVals, byEnd: new Map() }));
          let s = d.byEnd.get(end);
          if (!s) d.byEnd.set(end, (s = { d: 0n, c: 0n }));
          if (e.side === 'debit') s.d += units;
          else s.c += units;
          for (let level = 1; level <= 2; level++) {
            const bucket = this.bucketStart(e.dt, level);
            const bk = `${t.name}\u0000${data.acc_key}\u0000${grp}\u0000${level}`;
            let b = buckets.get(bk);
            if (!b) buckets.set(bk, (b = { type: t.name, accKey: data.acc_key, grp, level, rows: new Map() }));
            const rk = `${bucket}\u0000${grpVals}`;
            let r = b.rows.get(rk);
            if (!r) b.rows.set(rk, (r = { bucket, grpVals, d: 0n, c: 0n }));
            if (e.side === 'debit') r.d += units;
            else r.c += units;
          }
        }
      }
    }
    for (const d of deltas.values()) await this.applyDelta(tx, d.type, d.accKey, d.grp, d.grpVals, d.byEnd, lastPos);
    for (const b of buckets.values()) await this.applyBuckets(tx, b.type, b.accKey, b.grp, b.level, [...b.rows.values()]);
    this.stats.aggregatorChunks++;
    this.stats.aggregatedEvents += n;
  }

  private async applyDelta(tx: Tx, type: string, accKey: string, grp: string, grpVals: string, byEnd: Map<number, { d: bigint; c: bigint }>, pos: number): Promise<void> {
    const ends = [...byEnd.keys()].sort((a, b) => a - b);
    const minEnd = ends[0]!;
    const rows = await tx.all<{ boundary: number; debit: string; credit: string }>(
      `SELECT boundary, CAST(debit AS TEXT) AS debit, CAST(credit AS TEXT) AS credit FROM ledger_aggregates
        WHERE type = ? AND acc_key = ? AND grp = ? AND grp_vals = ? AND boundary >= COALESCE(
          (SELECT MAX(boundary) FROM ledger_aggregates WHERE type = ? AND acc_key = ? AND grp = ? AND grp_vals = ? AND boundary < ?), ?)
        ORDER BY boundary`,
      [type, accKey, grp, grpVals, type, accKey, grp, grpVals, minEnd, minEnd],
    );
    const cur = rows.map((r) => ({ boundary: Number(r.boundary), d: unitsOf(r.debit), c: unitsOf(r.credit), isNew: false }));
    for (const end of ends) {
      if (cur.some((r) => r.boundary === end)) continue;
      // Nearest earlier aggregate: no aggregated event lies between it and this period.
      let base = { d: 0n, c: 0n };
      for (const r of cur) if (r.boundary < end && !r.isNew) base = { d: r.d, c: r.c };
      cur.push({ boundary: end, d: base.d, c: base.c, isNew: true });
    }
    cur.sort((a, b) => a.boundary - b.boundary);
    for (const r of cur) {
      if (r.boundary < minEnd) continue;
      for (const end of ends) {
        if (end > r.boundary) break;
        const s = byEnd.get(end)!;
        r.d += s.d;
        r.c += s.c;
      }
      if (r.isNew) {
        await tx.run('INSERT INTO ledger_aggregates (type, acc_key, grp, grp_vals, boundary, debit, credit, pos) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [
          type,
          accKey,
          grp,
          grpVals,
          r.boundary,
          r.d.toString(),
          r.c.toString(),
          pos,
        ]);
      } else {
        await tx.run('UPDATE ledger_aggregates SET debit = ?, credit = ?, pos = ? WHERE type = ? AND acc_key = ? AND grp = ? AND grp_vals = ? AND boundary = ?', [
          r.d.toString(),
          r.c.toString(),
          pos,
          type,
          accKey,
          grp,
          grpVals,
          r.boundary,
        ]);
      }
    }
  }

  /**
   * Adds turnovers to their buckets. Sums are read and written back (exact
   * BigInt arithmetic in both dialects); a bucket is touched only by the
   * events dated inside it, so a backdated event costs two rows here.
   */
  private async applyBuckets(tx: Tx, type: string, accKey: string, grp: string, level: number, rows: Array<{ bucket: number; grpVals: string; d: bigint; c: bigint }>): Promise<void> {
    const existing = new Map<string, { d: bigint; c: bigint }>();
    const starts = [...new Set(rows.map((r) => r.bucket))];
    for (let off = 0; off < starts.length; off += 500) {
      const chunk = starts.slice(off, off + 500);
      const found = await tx.all<{ bucket: number; grp_vals: string; debit: string; credit: string }>(
        `SELECT bucket, grp_vals, CAST(debit AS TEXT) AS debit, CAST(credit AS TEXT) AS credit FROM ledger_buckets
          WHERE type = ? AND acc_key = ? AND grp = ? AND level = ? AND bucket IN (${chunk.map(() => '?').join(', ')})`,
        [type, accKey, grp, level, ...chunk],
      );
      for (const f of found) existing.set(`${Number(f.bucket)}\u0000${f.grp_vals}`, { d: unitsOf(f.debit), c: unitsOf(f.credit) });
    }
    const inserts: unknown[][] = [];
    for (const r of rows) {
      const e = existing.get(`${r.bucket}\u0000${r.grpVals}`);
      if (e) {
        await tx.run('UPDATE ledger_buckets SET debit = ?, credit = ? WHERE type = ? AND acc_key = ? AND grp = ? AND level = ? AND bucket = ? AND grp_vals = ?', [
          (e.d + r.d).toString(),
          (e.c + r.c).toString(),
          type,
          accKey,
          grp,
          level,
          r.bucket,
          r.grpVals,
        ]);
      } else inserts.push([type, accKey, grp, level, r.bucket, r.grpVals, r.d.toString(), r.c.toString()]);
    }
    for (let off = 0; off < inserts.length; off += 100) {
      const chunk = inserts.slice(off, off + 100);
      await tx.run(`INSERT INTO ledger_buckets (type, acc_key, grp, level, bucket, grp_vals, debit, credit) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`, chunk.flat());
    }
  }

  // ---------------------------------------------------------------- partitions (PostgreSQL)

  /**
   * Creates the monthly partitions of ledger_events (UTC months, by dt) from
   * the month of `now` to `ahead_months` later, on every PostgreSQL shard.
   * Rows of a new month already sitting in the default partition (backdated or
   * far-future events) are moved into it in the same transaction, before it is
   * attached. Returns the partitions created.
   */
  async ensurePartitions(now: number): Promise<string[]> {
    const created: string[] = [];
    const d = new Date(now);
    for (const shard of this.rt.storage.shards) {
      if (!shard.driver.capabilities.tablePartitioning) continue;
      for (let i = 0; i <= this.cfg.partitions.ahead_months; i++) {
        const from = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + i, 1);
        const to = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + i + 1, 1);
        const m = new Date(from);
        const name = `ledger_events_p${m.getUTCFullYear()}${String(m.getUTCMonth() + 1).padStart(2, '0')}`;
        const exists = await shard.reader.all<{ r: string | null }>('SELECT to_regclass(?) AS r', [name]);
        if (exists[0]?.r) continue;
        const made = await shard.write(async (tx) => {
          // Two creators at once (the partitions timer, an operator, another node) would both pass the
          // check and one would fail on the catalog's unique index: serialize them, then look again.
          await tx.all(`SELECT pg_advisory_xact_lock(hashtext('millrace:' || ?)) AS l`, [name]);
          if ((await tx.all<{ r: string | null }>('SELECT to_regclass(?) AS r', [name]))[0]?.r) return false;
          await tx.run(`CREATE TABLE ${name} (LIKE ledger_events INCLUDING DEFAULTS)`);
          await tx.run(`WITH moved AS (DELETE FROM ledger_events_default WHERE dt >= ? AND dt < ? RETURNING *) INSERT INTO ${name} SELECT * FROM moved`, [from, to]);
          await tx.run(`ALTER TABLE ledger_events ATTACH PARTITION ${name} FOR VALUES FROM (${from}) TO (${to})`);
          return true;
        });
        if (made) created.push(`${shard.name}/${name}`);
      }
    }
    return created;
  }

  /**
   * Retention: on every PostgreSQL shard, drops each monthly partition that
   * ends at or before the retention horizon and that the aggregates cover:
   * no row of it is unaggregated (pos IS NULL), every stamped position is at
   * or before the aggregator cursor, and every account with rows in it has a
   * period-start balance (grouping []) at or after the end of the period of
   * its last event there. Balances at dates from the horizon on then never
   * read the dropped rows (the aggregate at or before dt covers them), so they
   * stay exact. A partition that fails a check is kept and retried on the next
   * run. Without `retention_months` nothing is dropped.
   */
  async dropExpiredPartitions(now: number): Promise<{ dropped: string[]; kept: Array<{ partition: string; reason: string }> }> {
    const dropped: string[] = [];
    const kept: Array<{ partition: string; reason: string }> = [];
    const horizon = this.retentionHorizon(now);
    if (horizon === null) return { dropped, kept };
    for (const shard of this.rt.storage.shards) {
      if (!shard.driver.capabilities.tablePartitioning) continue;
      const parts = await shard.reader.all<{ name: string }>(
        `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ledger_events'::regclass ORDER BY c.relname`,
      );
      for (const { name } of parts) {
        const m = /^ledger_events_p(\d{4})(\d{2})$/.exec(name);
        if (!m) continue;
        const end = Date.UTC(Number(m[1]), Number(m[2]), 1);
        if (end > horizon) continue;
        const keep = (reason: string) => kept.push({ partition: `${shard.name}/${name}`, reason });
        const unaggregated = await shard.reader.all<{ n: string }>(`SELECT COUNT(*) AS n FROM ${name} WHERE pos IS NULL`);
        if (Number(unaggregated[0]?.n ?? 0) > 0) {
          keep(`${unaggregated[0]!.n} rows not aggregated yet`);
          continue;
        }
        const cursor = await this.aggregatorPos(shard);
        const maxPos = await shard.reader.all<{ p: string | null }>(`SELECT MAX(pos) AS p FROM ${name}`);
        if (maxPos[0]?.p != null && Number(maxPos[0].p) > cursor) {
          keep('rows stamped beyond the aggregator cursor');
          continue;
        }
        const missing = await shard.reader.all<{ n: string }>(
          `SELECT COUNT(*) AS n FROM (SELECT type, acc_key, MAX(dt) AS last FROM ${name} GROUP BY type, acc_key) e
            WHERE NOT EXISTS (SELECT 1 FROM ledger_aggregates a WHERE a.type = e.type AND a.acc_key = e.acc_key AND a.grp = '[]'
                                AND a.boundary >= ((e.last + ?) / ?) * ? - ? + ?)`,
          [this.offsetMs, this.periodMs, this.periodMs, this.offsetMs, this.periodMs],
        );
        if (Number(missing[0]?.n ?? 0) > 0) {
          keep(`${missing[0]!.n} accounts have no period-start balance after their last event in it`);
          continue;
        }
        // Writes dated before the horizon are refused, so only a write that
        // passed its check before the horizon moved can still land here: the
        // parent is locked first (the order inserts take), and the cheap check
        // runs again under the lock.
        const ok = await shard.write(async (tx) => {
          await tx.run(`LOCK TABLE ledger_events IN ACCESS EXCLUSIVE MODE`);
          if ((await tx.all(`SELECT 1 AS x FROM ${name} WHERE pos IS NULL LIMIT 1`)).length > 0) return false;
          await tx.run(`DROP TABLE ${name}`);
          return true;
        });
        if (ok) dropped.push(`${shard.name}/${name}`);
        else keep('rows not aggregated yet');
      }
    }
    return { dropped, kept };
  }

  /** Runs the aggregator on every shard until it has caught up with the readable log. */
  async aggregateOnce(): Promise<number> {
    let total = 0;
    for (const shard of this.rt.storage.shards) {
      const from0 = await this.rt.cursors.ensure(shard.name, AGGREGATOR_CURSOR, 'earliest');
      let from = from0;
      for await (const batch of this.rt.cursors.tail(shard.name, from, { untilCaughtUp: true, chunk: this.cfg.aggregation.chunk })) {
        const to = batch[batch.length - 1]!.pos!;
        const f = from;
        await shard.write(async (tx) => {
          await this.aggregate(batch, tx);
          await this.rt.cursors.advanceIn(tx, AGGREGATOR_CURSOR, f, to);
        });
        total += batch.length;
        from = to;
      }
    }
    return total;
  }

  /** Log positions not yet aggregated, per shard (the aggregator lag). */
  async lag(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const s of this.rt.storage.shards) {
      const pos = (await this.rt.cursors.position(s.name, AGGREGATOR_CURSOR)) ?? 0;
      out[s.name] = Math.max(0, this.rt.log.shardLog(s.name).signal.head - pos);
    }
    return out;
  }

  // ---------------------------------------------------------------- reads

  private async aggregatorPos(shard: Shard): Promise<number> {
    const r = await shard.reader.all<{ pos: number }>('SELECT pos FROM cursors WHERE name = ?', [AGGREGATOR_CURSOR]);
    return r[0]?.pos ?? -1;
  }

  /**
   * Runs reads that must see one aggregator state: the aggregator commits its
   * stamps, aggregates and cursor together, so equal cursor positions before
   * and after mean the reads saw no aggregator commit in between.
   */
  private async consistent<T>(shard: Shard, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const p1 = await this.aggregatorPos(shard);
      const r = await fn();
      if ((await this.aggregatorPos(shard)) === p1) return r;
    }
    throw new MillraceError('unavailable', 'the aggregator moved during every read attempt', { retryAfterS: 1 });
  }

  private resolveQuery(q: AccountQuery, where: string) {
    if (q === null || typeof q !== 'object') throw badRequest(`${where} must be an object`);
    const t = this.accountType(q.type);
    const { keyVals } = this.accountAttrs(t, q.key, `${where}.key`, false);
    const groupBy = q.group_by ?? [];
    if (groupBy.length > 0) {
      const allowed = t.groupings.some((g) => g.length === groupBy.length && groupBy.every((a) => g.includes(a)));
      if (!allowed || new Set(groupBy).size !== groupBy.length) {
        throw new MillraceError('grouping_not_allowed', `${where}.group_by [${groupBy.join(', ')}] is not a grouping of account type "${t.name}" (allowed: ${t.groupings.map((g) => `[${g.join(', ')}]`).join(', ') || 'none'})`, {
          details: { type: t.name, group_by: groupBy },
        });
      }
    }
    const filter = q.filter ?? {};
    for (const [k, v] of Object.entries(filter)) {
      if (!t.aux.includes(k)) throw new MillraceError('invalid_attributes', `${where}.filter: "${k}" is not an aux attribute of account type "${t.name}"`);
      if (typeof v !== 'string') throw new MillraceError('invalid_attributes', `${where}.filter.${k} must be a string`);
    }
    const needed = new Set([...groupBy, ...Object.keys(filter)]);
    // The smallest aggregated grouping that holds every attribute asked for.
    let cover: string[] | null = null;
    for (const g of t.aggGroupings) if ([...needed].every((a) => g.includes(a)) && (cover === null || g.length < cover.length)) cover = g;
    return { t, keyVals, accKey: JSON.stringify(keyVals), shard: this.accountShard(t, keyVals), groupBy: t.aux.filter((a) => groupBy.includes(a)), filter, cover };
  }

  /**
   * Debit and credit of events dated before `dt`, as contributions carrying
   * the attributes they are known by. The aggregator keeps, per grouping
   * value: balances at period boundaries (ledger_aggregates, each at a
   * boundary b holds every stamped event dated before b) and turnovers of
   * level-1 and level-2 buckets inside periods (ledger_buckets, an hour and a
   * minute for day periods). With P the start of dt's period, H of its level-1
   * bucket and M of its level-2 bucket, the stamped events dated before dt are
   *   the nearest aggregate at or before dt (no stamped event of that group
   *   lies between it and P: it would have created a boundary in between)
   *   + level-1 buckets in [P, H) + level-2 buckets in [H, M)
   *   + stamped events dated in [M, dt), read one by one;
   * and events the aggregator has not reached (pos IS NULL) dated before dt
   * are read one by one. Every part is a bounded index range whatever the
   * history length: at most 23 + 59 bucket rows per group value.
   */
  private async balanceContributions(shard: Shard, type: string, accKey: string, cover: string[] | null, dt: number): Promise<Contribution[]> {
    const out: Contribution[] = [];
    if (cover === null) {
      // No aggregated grouping holds the attributes asked for: a plain scan,
      // which needs every event since the beginning.
      if (this.cfg.retention_months !== undefined) {
        throw new MillraceError('retention_exceeded', 'no aggregated grouping holds the attributes asked for, so this read would scan every event since the beginning, and retention (ledger.retention_months) drops old months: ask for a configured grouping');
      }
      const rows = await shard.reader.all<{ side: Side; amount: string; aux: string }>(
        'SELECT side, CAST(amount AS TEXT) AS amount, aux FROM ledger_events WHERE type = ? AND acc_key = ? AND dt < ?',
        [type, accKey, dt],
      );
      for (const r of rows) this.pushEvent(out, r);
      return out;
    }
    const grp = JSON.stringify(cover);
    const asVals = (text: string) => {
      const vals = JSON.parse(text) as Array<string | null>;
      return Object.fromEntries(cover.map((k, i) => [k, vals[i] ?? null]));
    };
    // Per group value (a skip scan over the distinct values), the aggregate at the latest boundary <= dt.
    const aggs = await shard.reader.all<{ grp_vals: string; debit: string; credit: string }>(
      `WITH RECURSIVE g(v) AS (
         SELECT (SELECT MIN(grp_vals) FROM ledger_aggregates WHERE type = ? AND acc_key = ? AND grp = ?)
         UNION ALL
         SELECT (SELECT MIN(grp_vals) FROM ledger_aggregates WHERE type = ? AND acc_key = ? AND grp = ? AND grp_vals > g.v) FROM g WHERE g.v IS NOT NULL
       )
       SELECT a.grp_vals, CAST(a.debit AS TEXT) AS debit, CAST(a.credit AS TEXT) AS credit
         FROM g CROSS JOIN ledger_aggregates a
        WHERE a.type = ? AND a.acc_key = ? AND a.grp = ? AND a.grp_vals = g.v
          AND a.boundary = (SELECT MAX(b.boundary) FROM ledger_aggregates b WHERE b.type = ? AND b.acc_key = ? AND b.grp = ? AND b.grp_vals = g.v AND b.boundary <= ?)`,
      [type, accKey, grp, type, accKey, grp, type, accKey, grp, type, accKey, grp, dt],
    );
    for (const a of aggs) out.push({ vals: asVals(a.grp_vals), d: unitsOf(a.debit), c: unitsOf(a.credit) });
    const p = this.periodStart(dt);
    const h = this.bucketStart(dt, 1);
    const m = this.bucketStart(dt, 2);
    const buckets = await shard.reader.all<{ grp_vals: string; debit: string; credit: string }>(
      `SELECT grp_vals, CAST(debit AS TEXT) AS debit, CAST(credit AS TEXT) AS credit FROM ledger_buckets
        WHERE type = ? AND acc_key = ? AND grp = ? AND level = 1 AND bucket >= ? AND bucket < ?
       UNION ALL
       SELECT grp_vals, CAST(debit AS TEXT) AS debit, CAST(credit AS TEXT) AS credit FROM ledger_buckets
        WHERE type = ? AND acc_key = ? AND grp = ? AND level = 2 AND bucket >= ? AND bucket < ?`,
      [type, accKey, grp, p, h, type, accKey, grp, h, m],
    );
    for (const b of buckets) out.push({ vals: asVals(b.grp_vals), d: unitsOf(b.debit), c: unitsOf(b.credit) });
    const rows = await shard.reader.all<{ side: Side; amount: string; aux: string }>(
      `SELECT side, CAST(amount AS TEXT) AS amount, aux FROM ledger_events WHERE type = ? AND acc_key = ? AND dt >= ? AND dt < ? AND pos IS NOT NULL
       UNION ALL
       SELECT side, CAST(amount AS TEXT) AS amount, aux FROM ledger_events WHERE type = ? AND acc_key = ? AND pos IS NULL AND dt < ?`,
      [type, accKey, m, dt, type, accKey, dt],
    );
    for (const r of rows) this.pushEvent(out, r);
    return out;
  }

  private pushEvent(out: Contribution[], r: { side: Side; amount: string; aux: string }): void {
    const u = unitsOf(r.amount);
    out.push({ vals: JSON.parse(r.aux) as Record<string, string>, d: r.side === 'debit' ? u : 0n, c: r.side === 'credit' ? u : 0n });
  }

  private rollup(contribs: Contribution[], groupBy: string[], filter: Record<string, string>): Map<string, { group: Record<string, string | null>; d: bigint; c: bigint }> {
    const out = new Map<string, { group: Record<string, string | null>; d: bigint; c: bigint }>();
    for (const x of contribs) {
      if (Object.entries(filter).some(([k, v]) => (x.vals[k] ?? null) !== v)) continue;
      const group = Object.fromEntries(groupBy.map((a) => [a, x.vals[a] ?? null]));
      const k = JSON.stringify(groupBy.map((a) => group[a]));
      const g = out.get(k);
      if (g) {
        g.d += x.d;
        g.c += x.c;
      } else out.set(k, { group, d: x.d, c: x.c });
    }
    return out;
  }

  async balances(req: { dt: string; accounts: AccountQuery[] }): Promise<{ dt: string; balances: Array<{ type: string; key: Attrs; groups: GroupSums[] }> }> {
    const dt = parseDt(req.dt, 'dt');
    this.checkRetention(dt, 'dt');
    const qs = req.accounts.map((q, i) => this.resolveQuery(q, `accounts[${i}]`));
    const balances = [];
    for (const q of qs) {
      const contribs = await this.consistent(q.shard, () => this.balanceContributions(q.shard, q.t.name, q.accKey, q.cover, dt));
      const groups = [...this.rollup(contribs, q.groupBy, q.filter).values()].map((g) => ({ group: g.group, debit: formatUnits(g.d, q.t.scale), credit: formatUnits(g.c, q.t.scale) }));
      if (groups.length === 0 && q.groupBy.length === 0) groups.push({ group: {}, debit: formatUnits(0n, q.t.scale), credit: formatUnits(0n, q.t.scale) });
      balances.push({ type: q.t.name, key: this.keyObject(q.t, q.keyVals), groups: sortGroups(groups) });
    }
    return { dt: iso(dt), balances };
  }

  async turnovers(req: { dt_from: string; dt_to: string; accounts: AccountQuery[] }) {
    const from = parseDt(req.dt_from, 'dt_from');
    const to = parseDt(req.dt_to, 'dt_to');
    if (to < from) throw new MillraceError('invalid_date', 'dt_to must not be before dt_from');
    this.checkRetention(from, 'dt_from');
    const qs = req.accounts.map((q, i) => this.resolveQuery(q, `accounts[${i}]`));
    const turnovers = [];
    for (const q of qs) {
      const [a, b] = await this.consistent(q.shard, async () => [
        await this.balanceContributions(q.shard, q.t.name, q.accKey, q.cover, from),
        await this.balanceContributions(q.shard, q.t.name, q.accKey, q.cover, to),
      ]);
      const init = this.rollup(a!, q.groupBy, q.filter);
      const end = this.rollup(b!, q.groupBy, q.filter);
      const groups: TurnoverSums[] = [];
      for (const [k, e] of end) {
        const i = init.get(k) ?? { d: 0n, c: 0n };
        groups.push({
          group: e.group,
          debit_init: formatUnits(i.d, q.t.scale),
          credit_init: formatUnits(i.c, q.t.scale),
          debit_turnover: formatUnits(e.d - i.d, q.t.scale),
          credit_turnover: formatUnits(e.c - i.c, q.t.scale),
        });
      }
      if (groups.length === 0 && q.groupBy.length === 0) {
        const z = formatUnits(0n, q.t.scale);
        groups.push({ group: {}, debit_init: z, credit_init: z, debit_turnover: z, credit_turnover: z });
      }
      turnovers.push({ type: q.t.name, key: this.keyObject(q.t, q.keyVals), groups: sortGroups(groups) });
    }
    return { dt_from: iso(from), dt_to: iso(to), turnovers };
  }

  async events(req: { dt_from: string; dt_to: string; accounts: AccountQuery[]; limit: number; cursor?: string | undefined }): Promise<{ events: LedgerEventOut[]; next_cursor: string | null }> {
    const from = parseDt(req.dt_from, 'dt_from');
    const to = parseDt(req.dt_to, 'dt_to');
    if (to < from) throw new MillraceError('invalid_date', 'dt_to must not be before dt_from');
    this.checkRetention(from, 'dt_from');
    if (!Number.isInteger(req.limit) || req.limit < 1 || req.limit > 10_000) throw badRequest('limit must be an integer from 1 to 10000');
    const shardIdx = new Map(this.rt.storage.shards.map((s, i) => [s.name, i]));
    let after: [number, number, number] | null = null;
    if (req.cursor !== undefined) {
      try {
        const c = JSON.parse(Buffer.from(req.cursor, 'base64url').toString('utf8')) as unknown;
        if (!Array.isArray(c) || c.length !== 3 || !c.every((x) => Number.isSafeInteger(x))) throw new Error('shape');
        after = c as [number, number, number];
      } catch {
        throw new MillraceError('invalid_cursor', 'cursor is not one this API returned');
      }
    }
    const qs = req.accounts.map((q, i) => {
      if (q.group_by !== undefined && q.group_by.length > 0) throw badRequest(`accounts[${i}].group_by is not used when listing events`);
      return this.resolveQuery(q, `accounts[${i}]`);
    });
    const seen = new Set<string>();
    const all: Array<{ o: LedgerEventOut; k: [number, number, number] }> = [];
    for (const q of qs) {
      const dedupe = `${q.t.name}\u0000${q.accKey}\u0000${JSON.stringify(q.filter)}`;
      if (seen.has(dedupe)) continue;
      seen.add(dedupe);
      const si = shardIdx.get(q.shard.name)!;
      let lowDt = from;
      let lowId = -1;
      if (after !== null && after[0] >= from) {
        // Rows after the cursor in (dt, shard, id) order.
        const [cDt, cShard, cId] = after;
        lowDt = cDt;
        lowId = si < cShard ? Number.MAX_SAFE_INTEGER : si === cShard ? cId : -1;
      }
      const rows = await q.shard.reader.all<{ id: number; batch_id: string; aux: string; side: Side; amount: string; dt: number; info: string | null }>(
        `SELECT id, batch_id, aux, side, CAST(amount AS TEXT) AS amount, dt, info FROM ledger_events
          WHERE type = ? AND acc_key = ? AND dt >= ? AND dt < ? AND (dt > ? OR id > ?)
          ORDER BY dt, id LIMIT ?`,
        [q.t.name, q.accKey, lowDt, to, lowDt, lowId, Object.keys(q.filter).length ? 100_000 : req.limit + 1],
      );
      for (const r of rows) {
        const aux = JSON.parse(r.aux) as Record<string, string>;
        if (Object.entries(q.filter).some(([k, v]) => aux[k] !== v)) continue;
        const id = Number(r.id);
        const dt = Number(r.dt);
        all.push({
          k: [dt, si, id],
          o: {
            id,
            shard: q.shard.name,
            batch_id: r.batch_id,
            account: { type: q.t.name, key: this.keyObject(q.t, q.keyVals) },
            aux,
            side: r.side,
            amount: formatUnits(unitsOf(r.amount), q.t.scale),
            dt: iso(dt),
            info: r.info === null ? null : (JSON.parse(r.info) as unknown),
          },
        });
      }
    }
    const cmp = (a: [number, number, number], b: [number, number, number]) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
    all.sort((a, b) => cmp(a.k, b.k));
    const page = all.slice(0, req.limit);
    const more = all.length > req.limit;
    const last = page[page.length - 1];
    return { events: page.map((p) => p.o), next_cursor: more && last ? Buffer.from(JSON.stringify(last.k)).toString('base64url') : null };
  }

  // ---------------------------------------------------------------- locks

  /** Serializes every operation on one lock key (a row lock in PostgreSQL, the one writer in SQLite). */
  private async lockHead(tx: Tx, type: string, keyText: string): Promise<void> {
    await tx.run('INSERT INTO ledger_lock_heads (type, lock_key, n) VALUES (?, ?, 1) ON CONFLICT (type, lock_key) DO UPDATE SET n = ledger_lock_heads.n + 1', [type, keyText]);
  }

  private async checkLockHeld(q: { all: Tx['all'] }, type: string, keyText: string, uid: string, now: number): Promise<void> {
    const rows = await q.all<{ mode: string }>('SELECT mode FROM ledger_locks WHERE type = ? AND lock_key = ? AND uid = ? AND expires_at > ?', [type, keyText, uid, now]);
    if (rows.length === 0) {
      throw new MillraceError('lock_not_held', `lock ${type} ${keyText} is not held by "${uid}"`, { details: { type, key: keyText, uid } });
    }
  }

  private checkTimeout(timeout: unknown): number {
    if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout <= 0 || timeout > this.cfg.max_lock_timeout_s) {
      throw badRequest(`timeout_s must be a number above 0 and at most ${this.cfg.max_lock_timeout_s}`);
    }
    return Math.round(timeout * 1000);
  }

  private checkUid(uid: unknown): string {
    if (typeof uid !== 'string' || uid.length === 0 || uid.length > 200) throw badRequest('uid must be 1-200 characters');
    return uid;
  }

  async acquireLock(req: { type: string; attrs: Attrs; uid: string; mode: LockMode; timeout_s: number }) {
    const { keyText, shard } = this.keyedType('locks', req.type, req.attrs, 'attrs');
    const uid = this.checkUid(req.uid);
    if (req.mode !== 'exclusive' && req.mode !== 'shared') throw badRequest('mode must be "exclusive" or "shared"');
    const ttl = this.checkTimeout(req.timeout_s);
    const now = this.rt.clock.now();
    return shard.write(async (tx) => {
      await this.lockHead(tx, req.type, keyText);
      await tx.run('DELETE FROM ledger_locks WHERE type = ? AND lock_key = ? AND expires_at <= ?', [req.type, keyText, now]);
      const rows = await tx.all<{ uid: string; mode: LockMode }>('SELECT uid, mode FROM ledger_locks WHERE type = ? AND lock_key = ?', [req.type, keyText]);
      const others = rows.filter((r) => r.uid !== uid);
      const conflict = req.mode === 'exclusive' ? others[0] : others.find((r) => r.mode === 'exclusive');
      if (conflict) {
        throw new MillraceError('lock_held', `lock ${req.type} ${keyText} is held ${conflict.mode} by someone else`, {
          details: { type: req.type, key: keyText, held_mode: conflict.mode },
        });
      }
      const expiresAt = now + ttl;
      const n = await tx.run('UPDATE ledger_locks SET mode = ?, expires_at = ? WHERE type = ? AND lock_key = ? AND uid = ?', [req.mode, expiresAt, req.type, keyText, uid]);
      if (n === 0) await tx.run('INSERT INTO ledger_locks (type, lock_key, uid, mode, expires_at) VALUES (?, ?, ?, ?, ?)', [req.type, keyText, uid, req.mode, expiresAt]);
      return { type: req.type, attrs: req.attrs, uid, mode: req.mode, expires_at: iso(expiresAt) };
    });
  }

  async pingLock(req: { type: string; attrs: Attrs; uid: string; timeout_s: number }) {
    const { keyText, shard } = this.keyedType('locks', req.type, req.attrs, 'attrs');
    const uid = this.checkUid(req.uid);
    const ttl = this.checkTimeout(req.timeout_s);
    const now = this.rt.clock.now();
    return shard.write(async (tx) => {
      await this.lockHead(tx, req.type, keyText);
      const rows = await tx.all<{ mode: LockMode }>('SELECT mode FROM ledger_locks WHERE type = ? AND lock_key = ? AND uid = ? AND expires_at > ?', [req.type, keyText, uid, now]);
      if (rows.length === 0) throw new MillraceError('lock_not_held', `lock ${req.type} ${keyText} is not held by "${uid}"`, { details: { type: req.type, key: keyText, uid } });
      await tx.run('UPDATE ledger_locks SET expires_at = ? WHERE type = ? AND lock_key = ? AND uid = ?', [now + ttl, req.type, keyText, uid]);
      return { type: req.type, attrs: req.attrs, uid, mode: rows[0]!.mode, expires_at: iso(now + ttl) };
    });
  }

  async releaseLock(req: { type: string; attrs: Attrs; uid: string }) {
    const { keyText, shard } = this.keyedType('locks', req.type, req.attrs, 'attrs');
    const uid = this.checkUid(req.uid);
    const now = this.rt.clock.now();
    const released = await shard.write(async (tx) => {
      await this.lockHead(tx, req.type, keyText);
      const live = await tx.all('SELECT 1 AS x FROM ledger_locks WHERE type = ? AND lock_key = ? AND uid = ? AND expires_at > ?', [req.type, keyText, uid, now]);
      await tx.run('DELETE FROM ledger_locks WHERE type = ? AND lock_key = ? AND uid = ?', [req.type, keyText, uid]);
      return live.length > 0;
    });
    return { released };
  }

  async getLock(req: { type: string; attrs: Attrs }) {
    const { keyText, shard } = this.keyedType('locks', req.type, req.attrs, 'attrs');
    const rows = await shard.reader.all<{ uid: string; mode: LockMode; expires_at: number }>(
      'SELECT uid, mode, expires_at FROM ledger_locks WHERE type = ? AND lock_key = ? AND expires_at > ? ORDER BY uid',
      [req.type, keyText, this.rt.clock.now()],
    );
    return { type: req.type, attrs: req.attrs, holders: rows.map((r) => ({ uid: r.uid, mode: r.mode, expires_at: iso(Number(r.expires_at)) })) };
  }

  // ---------------------------------------------------------------- states

  private async checkStateVersion(q: { all: Tx['all'] }, type: string, keyText: string, expected: number | undefined): Promise<number> {
    const rows = await q.all<{ version: number }>('SELECT version FROM ledger_states WHERE type = ? AND state_key = ?', [type, keyText]);
    const current = rows[0] ? Number(rows[0].version) : 0;
    if (expected !== undefined && expected !== current) {
      throw new MillraceError('state_version_conflict', `state ${type} ${keyText} is at version ${current}, expected ${expected}`, {
        details: { type, key: keyText, expected_version: expected, actual_version: current },
      });
    }
    return current;
  }

  private async writeState(tx: Tx, type: string, keyText: string, state: string, expected: number | undefined, now: number): Promise<number> {
    const current = await this.checkStateVersion(tx, type, keyText, expected);
    if (current === 0) {
      const n = await tx.run('INSERT INTO ledger_states (type, state_key, state, version, updated_at) VALUES (?, ?, ?, 1, ?) ON CONFLICT (type, state_key) DO NOTHING', [type, keyText, state, now]);
      if (n === 0) throw new MillraceError('state_version_conflict', `state ${type} ${keyText} was created concurrently`, { details: { type, key: keyText } });
      return 1;
    }
    const n = await tx.run('UPDATE ledger_states SET state = ?, version = version + 1, updated_at = ? WHERE type = ? AND state_key = ? AND version = ?', [state, now, type, keyText, current]);
    if (n === 0) throw new MillraceError('state_version_conflict', `state ${type} ${keyText} changed concurrently`, { details: { type, key: keyText } });
    return current + 1;
  }

  async getState(req: { type: string; attrs: Attrs }): Promise<{ type: string; attrs: Attrs; state: unknown; version: number }> {
    const { keyText, shard } = this.keyedType('states', req.type, req.attrs, 'attrs');
    const rows = await shard.reader.all<{ state: string; version: number }>('SELECT state, version FROM ledger_states WHERE type = ? AND state_key = ?', [req.type, keyText]);
    const r = rows[0];
    return { type: req.type, attrs: req.attrs, state: r ? (JSON.parse(r.state) as unknown) : null, version: r ? Number(r.version) : 0 };
  }
}

function reused(key: string): MillraceError {
  return new MillraceError('idempotency_key_reused', `idempotency key "${key}" was already used with a different request`, { details: { idempotency_key: key } });
}

function sortGroups<T extends { group: Record<string, string | null> }>(groups: T[]): T[] {
  return groups.sort((a, b) => {
    const x = JSON.stringify(Object.values(a.group));
    const y = JSON.stringify(Object.values(b.group));
    return x < y ? -1 : x > y ? 1 : 0;
  });
}
