import type { PipeKindConfig } from './config.js';

export type SessionState = 'open' | 'delivering' | 'stored' | 'dead';

export interface SessionInfo {
  id: string;
  kind: string;
  state: SessionState;
  /** How many times the session has been pushed to its handler. */
  repeats: number;
  createdAt: number;
  /** When a stored session comes back (ms since the epoch); null otherwise. */
  dueAt: number | null;
  lastError: string | null;
  records: Buffer[];
}

export interface DeadLetter {
  id: string;
  kind: string;
  repeats: number;
  lastError: string | null;
  diedAt: number;
}

/** What a handler receives (and what the pusher POSTs as JSON, records in base64). */
export interface Delivery {
  id: string;
  kind: string;
  repeats: number;
  records: Buffer[];
}

export interface WriteResult {
  /** A record with this `seq` was already written: acknowledged, not written again. */
  duplicate: boolean;
}

/** What a handler may answer to finish the session in the same step (instead of calling the API). */
export type PushVerdict = { action: 'delete' } | { action: 'store'; timeoutS: number };

/** Delivers to a handler; resolves to its verdict, if it gave one; rejects if the push failed. */
export type Pusher = (handler: string, kind: PipeKindConfig, d: Delivery) => Promise<PushVerdict | undefined>;

/** A row of pipe_sessions as read. */
export interface SessionRow {
  id: string;
  kind: string;
  state: SessionState;
  owner: string | null;
  repeats: number;
  created_at: number;
  touched_at: number;
  due_at: number | null;
  last_error: string | null;
}

/** The configuration of a kind by its configured name (undefined: not a configured kind). */
export type KindConfigOf = (name: string) => PipeKindConfig | undefined;
