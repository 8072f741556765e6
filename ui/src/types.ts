/**
 * What the node's routes answer, as the console reads them. Written from
 * the route schemas in src/api/http/ (and the types they serialize); a
 * field the console does not read is left out.
 */

/** A paged list (`GET` lists): `next_cursor` is null on the last page. */
export interface Paged<T> {
  items: T[];
  next_cursor: string | null;
}

/** A hash range a shard owns (hex bounds, `to` may be `end`); a fenced one refuses writes while a split cuts it over. */
export interface OwnedRange {
  from: string;
  to: string;
  fenced: boolean;
}

/** A shard of `GET /v1/shards`. */
export interface ShardInfo {
  name: string;
  /** Its first unfenced range ('' when it owns none). */
  from: string;
  to: string;
  /** Fields of newer nodes: absent from an older node's answer. */
  ranges?: OwnedRange[];
  epoch?: number;
  spare?: boolean;
  head: number;
  events?: number;
}

export type SplitPhase = 'copy' | 'fenced' | 'switched' | 'cleanup' | 'done' | 'aborted';

/** A split job of `GET /v1/shards` (and the answer of `POST /v1/shards/{shard}/split`). */
export interface SplitJob {
  id: string;
  source: string;
  target: string;
  from: string;
  to: string;
  phase: SplitPhase;
  start_pos: number;
  copied_pos: number;
  copied_events: number;
  head: number;
  progress: number;
  rows_moved: number;
  aborted?: string;
  started_at: string;
  updated_at: string;
}

/** `GET /v1/shards` */
export interface ShardsAnswer {
  dialect: string;
  shards: ShardInfo[];
  splits?: SplitJob[];
}

/** `GET /readyz` */
export interface Readiness {
  ok: boolean;
  problems?: string[];
}

/** An item of `GET /v1/nodes` */
export interface NodeInfo {
  node_id: string;
  self: boolean;
  sessions: Record<string, { pool: number; relaxed: number; listen: number; lock: number }>;
}

/** A definition of a catalog list: `GET /v1/namespaces`, `/v1/pipe/kinds`, `/v1/bus/topics`. */
export interface Definition {
  name: string;
  source: 'config' | 'runtime';
  definition: unknown;
}

/** An item of `GET /v1/namespaces`: the definition with its machine counts and pause. */
export interface NamespaceInfo extends Definition {
  machines?: { total: number; failed: number };
  paused?: boolean;
}

/** An item of `GET /v1/namespaces/{ns}/machines` */
export interface MachineSummary {
  id: string;
  status: 'working' | 'failed';
  reason?: string;
  updated_at: string;
  events: number;
  tags: string[];
  timer?: { at: string };
}

/** `GET /v1/namespaces/{ns}/machines/{id}` */
export interface MachineView {
  ns: string;
  id: string;
  status: 'working' | 'failed';
  reason?: unknown;
  aux_state: unknown;
  timer: { due_at: string } | null;
  tags: string[];
  history: Array<{ id: number; created_at: string; data?: unknown; body?: unknown }>;
  paused?: boolean;
}

/** `POST …/call` and the other machine operations. */
export interface MachineResponse {
  response: unknown;
}

/** An item of `GET /v1/sinks` */
export interface SinkInfo {
  name: string;
  namespaces: string[];
}

/** One event of a sink's stream (`GET /v1/sinks/{sink}/stream`). */
export interface SinkEvent {
  pos: number;
  shard: string;
  ns: string;
  machine_id: string;
  event_id: number;
  created_at: string;
  data: unknown;
}

/** An item of `GET /v1/bus/subscriptions` (and `GET /v1/bus/subscriptions/{name}`). */
export interface SubscriptionInfo {
  name: string;
  config: { topics: string[]; dead_letter_topic?: string };
  positions: Record<string, number>;
  lag: Record<string, number>;
  lag_total: number;
  connected: boolean;
  paused: boolean;
  dead_letter_topic: string | null;
}

/** `POST /v1/bus/topics/{topic}/events` */
export interface PublishAnswer {
  positions: Array<{ shard: string; pos: number; duplicate?: boolean }>;
}

