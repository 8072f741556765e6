import { createHash } from 'node:crypto';

/** SHA-1 values are 160-bit; ranges are half-open [from, to) over [0, 2^160). */
export const HASH_SPACE_END = 1n << 160n;

/** A hex prefix names the lowest hash that starts with it ("8" = 0x8000…0). */
export function parseHashBound(hex: string): bigint {
  return BigInt(`0x${hex.padEnd(40, '0')}`);
}

export function sha1(text: string): bigint {
  return BigInt(`0x${createHash('sha1').update(text, 'utf8').digest('hex')}`);
}

/**
 * The canonical text of a shard key. A key of several attributes is the JSON
 * array of their values in the configured order, so ("a","bc") and ("ab","c")
 * never collide.
 */
export function shardKeyText(parts: readonly string[] | string): string {
  return typeof parts === 'string' ? parts : JSON.stringify(parts);
}

export interface RangeOwner {
  name: string;
  from: bigint;
  to: bigint;
}

/** Maps a shard key to the shard whose SHA-1 range holds it. */
export class ShardRouter<S extends RangeOwner> {
  private readonly sorted: S[];
  /** The one shard, when one covers the whole space: no hash needed. */
  private readonly only: S | undefined;

  constructor(shards: readonly S[]) {
    this.sorted = [...shards].sort((a, b) => (a.from < b.from ? -1 : 1));
    const first = this.sorted[0];
    this.only = this.sorted.length === 1 && first!.from === 0n && first!.to === HASH_SPACE_END ? first : undefined;
  }

  shardFor(key: readonly string[] | string): S {
    if (this.only !== undefined) return this.only;
    return this.shardForHash(sha1(shardKeyText(key)));
  }

  shardForHash(h: bigint): S {
    if (this.only !== undefined) return this.only;
    let lo = 0;
    let hi = this.sorted.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.sorted[mid]!;
      if (h < s.from) hi = mid - 1;
      else if (h >= s.to) lo = mid + 1;
      else return s;
    }
    throw new Error(`no shard covers hash ${h.toString(16)}; the ranges were validated at start, so this is a bug`);
  }
}
