import type { Shard } from '../storage/storage.js';
import { chainHash, GENESIS_HASH, rowChainFields, type StoredEventRow } from './chain.js';

export interface VerifyResult {
  shard: string;
  ok: boolean;
  /** Events checked. */
  checked: number;
  /** Last position checked. */
  head: number;
  /**
   * Where the proof starts: the last position removed by retention from the
   * start of the shard and its hash (0 and no hash when nothing was removed
   * from the start). The chain is proved from there on.
   */
  checkpoint: { pos: number; hash: string | null };
  /** Runs of removed positions after the checkpoint that the walk crossed on their stored anchors. */
  gaps: number;
  /** Positions removed by retention that the walk stepped over (checkpoint included). */
  removed: number;
  /** First position where the chain breaks. */
  badPos?: number;
  reason?: string;
}

type Row = StoredEventRow & { pos: number };

/**
 * Walks a shard's log in position order and recomputes the hash chain. Where
 * retention removed events, the walk crosses each run of removed positions
 * on its anchor in `chain_gaps` (the hash of the run's last event) and goes
 * on recomputing every remaining event's hash from its predecessor's. A
 * missing position with no anchor, a wrong hash, or a row edited after the
 * fact stops the walk at the first bad position.
 */
export async function verifyShard(
  shard: Shard,
  opts: { chunk?: number; onProgress?: (checked: number, pos: number) => void } = {},
): Promise<VerifyResult> {
  const chunk = opts.chunk ?? 5000;
  let prev = GENESIS_HASH;
  let pos = 0;
  let checked = 0;
  let gaps = 0;
  let removed = 0;
  let checkpoint: VerifyResult['checkpoint'] = { pos: 0, hash: null };
  const base = (): Omit<VerifyResult, 'ok'> => ({ shard: shard.name, checked, head: pos, checkpoint, gaps, removed });
  for (;;) {
    const rows = await shard.reader.all<Row>(
      'SELECT pos, stream, seq, type, data, meta, created_at, hash FROM events WHERE pos > ? ORDER BY pos LIMIT ?',
      [pos, chunk],
    );
    if (rows.length === 0) break;
    for (const r of rows) {
      const at = Number(r.pos);
      if (at !== pos + 1) {
        const anchor = await shard.reader.all<{ last_pos: number; last_hash: Buffer }>(
          'SELECT last_pos, last_hash FROM chain_gaps WHERE first_pos = ?',
          [pos + 1],
        );
        const a = anchor[0];
        if (a === undefined)
          return {
            ...base(),
            ok: false,
            badPos: pos + 1,
            reason: `position ${pos + 1} is missing (next is ${at}) and no pruning anchor covers it`,
          };
        if (Number(a.last_pos) !== at - 1) {
          const bad = Number(a.last_pos) + 1;
          return {
            ...base(),
            ok: false,
            badPos: bad,
            reason: `position ${bad} is missing (next is ${at}); the pruned range before it ends at ${a.last_pos}`,
          };
        }
        if (pos === 0) checkpoint = { pos: Number(a.last_pos), hash: a.last_hash.toString('hex') };
        else gaps++;
        removed += at - 1 - pos;
        prev = a.last_hash;
        pos = at - 1;
      }
      const expect = chainHash(prev, rowChainFields(at, r));
      if (r.hash === null || !expect.equals(r.hash)) {
        return { ...base(), ok: false, badPos: at, reason: `hash mismatch at position ${at}` };
      }
      prev = expect;
      pos = at;
      checked++;
    }
    opts.onProgress?.(checked, pos);
  }
  return { ...base(), ok: true };
}
