import type { Shard } from '../storage/storage.js';
import { chainHash, GENESIS_HASH, rowChainFields, type StoredEventRow } from './chain.js';

export interface VerifyResult {
  shard: string;
  ok: boolean;
  /** Events checked. */
  checked: number;
  /** Last position checked. */
  head: number;
  /** First position where the chain breaks. */
  badPos?: number;
  reason?: string;
}

type Row = StoredEventRow & { pos: number };

/**
 * Walks a shard's log in position order and recomputes the hash chain. A
 * missing position, a wrong hash, or a row edited after the fact stops the
 * walk at the first bad position.
 */
export async function verifyShard(shard: Shard, opts: { chunk?: number; onProgress?: (checked: number, pos: number) => void } = {}): Promise<VerifyResult> {
  const chunk = opts.chunk ?? 5000;
  let prev = GENESIS_HASH;
  let pos = 0;
  let checked = 0;
  for (;;) {
    const rows = await shard.reader.all<Row>(
      'SELECT pos, stream, seq, type, data, meta, created_at, hash FROM events WHERE pos > ? ORDER BY pos LIMIT ?',
      [pos, chunk],
    );
    if (rows.length === 0) break;
    for (const r of rows) {
      if (r.pos !== pos + 1) return { shard: shard.name, ok: false, checked, head: pos, badPos: pos + 1, reason: `position ${pos + 1} is missing (next is ${r.pos})` };
      const expect = chainHash(prev, rowChainFields(r.pos, r));
      if (r.hash === null || !expect.equals(r.hash)) {
        return { shard: shard.name, ok: false, checked, head: pos, badPos: r.pos, reason: `hash mismatch at position ${r.pos}` };
      }
      prev = expect;
      pos = r.pos;
      checked++;
    }
    opts.onProgress?.(checked, pos);
  }
  return { shard: shard.name, ok: true, checked, head: pos };
}
