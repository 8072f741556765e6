import { HASH_SPACE_END } from '../core/routing.js';
import type { Queryable } from './port.js';

/**
 * The durable routing table. Each shard stores the hash ranges it owns in its
 * own `shard_state` row, with an epoch bumped on every change; the table of a
 * node is the union of all shards' rows. A range being cut over is `fenced` on
 * its source: writes to it are refused until the target owns it. Keeping each
 * shard's ranges in that shard lets a writer check, inside its own
 * transaction on the shard, that the shard still owns the key it writes.
 */
export interface OwnedRange {
  from: bigint;
  to: bigint;
  fenced: boolean;
}

export interface ShardState {
  epoch: number;
  ranges: OwnedRange[];
}

/** Channel on which a change of any shard's ranges is announced. */
export const ROUTING_CHANNEL = 'millrace_routing';

export const hexOf = (n: bigint): string => n.toString(16);

export function encodeRanges(ranges: readonly OwnedRange[]): string {
  return JSON.stringify(
    ranges.map((r) => ({ from: hexOf(r.from), to: hexOf(r.to), ...(r.fenced ? { fenced: true } : {}) })),
  );
}

export function decodeRanges(text: string): OwnedRange[] {
  const raw = JSON.parse(text) as Array<{ from: string; to: string; fenced?: boolean }>;
  return raw.map((r) => ({ from: BigInt(`0x${r.from}`), to: BigInt(`0x${r.to}`), fenced: r.fenced === true }));
}

export const STATE_SQL = 'SELECT epoch, ranges FROM shard_state WHERE id = 1';

export async function readState(q: Queryable): Promise<ShardState | undefined> {
  const rows = await q.all<{ epoch: number; ranges: string }>(STATE_SQL);
  const r = rows[0];
  return r === undefined ? undefined : { epoch: Number(r.epoch), ranges: decodeRanges(r.ranges) };
}

/** Owns `hash` and takes writes to it. */
export function ownsForWrite(state: ShardState, hash: bigint): boolean {
  return state.ranges.some((r) => !r.fenced && hash >= r.from && hash < r.to);
}

/**
 * PostgreSQL: a query yielding one row, `ok`, true where this shard's stored
 * state still takes writes of every hash in `hashes` (or its epoch is still
 * `epoch`, as Storage.checkRoute), or it has no state. A one-statement write
 * reads it in the statement (see OneStatement), so that, like the route check
 * of a transaction, it waits for a cut-over that holds the table and then
 * sees the range fenced. Only numbers and hex digits are inlined.
 */
export function routeCheckSql(epoch: number, hashes: readonly bigint[]): string {
  const width = HASH_SPACE_END.toString(16).length;
  const owns = (h: bigint): string => {
    const hex = h.toString(16).padStart(width, '0');
    return `EXISTS (SELECT 1 FROM json_array_elements(ranges::json) AS r WHERE COALESCE((r->>'fenced')::boolean, false) = false AND lpad(r->>'from', ${width}, '0') <= '${hex}' AND lpad(r->>'to', ${width}, '0') > '${hex}')`;
  };
  return `SELECT COALESCE((SELECT epoch = ${Math.trunc(epoch)} OR (${hashes.map(owns).join(' AND ')}) FROM shard_state WHERE id = 1), true) AS ok`;
}

/** Takes `ranges` less [from, to) (ranges never partly overlap a split range: a split range lies inside one). */
export function withoutRange(ranges: readonly OwnedRange[], from: bigint, to: bigint): OwnedRange[] {
  const out: OwnedRange[] = [];
  for (const r of ranges) {
    if (r.to <= from || r.from >= to) {
      out.push(r);
      continue;
    }
    if (r.from < from) out.push({ from: r.from, to: from, fenced: r.fenced });
    if (r.to > to) out.push({ from: to, to: r.to, fenced: r.fenced });
  }
  return out;
}

/** Sorted, adjacent ranges of equal fencing joined. */
export function normalize(ranges: readonly OwnedRange[]): OwnedRange[] {
  const sorted = [...ranges]
    .filter((r) => r.to > r.from)
    .sort((a, b) => (a.from < b.from ? -1 : a.from > b.from ? 1 : 0));
  const out: OwnedRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && last.to === r.from && last.fenced === r.fenced) last.to = r.to;
    else out.push({ ...r });
  }
  return out;
}

export interface RouteEntry {
  from: bigint;
  to: bigint;
  shard: string;
  fenced: boolean;
}

/**
 * The routing table of all shards' states: where two shards claim a range
 * (between a split's two cut-over steps) the unfenced claim wins. Returns a
 * problem text instead when the ranges leave a gap or overlap unfenced.
 */
export function buildTable(states: ReadonlyMap<string, ShardState>): RouteEntry[] | string {
  const all: RouteEntry[] = [];
  for (const [shard, st] of states)
    for (const r of st.ranges) all.push({ from: r.from, to: r.to, shard, fenced: r.fenced });
  const live = all.filter((e) => !e.fenced).sort((a, b) => (a.from < b.from ? -1 : 1));
  for (let i = 1; i < live.length; i++) {
    if (live[i]!.from < live[i - 1]!.to)
      return `shards ${live[i - 1]!.shard} and ${live[i]!.shard} both own hash ${hexOf(live[i]!.from)}`;
  }
  // Fenced ranges fill what no unfenced range covers.
  const out = [...live];
  for (const f of all.filter((e) => e.fenced)) {
    let pieces: Array<{ from: bigint; to: bigint }> = [{ from: f.from, to: f.to }];
    for (const l of live)
      pieces = pieces.flatMap((p) =>
        l.to <= p.from || l.from >= p.to
          ? [p]
          : [
              ...(l.from > p.from ? [{ from: p.from, to: l.from }] : []),
              ...(l.to < p.to ? [{ from: l.to, to: p.to }] : []),
            ],
      );
    for (const p of pieces) out.push({ ...p, shard: f.shard, fenced: true });
  }
  out.sort((a, b) => (a.from < b.from ? -1 : 1));
  let expect = 0n;
  for (const e of out) {
    if (e.from !== expect)
      return e.from > expect
        ? `no shard owns hash ${hexOf(expect)}`
        : `shard ${e.shard} overlaps at hash ${hexOf(e.from)}`;
    expect = e.to;
  }
  if (expect !== HASH_SPACE_END) return `no shard owns hash ${hexOf(expect)}`;
  return out;
}
