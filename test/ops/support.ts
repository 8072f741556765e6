import type { Runtime } from '../../src/runtime.js';

/** Rows of a table across every shard. */
export async function countAll(rt: Runtime, sql: string, params: unknown[] = []): Promise<number> {
  let n = 0;
  for (const s of rt.storage.shards) n += Number((await s.reader.all<{ n: number | string }>(sql, params))[0]?.n ?? 0);
  return n;
}

/** A promise with its resolver, to hold a processor mid-way. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}