/** An item of `GET /v1/bus/topics/{topic}/events` */
export interface TopicEvent {
  shard: string;
  pos: number;
  topic: string;
  key: string;
  id: string | null;
  type: string;
  headers: Record<string, string>;
  data: unknown;
  created_at: string;
}

/** An item of `GET /v1/pipe/dead-letters` */
export interface DeadLetter {
  id: string;
  kind: string;
  repeats: number;
  last_error: string | null;
  died_at: string;
}

/** `GET /v1/pipe/dead-letters` */
export interface DeadLettersAnswer {
  dead_letters: DeadLetter[];
  next_after: string | null;
}

/** An item of `GET /v1/pipe/sessions` */
export interface SessionSummary {
  id: string;
  kind: string;
  state: string;
  records: number;
  updated_at: string;
  due_at?: string;
}

/** `GET /v1/ledger/types` */
export interface LedgerTypes {
  accounts: Record<string, { key: string[]; aux: string[]; groupings?: string[][]; scale?: number }>;
}

export interface GroupSums {
  group: Record<string, string | null>;
  debit: string;
  credit: string;
}

/** `POST /v1/ledger/balances` */
export interface BalancesAnswer {
  dt: string;
  balances: Array<{ type: string; key: Record<string, string>; groups: GroupSums[] }>;
}

/** `POST /v1/ledger/turnovers` */
export interface TurnoversAnswer {
  turnovers: Array<{
    groups: Array<{
      group: Record<string, string | null>;
      debit_init: string;
      credit_init: string;
      debit_turnover: string;
      credit_turnover: string;
    }>;
  }>;
}

/** `GET /v1/ledger/accounts` */
export interface AccountsAnswer extends Paged<{ key: Record<string, string>; debit: string; credit: string }> {
  dt: string;
}

/** `POST /v1/ledger/events` */
export interface LedgerEventsAnswer {
  events: Array<{
    id: number;
    shard: string;
    batch_id: string;
    side: 'debit' | 'credit';
    amount: string;
    dt: string;
    aux: Record<string, string>;
    info: unknown;
  }>;
  next_cursor: string | null;
}

/** An item of `GET /v1/audit` */
export interface AuditEntry {
  seq: number;
  at: string;
  phase: string;
  principal: string;
  action: string;
  resource: string;
  status?: number;
  request_id: string;
}

/** `GET /v1/metrics/series` */
export interface SeriesAnswer {
  interval_ms: number;
  window_ms: number;
  t: number[];
  series: Record<string, Array<number | null>>;
}

/** `GET /v1/schedules/{name}` and the items of `GET /v1/schedules` */
export interface ScheduleInfo {
  name: string;
  source: 'config' | 'runtime';
  definition: Record<string, unknown>;
  paused: boolean;
  next_fire_at: string | null;
  last_fire_at: string | null;
  running: number;
  buffered_fire_at: string | null;
  missed: number;
}

/** An item of `GET /v1/schedules/{name}/fires` */
export interface FireInfo {
  fire_at: string;
  status: 'pending' | 'running' | 'buffered' | 'skipped' | 'done' | 'failed' | 'interrupted';
  backfill: boolean;
  attempts: number;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
}

/** `GET /v1/bulk-jobs/{id}` and the items of `GET /v1/bulk-jobs` */
export interface BulkJob {
  id: string;
  target: 'machines' | 'pipe_dead_letters';
  spec: Record<string, unknown>;
  status: 'running' | 'done' | 'cancelled';
  total: number;
  matched: number;
  succeeded: number;
  failed: number;
  progress: number;
  errors: Array<{ item: string; code: string; message: string }>;
  created_at: string;
  finished_at: string | null;
}

/** `POST …/bulk-jobs` with `dry_run`. */
export interface DryRun {
  dry_run: true;
  matched: number;
}

export type PauseKind = 'namespace' | 'machine' | 'subscription' | 'pipe_kind' | 'exporter';

/** An item of `GET /v1/pauses` */
export interface PauseInfo {
  kind: PauseKind;
  name: string;
  paused_at: string;
  reason: string | null;
}
