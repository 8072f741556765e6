import type { DialectName, Queryable, Row, Tx } from '../storage/port.js';
import type { SplitContext, SplitMover } from '../storage/split-mover.js';
import { CLAIM } from './bus-sql.js';
import { topicOfStream } from './stream-names.js';

/**
 * What a shard split moves of the bus, by shard key:
 * - topic streams `t/<topic>/<key>` under [topic, key], the key the publisher
 *   routes by (their events are copied by the splitter);
 * - dedupe rows: an event's own row (seq >= 0) with its stream, and an id's
 *   pending claim (seq -1) with its home [“dedupe”, ref]. A claim aimed at the
 *   source for a moved stream is aimed at the target on arrival: its attempt
 *   can no longer commit on the source (the fence refuses it) and never
 *   committed there (its committed row would have replaced the claim), so the
 *   next publish of the id finds it not stored there, takes it over, and
 *   stores the event on the target once. Fences (seq -2, and the `!fence/`
 *   rows) stay: they only keep attempts off the shard that holds them, and no
 *   attempt writes a moved key to the source after the fence;
 * - subscription configs and their connection leases, under ["bus/sub", name]
 *   (a live connection renews its lease on the new home after the switch).
 * Subscription positions are per-shard cursors and stay; `onSwitch` records
 * the target's import horizon that delivery keys on (see `bus_split_imports`
 * and `split-gate.ts`). Topic retention settings and runtime topics live in
 * the catalog, dead letters are topic events: nothing else is keyed by hash.
 */
type InRange = (key: readonly string[] | string) => boolean;

/** [topic, key] of a topic stream. */
function keyOfTopicStream(stream: string): readonly string[] | undefined {
  const topic = topicOfStream(stream);
  return topic === null ? undefined : [topic, stream.slice(topic.length + 3)];
}

const subKey = (name: string): readonly string[] => ['bus/sub', name];

/** Whether a dedupe row goes with the range: an event's row by its stream, a claim by its id's home. */
function dedupeMoves(r: Row, inRange: InRange): boolean {
  const ref = String(r.ref);
  const seq = Number(r.seq);
  if (ref.startsWith('!')) return false;
  if (seq >= 0) {
    const key = keyOfTopicStream(String(r.stream));
    return key !== undefined && inRange(key);
  }
  return seq === CLAIM && inRange(['dedupe', ref]);
}

async function dedupeRows(q: Queryable, inRange: InRange): Promise<Row[]> {
  const rows = await q.all<Row>(
    `SELECT ref, stream, seq, created_at, token, target FROM bus_dedupe WHERE seq >= 0 OR seq = ${CLAIM}`,
  );
  return rows.filter((r) => dedupeMoves(r, inRange));
}

async function subscriptionRows(q: Queryable, inRange: InRange): Promise<Row[]> {
  const rows = await q.all<Row>('SELECT name, config, created_at, updated_at FROM bus_subscriptions');
  return rows.filter((r) => inRange(subKey(String(r.name))));
}

async function leaseRows(q: Queryable, inRange: InRange): Promise<Row[]> {
  const rows = await q.all<Row>("SELECT name, holder, expires_at FROM leases WHERE name LIKE 'bus/sub/%'");
  return rows.filter((r) => inRange(subKey(String(r.name).slice('bus/sub/'.length))));
}

async function insertRow(tx: Tx, table: string, r: Row): Promise<void> {
  const cols = Object.keys(r);
  await tx.run(
    `INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`,
    cols.map((c) => r[c]),
  );
}

/**
 * Records the target's import horizon (its head: every event there is an
 * import or the anchor) and the source position of the last moved event.
 * A row of a switched import is kept as it is: a rerun after a crash must not
 * move the horizon over events stored since the switch.
 */
async function recordImport(tx: Tx, split: SplitContext, dialect: DialectName, aborted: boolean): Promise<void> {
  const prior = await tx.all<{ aborted: number }>('SELECT aborted FROM bus_split_imports WHERE id = ?', [split.id]);
  if (prior[0] !== undefined && Number(prior[0].aborted) === 0) return;
  if (dialect === 'postgres') {
    const open = await tx.all<{ n: number }>('SELECT count(*) AS n FROM events WHERE pos IS NULL');
    // The splitter waits for the numbering first; should a row still lack its position, the step runs again.
    if (Number(open[0]!.n) > 0) throw new Error('imported events are not numbered yet');
  }
  const head = await tx.all<{ m: number | null }>('SELECT max(pos) AS m FROM events');
  const last = aborted
    ? []
    : await tx.all<{ m: number | null }>('SELECT max(source_pos) AS m FROM shard_import_map WHERE id = ?', [split.id]);
  const values = [split.source, Number(last[0]?.m ?? 0), Number(head[0]?.m ?? 0), aborted ? 1 : 0, Date.now()];
  if (prior[0] === undefined)
    await tx.run(
      'INSERT INTO bus_split_imports (id, source, source_pos, horizon, aborted, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      [split.id, ...values],
    );
  else
    await tx.run(
      'UPDATE bus_split_imports SET source = ?, source_pos = ?, horizon = ?, aborted = ?, created_at = ? WHERE id = ?',
      [...values, split.id],
    );
}

/** The bus face's part of a shard split. */
export const BUS_SPLIT_MOVER: SplitMover = {
  kind: 'bus',
  migrationPrefix: 'bus/',
  keyOfStream: keyOfTopicStream,
  async copyRows(source, target, inRange, _dialect, split) {
    let n = 0;
    // Replace: what an earlier, cut-off attempt copied goes first.
    for (const r of await dedupeRows(target, inRange))
      await target.run('DELETE FROM bus_dedupe WHERE ref = ?', [r.ref]);
    for (const r of await dedupeRows(source, inRange)) {
      const key = keyOfTopicStream(String(r.stream));
      const aimed =
        split !== undefined &&
        Number(r.seq) === CLAIM &&
        r.target === split.source &&
        key !== undefined &&
        inRange(key);
      await insertRow(target, 'bus_dedupe', aimed ? { ...r, target: split.target } : r);
      n++;
    }
    for (const r of await subscriptionRows(target, inRange))
      await target.run('DELETE FROM bus_subscriptions WHERE name = ?', [r.name]);
    for (const r of await subscriptionRows(source, inRange)) {
      await insertRow(target, 'bus_subscriptions', r);
      n++;
    }
    for (const r of await leaseRows(target, inRange)) await target.run('DELETE FROM leases WHERE name = ?', [r.name]);
    for (const r of await leaseRows(source, inRange)) {
      await insertRow(target, 'leases', r);
      n++;
    }
    return n;
  },
  async dropRows(source, inRange) {
    let n = 0;
    for (const r of await dedupeRows(source, inRange))
      n += await source.run('DELETE FROM bus_dedupe WHERE ref = ? AND seq = ?', [r.ref, r.seq]);
    for (const r of await subscriptionRows(source, inRange))
      n += await source.run('DELETE FROM bus_subscriptions WHERE name = ?', [r.name]);
    for (const r of await leaseRows(source, inRange))
      n += await source.run('DELETE FROM leases WHERE name = ?', [r.name]);
    return n;
  },
  onSwitch: (target, split, dialect) => recordImport(target, split, dialect, false),
  onAbort: (target, split, dialect) => recordImport(target, split, dialect, true),
};
