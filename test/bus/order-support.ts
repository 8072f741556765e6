import fc from 'fast-check';
import { expect } from 'vitest';
import type { Shard } from '../../src/storage/storage.js';

/**
 * Shared by the bus order property tests: random plans of publishers and
 * batches, and the check of what the shards stored against what publishers
 * were answered.
 */

/** One event of a plan: a key number, and an id number or none. */
export interface PlanEvent {
  key: number;
  id: number | null;
}
/** Publishers, each a list of batches it publishes one after another. */
export type Plan = PlanEvent[][][];

export const planArb = (
  opts: { keys?: number; ids?: number; publishers?: number; batches?: number; events?: number } = {},
): fc.Arbitrary<Plan> =>
  fc.array(
    fc.array(
      fc.array(
        fc.record({
          key: fc.nat((opts.keys ?? 6) - 1),
          // About one event in four without an id; ids repeat within and across batches and publishers.
          id: fc.option(fc.nat((opts.ids ?? 10) - 1), { freq: 3 }),
        }),
        { minLength: 1, maxLength: opts.events ?? 12 },
      ),
      { minLength: 1, maxLength: opts.batches ?? 4 },
    ),
    { minLength: 1, maxLength: opts.publishers ?? 3 },
  );

/** What an event carries in its data, to find it among the stored rows. */
export interface Mark {
  run: string;
  pub: number;
  batch: number;
  attempt: number;
  idx: number;
}

export const keyOf = (run: string, k: number): string => `${run}-k${k}`;
export const idOf = (run: string, i: number): string => `${run}-i${i}`;

export function eventsOf(
  run: string,
  pub: number,
  batch: number,
  attempt: number,
  plan: readonly PlanEvent[],
): Array<Record<string, unknown>> {
  return plan.map((e, idx) => {
    const mark: Mark = { run, pub, batch, attempt, idx };
    return {
      topic: 'orders',
      key: keyOf(run, e.key),
      type: 't',
      data: mark,
      ...(e.id === null ? {} : { id: idOf(run, e.id) }),
    };
  });
}

export interface StoredRow {
  shard: string;
  stream: string;
  pos: number | null;
  id: string | undefined;
  mark: Mark;
}

/** Every event of the run, on every shard. */
export async function storedOf(shards: readonly Shard[], run: string): Promise<StoredRow[]> {
  const rows: StoredRow[] = [];
  for (const s of shards) {
    const rs = await s.reader.all<{ stream: string; pos: number | null; meta: string | null; data: string }>(
      'SELECT stream, pos, meta, data FROM events WHERE stream LIKE ?',
      [`t/orders/${run}-%`],
    );
    for (const r of rs) {
      const meta = r.meta === null ? {} : (JSON.parse(r.meta) as { id?: string });
      rows.push({
        shard: s.name,
        stream: r.stream,
        pos: r.pos === null ? null : Number(r.pos),
        id: meta.id,
        mark: JSON.parse(r.data) as Mark,
      });
    }
  }
  return rows;
}

/** Rows stored by one attempt of one batch. */
export const rowsOfAttempt = (rows: readonly StoredRow[], pub: number, batch: number, attempt: number): StoredRow[] =>
  rows.filter((r) => r.mark.pub === pub && r.mark.batch === batch && r.mark.attempt === attempt);

/** A successful attempt of a batch and its answer. */
export interface Acked {
  pub: number;
  batch: number;
  attempt: number;
  plan: readonly PlanEvent[];
  answer: ReadonlyArray<{ shard: string; pos: number; duplicate: boolean }>;
}

/**
 * The guarantees: each id published is stored exactly once; the events a
 * publisher stored for one key have positions rising in publish order
 * (batch, then attempt, then place in the batch); every answer points at the
 * stored event, and says `duplicate: false` only for the event that this very
 * attempt stored.
 */
export function checkStored(run: string, plan: Plan, rows: readonly StoredRow[], acked: readonly Acked[]): void {
  expect(rows.every((r) => r.pos !== null)).toBe(true);
  const byId = new Map<string, StoredRow[]>();
  for (const r of rows) if (r.id !== undefined) byId.set(r.id, [...(byId.get(r.id) ?? []), r]);
  const ids = new Set(plan.flat(2).flatMap((e) => (e.id === null ? [] : [idOf(run, e.id)])));
  // (the rows of an id stored twice are shown)
  for (const id of ids)
    expect([id, byId.get(id)?.length ?? 0, byId.get(id)]).toEqual([id, 1, byId.get(id)?.slice(0, 1)]);
  expect(byId.size).toBe(ids.size);

  const lanes = new Map<string, StoredRow[]>();
  for (const r of rows) {
    const lane = `${r.mark.pub}|${r.stream}`;
    lanes.set(lane, [...(lanes.get(lane) ?? []), r]);
  }
  for (const [lane, rs] of lanes) {
    const shards = new Set(rs.map((r) => r.shard));
    expect([lane, shards.size]).toEqual([lane, 1]);
    const order = [...rs].sort((a, b) => a.pos! - b.pos!).map((r) => [r.mark.batch, r.mark.attempt, r.mark.idx]);
    const publishOrder = [...order].sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]!);
    expect([lane, order]).toEqual([lane, publishOrder]);
  }

  const at = new Map(rows.map((r) => [`${r.shard}:${r.pos}`, r]));
  for (const a of acked) {
    a.plan.forEach((e, idx) => {
      const p = a.answer[idx]!;
      const row = at.get(`${p.shard}:${p.pos}`);
      const where = { pub: a.pub, batch: a.batch, attempt: a.attempt, idx };
      expect([where, row !== undefined]).toEqual([where, true]);
      const mine =
        row!.mark.pub === a.pub &&
        row!.mark.batch === a.batch &&
        row!.mark.attempt === a.attempt &&
        row!.mark.idx === idx;
      if (e.id !== null) expect([where, row!.id]).toEqual([where, idOf(run, e.id)]);
      expect([where, p.duplicate]).toEqual([where, !mine]);
    });
  }
}
