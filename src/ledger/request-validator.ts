import { MillraceError, badRequest } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { Shard } from '../storage/storage.js';
import type { LedgerConfig } from './config.js';
import { parseAmount } from './decimal.js';
import { type AccountQuery, type AccountType, type Attrs, type BatchRequest, type Side, iso } from './ledger-types.js';

const MAX_ATTR_LEN = 256;

/** A batch event, validated and routed to its shard. */
export interface PreparedEvent {
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

/** A lock or state key, validated and routed to its shard. */
export interface KeyedTarget {
  keyText: string;
  shard: Shard;
  keyVals: string[];
}

export interface PreparedLock extends KeyedTarget {
  type: string;
  uid: string;
  attrs: Attrs;
}

export interface PreparedState extends KeyedTarget {
  type: string;
  attrs: Attrs;
  state: string;
  expected: number | undefined;
}

export interface PreparedBatch {
  events: PreparedEvent[];
  locks: PreparedLock[];
  states: PreparedState[];
  idempotencyKey: string | undefined;
}

/** A read's account, validated: its shard, the grouping asked for and the aggregated grouping that covers it. */
export interface ResolvedQuery {
  t: AccountType;
  keyVals: string[];
  accKey: string;
  shard: Shard;
  groupBy: string[];
  filter: Record<string, string>;
  cover: string[] | null;
}

/** What attributes an object of some configured type may carry. */
interface AttributeSpec {
  /** "account type", "lock type" or "state type". */
  what: string;
  name: string;
  key: readonly string[];
  /** Aux attributes allowed besides the key (empty when only the key is). */
  aux: readonly string[];
  /** Only key attributes are allowed here though the type has aux ones (the error says "key attribute"). */
  keyOnly: boolean;
}

const sortedObject = (o: Record<string, string>): Record<string, string> =>
  Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

/** The configured account types, each with the groupings aggregates are kept for. */
export function accountTypes(cfg: Pick<LedgerConfig, 'accounts'>): Map<string, AccountType> {
  const types = new Map<string, AccountType>();
  for (const [name, t] of Object.entries(cfg.accounts)) {
    const inAuxOrder = (g: string[]) => t.aux.filter((a) => g.includes(a));
    types.set(name, {
      ...t,
      name,
      aggGroupings: [[], ...t.groupings.map(inAuxOrder)],
      shardKeyAttrs: t.shard_key ?? t.key,
    });
  }
  return types;
}

export function parseDt(text: unknown, what: string): number {
  if (
    typeof text !== 'string' ||
    !/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/.test(text)
  ) {
    throw new MillraceError(
      'invalid_date',
      `${what}: expected an ISO 8601 date or date-time with a zone, such as 2026-01-31T12:00:00Z`,
    );
  }
  const ms = Date.parse(text.length === 10 ? `${text}T00:00:00Z` : text);
  if (!Number.isFinite(ms)) throw new MillraceError('invalid_date', `${what}: "${text}" is not a valid date`);
  return ms;
}

/**
 * Validation of every ledger request against the config: account, lock and
 * state types, their attributes, dates, retention, and routing to a shard.
 * Reads nothing but the config and the clock; throws a typed error before
 * anything is written.
 */
export class RequestValidator {
  readonly types: Map<string, AccountType>;

