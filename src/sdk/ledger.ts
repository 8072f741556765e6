/**
 * The ledger face over HTTP, in the SDK's camelCase: bodies are sent in the
 * wire's snake_case (as in docs/ledger.md) and answers converted back.
 */
import type { LedgerEventOut as WireEvent, TurnoverSums as WireTurnoverSums } from '../ledger/ledger-types.js';
import type { CallOptions, ClientOptions } from './transport.js';
import { HttpTransport } from './transport.js';

/** Key attributes: attribute name → value. */
export type Attrs = Record<string, string>;
export type Side = 'debit' | 'credit';
export type LockMode = 'exclusive' | 'shared';

/** One posting of a batch. */
export interface BatchEventInput {
  account: { type: string; attrs: Attrs };
  side: Side;
  /** A decimal string within the account type's scale, > 0. */
  amount: string;
  /** RFC 3339; default: the batch's `dtDefault`. */
  dt?: string;
  info?: unknown;
}

/** A batch: postings, lock checks and state writes, all or nothing. */
export interface BatchRequest {
  /** The same key again answers the first batch's answer and writes nothing. */
  idempotencyKey?: string;
  dtDefault?: string;
  events?: BatchEventInput[];
  /** Locks the batch must hold (`uid` the holder). */
  locks?: Array<{ type: string; attrs: Attrs; uid: string }>;
  /** States written; `expectedVersion` refuses the batch if the state moved on. */
  states?: Array<{ type: string; attrs: Attrs; state: unknown; expectedVersion?: number }>;
}

export interface BatchAnswer {
  batchId: string;
  /** The postings written. */
  events: number;
  states: Array<{ type: string; attrs: Attrs; version: number }>;
}

/** The accounts a read covers: a type, its key (or a prefix of it), grouped and filtered by attributes. */
export interface AccountQuery {
  type: string;
  key: Attrs;
  groupBy?: string[];
  filter?: Record<string, string>;
}

export interface GroupSums {
  group: Record<string, string | null>;
  debit: string;
  credit: string;
}

export interface TurnoverSums {
  group: Record<string, string | null>;
  debitInit: string;
  creditInit: string;
  debitTurnover: string;
  creditTurnover: string;
}

export interface BalancesQuery {
  dt: string;
  accounts: AccountQuery[];
}

export interface BalancesAnswer {
  dt: string;
  balances: Array<{ type: string; key: Attrs; groups: GroupSums[] }>;
}

export interface TurnoversQuery {
  dtFrom: string;
  dtTo: string;
  accounts: AccountQuery[];
}

export interface TurnoversAnswer {
  dtFrom: string;
  dtTo: string;
  turnovers: Array<{ type: string; key: Attrs; groups: TurnoverSums[] }>;
}

export interface LedgerEventsQuery {
  dtFrom: string;
  dtTo: string;
  accounts: AccountQuery[];
  limit: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
}

export interface LedgerEvent {
  id: number;
  shard: string;
  batchId: string;
  account: { type: string; key: Attrs };
  aux: Record<string, string>;
  side: Side;
  amount: string;
  dt: string;
  info: unknown;
}

export interface LedgerEventsAnswer {
  events: LedgerEvent[];
  /** null: the last page. */
  nextCursor: string | null;
}

/** A lock by its type and key attributes. */
export interface LockRef {
  type: string;
  attrs: Attrs;
}

export interface LockAcquire extends LockRef {
  uid: string;
  mode: LockMode;
  timeoutS: number;
}

export interface LockPing extends LockRef {
  uid: string;
  timeoutS: number;
}

export interface LockRelease extends LockRef {
  uid: string;
}

/** A lock held by `uid` until `expiresAt`. */
export interface LockAnswer extends LockRef {
  uid: string;
  mode: LockMode;
  expiresAt: string;
}

export interface LockHolders extends LockRef {
  holders: Array<{ uid: string; mode: LockMode; expiresAt: string }>;
}

/** A state by its type and key attributes. */
export interface StateRef {
  type: string;
  attrs: Attrs;
}

export interface StateAnswer<S = unknown> extends StateRef {
  /** null: never written. */
  state: S | null;
  version: number;
}

/** The wire's answers (snake_case). */
interface WireTurnovers {
  dt_from: string;
  dt_to: string;
  turnovers: Array<{
    type: string;
    key: Attrs;
    groups: WireTurnoverSums[];
  }>;
}
type WireLock = LockRef & { uid: string; mode: LockMode; expires_at: string };

/** Sets `to[key]` when `v` is not undefined (the wire leaves out what was not given). */
function put(to: Record<string, unknown>, key: string, v: unknown): void {
  if (v !== undefined) to[key] = v;
}

const accountsWire = (accounts: AccountQuery[]): Array<Record<string, unknown>> =>
  accounts.map((a) => {
    const w: Record<string, unknown> = { type: a.type, key: a.key };
    put(w, 'group_by', a.groupBy);
    put(w, 'filter', a.filter);
    return w;
  });

