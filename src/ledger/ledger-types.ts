import type { AccountTypeConfig } from './config.js';

export type Side = 'debit' | 'credit';
export type Attrs = Record<string, string>;

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
export const POSTED = 'ledger.posted';

/** An account type from config, with the groupings aggregates are kept for ([] = the account total). */
export interface AccountType extends AccountTypeConfig {
  name: string;
  /** [] first, then the configured groupings, each in aux order. */
  aggGroupings: string[][];
  shardKeyAttrs: string[];
}

export const iso = (ms: number): string => new Date(ms).toISOString();