  constructor(
    readonly rt: Runtime,
    readonly cfg: LedgerConfig,
  ) {
    this.types = accountTypes(cfg);
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
  checkRetention(ms: number, what: string): void {
    const h = this.retentionHorizon();
    if (h !== null && ms < h) {
      throw new MillraceError(
        'retention_exceeded',
        `${what} ${iso(ms)} is before the retention horizon ${iso(h)} (ledger.retention_months = ${this.cfg.retention_months}): events of older months may have been dropped`,
        {
          details: { horizon: iso(h) },
        },
      );
    }
  }

  // ---------------------------------------------------------------- types, attributes, routing

  accountType(name: string): AccountType {
    const t = this.types.get(name);
    if (t === undefined)
      throw new MillraceError('account_type_not_found', `no account type "${name}" in the ledger config`, {
        details: { type: name },
      });
    return t;
  }

  /** The one attribute check: an object of strings of bounded length, only the attributes the spec allows, every key attribute present. */
  private attributes(
    spec: AttributeSpec,
    attrs: unknown,
    where: string,
  ): { keyVals: string[]; aux: Record<string, string> } {
    if (attrs === null || typeof attrs !== 'object' || Array.isArray(attrs))
      throw new MillraceError('invalid_attributes', `${where}: attributes must be an object`);
    const a = attrs as Record<string, unknown>;
    for (const [k, v] of Object.entries(a)) {
      if (!spec.key.includes(k) && !spec.aux.includes(k)) {
        throw new MillraceError(
          'invalid_attributes',
          `${where}: ${spec.what} "${spec.name}" has no ${spec.keyOnly ? 'key ' : ''}attribute "${k}"`,
          { details: { attribute: k } },
        );
      }
      if (typeof v !== 'string' || v.length > MAX_ATTR_LEN)
        throw new MillraceError(
          'invalid_attributes',
          `${where}: attribute "${k}" must be a string of at most ${MAX_ATTR_LEN} characters`,
        );
    }
    const keyVals = spec.key.map((k) => {
      const v = a[k];
      if (v === undefined)
        throw new MillraceError(
          'invalid_attributes',
          `${where}: key attribute "${k}" of ${spec.what} "${spec.name}" is missing`,
          { details: { attribute: k } },
        );
      return v as string;
    });
    const aux: Record<string, string> = {};
    for (const k of spec.aux) if (a[k] !== undefined) aux[k] = a[k] as string;
    return { keyVals, aux };
  }

  /** Validates account attributes; returns key values (in key order) and aux values. */
  accountAttrs(
    t: AccountType,
    attrs: unknown,
    where: string,
    allowAux: boolean,
  ): { keyVals: string[]; aux: Record<string, string> } {
    return this.attributes(
      { what: 'account type', name: t.name, key: t.key, aux: allowAux ? t.aux : [], keyOnly: !allowAux },
      attrs,
      where,
    );
  }

  accountShard(t: AccountType, keyVals: readonly string[]): Shard {
    return this.rt.storage.shardFor(t.shardKeyAttrs.map((a) => keyVals[t.key.indexOf(a)]!));
  }

  keyObject(t: AccountType, keyVals: readonly string[]): Attrs {
    return Object.fromEntries(t.key.map((k, i) => [k, keyVals[i]!]));
  }

  /** Validates a lock or state type and key; returns the key as stored and its shard. */
  keyedType(kind: 'locks' | 'states', name: string, attrs: unknown, where: string): KeyedTarget {
    const t = this.cfg[kind][name];
    const what = kind === 'locks' ? 'lock' : 'state';
    if (t === undefined) {
      throw new MillraceError(
        kind === 'locks' ? 'lock_type_not_found' : 'state_type_not_found',
        `no ${what} type "${name}" in the ledger config`,
        { details: { type: name } },
      );
    }
    const { keyVals } = this.attributes(
      { what: `${what} type`, name, key: t.key, aux: [], keyOnly: false },
      attrs,
      where,
    );
    const sk = (t.shard_key ?? t.key).map((k) => keyVals[t.key.indexOf(k)]!);
    return { keyText: JSON.stringify(keyVals), shard: this.rt.storage.shardFor(sk), keyVals };
  }

  // ---------------------------------------------------------------- requests

  /** Validates a batch (events, locks, states, idempotency key) and routes each part to its shard. */
  batch(req: BatchRequest): PreparedBatch {
    const events = req.events ?? [];
    if (!Array.isArray(events)) throw badRequest('events must be an array');
    if (events.length > this.cfg.max_batch_events)
      throw badRequest(`a batch holds at most ${this.cfg.max_batch_events} events`);
    const dtDefault = req.dt_default === undefined ? undefined : parseDt(req.dt_default, 'dt_default');
    const prepared: PreparedEvent[] = events.map((e, i) => {
      const where = `events[${i}]`;
      const t = this.accountType(e.account.type);
      const { keyVals, aux } = this.accountAttrs(t, e.account.attrs, `${where}.account.attrs`, true);
      if (e.side !== 'debit' && e.side !== 'credit') throw badRequest(`${where}.side must be "debit" or "credit"`);
      const dt = e.dt !== undefined ? parseDt(e.dt, `${where}.dt`) : dtDefault;
      if (dt === undefined)
        throw new MillraceError('invalid_date', `${where}.dt is missing and the batch has no dt_default`);
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
    const locks: PreparedLock[] = (req.locks ?? []).map((l, i) => {
      if (typeof l.uid !== 'string' || l.uid.length === 0 || l.uid.length > 200)
        throw badRequest(`locks[${i}].uid must be 1-200 characters`);
      return {
        ...this.keyedType('locks', l.type, l.attrs, `locks[${i}].attrs`),
        type: l.type,
        uid: l.uid,
        attrs: l.attrs,
      };
    });
    const states: PreparedState[] = (req.states ?? []).map((s, i) => {
      if (s.expected_version !== undefined && (!Number.isSafeInteger(s.expected_version) || s.expected_version < 0)) {
        throw badRequest(`states[${i}].expected_version must be a non-negative integer`);
      }
      if (s.state === undefined) throw badRequest(`states[${i}].state is missing`);
      return {
        ...this.keyedType('states', s.type, s.attrs, `states[${i}].attrs`),
        type: s.type,
        attrs: s.attrs,
        state: JSON.stringify(s.state),
        expected: s.expected_version,
      };
    });
    const seenStates = new Set<string>();
    for (const s of states) {
      const k = `${s.type}\u0000${s.keyText}`;
      if (seenStates.has(k)) throw badRequest(`state ${s.type} ${s.keyText} appears twice in one batch`);
      seenStates.add(k);
    }
    if (prepared.length === 0 && states.length === 0) throw badRequest('a batch needs at least one event or state');
    const idem = req.idempotency_key;
    if (idem !== undefined && (typeof idem !== 'string' || idem.length === 0 || idem.length > 200))
      throw badRequest('idempotency_key must be 1-200 characters');
    return { events: prepared, locks, states, idempotencyKey: idem };
  }

  /** Validates one account of a read: key, grouping, aux filter; picks the smallest aggregated grouping that covers them. */
  query(q: AccountQuery, where: string): ResolvedQuery {
    if (q === null || typeof q !== 'object') throw badRequest(`${where} must be an object`);
    const t = this.accountType(q.type);
    const { keyVals } = this.accountAttrs(t, q.key, `${where}.key`, false);
    const groupBy = q.group_by ?? [];
    if (groupBy.length > 0) {
      const allowed = t.groupings.some((g) => g.length === groupBy.length && groupBy.every((a) => g.includes(a)));
      if (!allowed || new Set(groupBy).size !== groupBy.length) {
        throw new MillraceError(
          'grouping_not_allowed',
          `${where}.group_by [${groupBy.join(', ')}] is not a grouping of account type "${t.name}" (allowed: ${t.groupings.map((g) => `[${g.join(', ')}]`).join(', ') || 'none'})`,
          {
            details: { type: t.name, group_by: groupBy },
          },
        );
      }
    }
    const filter = q.filter ?? {};
    for (const [k, v] of Object.entries(filter)) {
      if (!t.aux.includes(k))
        throw new MillraceError(
          'invalid_attributes',
          `${where}.filter: "${k}" is not an aux attribute of account type "${t.name}"`,
        );
      if (typeof v !== 'string') throw new MillraceError('invalid_attributes', `${where}.filter.${k} must be a string`);
    }
    const needed = new Set([...groupBy, ...Object.keys(filter)]);
    // The smallest aggregated grouping that holds every attribute asked for.
    let cover: string[] | null = null;
    for (const g of t.aggGroupings)
      if ([...needed].every((a) => g.includes(a)) && (cover === null || g.length < cover.length)) cover = g;
    return {
      t,
      keyVals,
      accKey: JSON.stringify(keyVals),
      shard: this.accountShard(t, keyVals),
      groupBy: t.aux.filter((a) => groupBy.includes(a)),
      filter,
      cover,
    };
  }

  /** A date range [dt_from, dt_to] of a read, retention checked. */
  range(dtFrom: string, dtTo: string): { from: number; to: number } {
    const from = parseDt(dtFrom, 'dt_from');
    const to = parseDt(dtTo, 'dt_to');
    if (to < from) throw new MillraceError('invalid_date', 'dt_to must not be before dt_from');
    this.checkRetention(from, 'dt_from');
    return { from, to };
  }

  lockTimeout(timeout: unknown): number {
    if (
      typeof timeout !== 'number' ||
      !Number.isFinite(timeout) ||
      timeout <= 0 ||
      timeout > this.cfg.max_lock_timeout_s
    ) {
      throw badRequest(`timeout_s must be a number above 0 and at most ${this.cfg.max_lock_timeout_s}`);
    }
    return Math.round(timeout * 1000);
  }

  lockUid(uid: unknown): string {
    if (typeof uid !== 'string' || uid.length === 0 || uid.length > 200)
      throw badRequest('uid must be 1-200 characters');
    return uid;
  }
}
