import { createHash } from 'node:crypto';

/** The hash before the first event of a shard. */
export const GENESIS_HASH: Buffer = Buffer.alloc(32);

export interface ChainFields {
  pos: number;
  stream: string;
  seq: number;
  type: string;
  createdAt: number;
  /** Stored JSON text, exactly as written. */
  data: string;
  meta: string | null;
}

/**
 * Canonical bytes of an event: the UTF-8 JSON array of its fields in a fixed
 * order, version first. JSON string escaping makes the encoding unambiguous
 * whatever the stream names or payloads contain.
 */
export function canonicalBytes(e: ChainFields): Buffer {
  return Buffer.from(JSON.stringify([1, e.pos, e.stream, e.seq, e.type, e.createdAt, e.meta, e.data]), 'utf8');
}

/** hash = SHA-256(previous hash ‖ canonical bytes of the event). */
export function chainHash(prev: Buffer, e: ChainFields): Buffer {
  return createHash('sha256').update(prev).update(canonicalBytes(e)).digest();
}

/** An event row as stored in the `events` table. */
export interface StoredEventRow {
  pos: number | null;
  stream: string;
  seq: number;
  type: string;
  data: string;
  meta: string | null;
  created_at: number;
  hash: Buffer | null;
}

/** The chained fields of a stored row, at position `pos`. */
export function rowChainFields(pos: number, r: Omit<StoredEventRow, 'pos' | 'hash'>): ChainFields {
  return { pos, stream: r.stream, seq: r.seq, type: r.type, createdAt: r.created_at, data: r.data, meta: r.meta };
}