const lockOf = (l: WireLock): LockAnswer => ({
  type: l.type,
  attrs: l.attrs,
  uid: l.uid,
  mode: l.mode,
  expiresAt: l.expires_at,
});

/** The ledger face: `/v1/ledger/…`. */
export class LedgerClient {
  private readonly t: HttpTransport;

  constructor(baseUrl: string, opts: ClientOptions = {}) {
    this.t = new HttpTransport(baseUrl, opts);
  }

  /** Writes a batch: its postings, lock checks and states at once, or nothing. */
  async batch(b: BatchRequest, o: CallOptions = {}): Promise<BatchAnswer> {
    const w: Record<string, unknown> = {};
    put(w, 'idempotency_key', b.idempotencyKey);
    put(w, 'dt_default', b.dtDefault);
    put(w, 'events', b.events);
    put(w, 'locks', b.locks);
    put(
      w,
      'states',
      b.states?.map((s) => {
        const ws: Record<string, unknown> = { type: s.type, attrs: s.attrs, state: s.state };
        put(ws, 'expected_version', s.expectedVersion);
        return ws;
      }),
    );
    const r = await this.t.request<{ batch_id: string; events: number; states: BatchAnswer['states'] }>(
      'POST',
      '/v1/ledger/batches',
      w,
      o,
    );
    return { batchId: r.batch_id, events: r.events, states: r.states };
  }

  balances(q: BalancesQuery, o: CallOptions = {}): Promise<BalancesAnswer> {
    return this.t.request('POST', '/v1/ledger/balances', { dt: q.dt, accounts: accountsWire(q.accounts) }, o);
  }

  async turnovers(q: TurnoversQuery, o: CallOptions = {}): Promise<TurnoversAnswer> {
    const r = await this.t.request<WireTurnovers>(
      'POST',
      '/v1/ledger/turnovers',
      { dt_from: q.dtFrom, dt_to: q.dtTo, accounts: accountsWire(q.accounts) },
      o,
    );
    return {
      dtFrom: r.dt_from,
      dtTo: r.dt_to,
      turnovers: r.turnovers.map((t) => ({
        type: t.type,
        key: t.key,
        groups: t.groups.map((g) => ({
          group: g.group,
          debitInit: g.debit_init,
          creditInit: g.credit_init,
          debitTurnover: g.debit_turnover,
          creditTurnover: g.credit_turnover,
        })),
      })),
    };
  }

  async events(q: LedgerEventsQuery, o: CallOptions = {}): Promise<LedgerEventsAnswer> {
    const w: Record<string, unknown> = {
      dt_from: q.dtFrom,
      dt_to: q.dtTo,
      accounts: accountsWire(q.accounts),
      limit: q.limit,
    };
    put(w, 'cursor', q.cursor);
    const r = await this.t.request<{ events: WireEvent[]; next_cursor: string | null }>(
      'POST',
      '/v1/ledger/events',
      w,
      o,
    );
    return {
      events: r.events.map((e) => ({
        id: e.id,
        shard: e.shard,
        batchId: e.batch_id,
        account: e.account,
        aux: e.aux,
        side: e.side,
        amount: e.amount,
        dt: e.dt,
        info: e.info,
      })),
      nextCursor: r.next_cursor,
    };
  }

  async acquireLock(l: LockAcquire, o: CallOptions = {}): Promise<LockAnswer> {
    return lockOf(
      await this.t.request<WireLock>(
        'POST',
        '/v1/ledger/locks/acquire',
        { type: l.type, attrs: l.attrs, uid: l.uid, mode: l.mode, timeout_s: l.timeoutS },
        o,
      ),
    );
  }

  async pingLock(l: LockPing, o: CallOptions = {}): Promise<LockAnswer> {
    return lockOf(
      await this.t.request<WireLock>(
        'POST',
        '/v1/ledger/locks/ping',
        { type: l.type, attrs: l.attrs, uid: l.uid, timeout_s: l.timeoutS },
        o,
      ),
    );
  }

  releaseLock(l: LockRelease, o: CallOptions = {}): Promise<{ released: boolean }> {
    return this.t.request('POST', '/v1/ledger/locks/release', { type: l.type, attrs: l.attrs, uid: l.uid }, o);
  }

  async getLock(l: LockRef, o: CallOptions = {}): Promise<LockHolders> {
    const r = await this.t.request<LockRef & { holders: Array<{ uid: string; mode: LockMode; expires_at: string }> }>(
      'POST',
      '/v1/ledger/locks/get',
      { type: l.type, attrs: l.attrs },
      o,
    );
    return {
      type: r.type,
      attrs: r.attrs,
      holders: r.holders.map((h) => ({ uid: h.uid, mode: h.mode, expiresAt: h.expires_at })),
    };
  }

  getState<S = unknown>(s: StateRef, o: CallOptions = {}): Promise<StateAnswer<S>> {
    return this.t.request('POST', '/v1/ledger/states/get', { type: s.type, attrs: s.attrs }, o);
  }
}
