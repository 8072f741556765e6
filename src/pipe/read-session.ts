import type { MillraceError } from '../core/errors.js';
import type { Shard } from '../storage/storage.js';
import { sessionClosed, sessionNotFound } from './errors.js';
import { SQL } from './pipe-sql.js';
import type { SessionInfo, SessionRow } from './types.js';

/** A session with its records, read on its shard's reader; null if there is none. */
export async function readSession(shard: Shard, id: string): Promise<SessionInfo | null> {
  const reader = shard.reader;
  const rows = await reader.all<SessionRow>(SQL.session, [id]);
  const s = rows[0];
  if (!s) return null;
  const recs = await reader.all<{ data: Buffer }>(SQL.records, [id]);
  return {
    id: s.id,
    kind: s.kind,
    state: s.state,
    repeats: Number(s.repeats),
    createdAt: Number(s.created_at),
    dueAt: s.state === 'stored' && s.due_at !== null ? Number(s.due_at) : null,
    lastError: s.last_error,
    records: recs.map((r) => r.data),
  };
}

/** Why a write was refused: unknown or closed. */
export async function refusal(shard: Shard, id: string): Promise<MillraceError> {
  const rows = await shard.reader.all<{ state: string }>(SQL.sessionState, [id]);
  return rows[0] ? sessionClosed(id, rows[0].state) : sessionNotFound(id);
}
