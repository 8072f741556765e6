import type { DialectName, Queryable, Row, Tx } from '../storage/port.js';
import type { SplitMover } from '../storage/split-mover.js';
import type { LedgerConfig } from './config.js';
import { ledgerSql as sql } from './ledger-sql.js';
import { AGGREGATOR_CURSOR } from './ledger-types.js';

/**
 * What a shard split moves of the ledger, by shard key (the account's,
 * lock's or state's `shard_key` values, default its key, as configured):
 *
 * - accounts: their events with their ids (the target's id sequence is moved
 *   past them), and their log streams `ledger/<type>/<key>` (copied by the
 *   splitter). Aggregates and turnover buckets are not copied: the moved
 *   events arrive unstamped (`pos` NULL, which reads count one by one) and the
 *   target's aggregator starts over from the beginning of its log (its cursor
 *   removed), whose
 *   account streams are the imported ones, and builds them again in order.
 * - lock heads and locks, states, idempotency records (by [ledger.idempotency, key]);
 * - batch parts (a batch's part committed on the source covers its accounts
 *   that now live on the target): every one is copied, and the source keeps its own.
 *
 * A log stream whose account key was too long to name it (a SHA-1 instead)
 * is claimed by no face: a split of a shard holding one is refused.
 */
type InRange = (key: readonly string[] | string) => boolean;
type Key = readonly string[];
interface Keyed {
  readonly key: readonly string[];
  readonly shard_key?: readonly string[] | undefined;
}
interface Types {
  readonly accounts: Readonly<Record<string, Keyed>>;
  readonly locks: Readonly<Record<string, Keyed>>;
  readonly states: Readonly<Record<string, Keyed>>;
}

const CHUNK = 100;
const EVENT_COLS = ['id', 'batch_id', 'type', 'acc_key', 'aux', 'side', 'amount', 'dt', 'info'] as const;

/** The shard key of an object of a type from its key text as stored (a JSON array of its key values). */
function shardKey(types: Readonly<Record<string, Keyed>>, type: string, keyText: string): Key {
  const vals = JSON.parse(keyText) as string[];
  const t = types[type];
  // A type no longer configured is never read: its rows go with their whole key.
  if (t === undefined || t.shard_key === undefined) return vals;
  return t.shard_key.map((k) => vals[t.key.indexOf(k)]!);
}

async function distinctAccounts(q: Queryable, types: Types, inRange: InRange): Promise<Array<[string, string]>> {
  const seen = new Map<string, [string, string]>();
  for (const table of ['ledger_events', 'ledger_aggregates', 'ledger_buckets']) {
    for (const r of await q.all<{ type: string; acc_key: string }>(`SELECT DISTINCT type, acc_key FROM ${table}`)) {
      if (inRange(shardKey(types.accounts, r.type, r.acc_key)))
        seen.set(`${r.type}\u0000${r.acc_key}`, [r.type, r.acc_key]);
    }
  }
  return [...seen.values()];
}

/** Rows of a keyed table (locks, lock heads, states) whose key is in range. */
async function keyedRows(
  q: Queryable,
  table: string,
  keyCol: string,
  types: Readonly<Record<string, Keyed>>,
  inRange: InRange,
): Promise<Row[]> {
  const rows = await q.all<Row>(`SELECT * FROM ${table}`);
  return rows.filter((r) => inRange(shardKey(types, String(r.type), String(r[keyCol]))));
}

async function idempotencyRows(q: Queryable, inRange: InRange): Promise<Row[]> {
  const rows = await q.all<Row>('SELECT * FROM ledger_idempotency');
  return rows.filter((r) => inRange(['ledger.idempotency', String(r.key)]));
}

async function insertRows(tx: Tx, table: string, rows: readonly Row[], suffix = ''): Promise<void> {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]!);
  for (let off = 0; off < rows.length; off += CHUNK) {
    const chunk = rows.slice(off, off + CHUNK);
    const one = `(${cols.map(() => '?').join(', ')})`;
    await tx.run(
      `INSERT INTO ${table} (${cols.join(', ')}) VALUES ${chunk.map(() => one).join(', ')}${suffix}`,
      chunk.flatMap((r) => cols.map((c) => r[c])),
    );
  }
}

const KEYED = [
  { table: 'ledger_lock_heads', keyCol: 'lock_key', kind: 'locks', pk: ['type', 'lock_key'] },
  { table: 'ledger_locks', keyCol: 'lock_key', kind: 'locks', pk: ['type', 'lock_key', 'uid'] },
  { table: 'ledger_states', keyCol: 'state_key', kind: 'states', pk: ['type', 'state_key'] },
] as const;

async function deleteByPk(tx: Tx, table: string, pk: readonly string[], r: Row): Promise<number> {
  return tx.run(
    `DELETE FROM ${table} WHERE ${pk.map((c) => `${c} = ?`).join(' AND ')}`,
    pk.map((c) => r[c]),
  );
}

/** PostgreSQL: the monthly partitions of ledger_events for the months of `dts`, created on the target where missing. */
async function ensureMonths(tx: Tx, dts: ReadonlySet<number>): Promise<void> {
  const months = new Set<number>();
  for (const dt of dts) {
    const d = new Date(dt);
    months.add(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1));
  }
  for (const from of [...months].sort((a, b) => a - b)) {
    const m = new Date(from);
    const to = Date.UTC(m.getUTCFullYear(), m.getUTCMonth() + 1, 1);
    const name = `ledger_events_p${m.getUTCFullYear()}${String(m.getUTCMonth() + 1).padStart(2, '0')}`;
    await tx.all(sql.partitionCreateLock, [name]);
    if ((await tx.all<{ r: string | null }>(sql.regclass, [name]))[0]?.r) continue;
    await tx.run(sql.partitionCreate(name));
    await tx.run(sql.partitionFillFromDefault(name), [from, to]);
    await tx.run(sql.partitionAttach(name, from, to));
  }
}

/** The ledger's part of a shard split, for the account, lock and state types of `types`. */
export function ledgerSplitMover(types: Types): SplitMover {
  const keyOfStream = (stream: string): Key | undefined => {
    if (!stream.startsWith('ledger/')) return undefined;
    const rest = stream.slice('ledger/'.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) return undefined;
    const keyText = rest.slice(slash + 1);
    // A key too long to name its stream (a SHA-1 of it instead) cannot be routed from the name.
    if (!keyText.startsWith('[')) return undefined;
    return shardKey(types.accounts, rest.slice(0, slash), keyText);
  };

  const copyRows = async (source: Queryable, target: Tx, inRange: InRange, dialect: DialectName): Promise<number> => {
    // The target's aggregator starts over first: its cursor is removed (the aggregator makes it again
    // at the start of the log). Taking the row waits for an aggregator transaction committing now, and
    // one that commits later finds no cursor and rolls back (resetting it to a position instead could
    // meet a transaction that began at that very position after an earlier attempt of this step).
    await target.run('DELETE FROM cursors WHERE name = ?', [AGGREGATOR_CURSOR]);
    // Replace: what an earlier, cut-off attempt copied (or the target's aggregator built) goes first.
    for (const [type, accKey] of await distinctAccounts(target, types, inRange)) {
      for (const table of ['ledger_events', 'ledger_aggregates', 'ledger_buckets'])
        await target.run(`DELETE FROM ${table} WHERE type = ? AND acc_key = ?`, [type, accKey]);
    }
    let n = 0;
    const events: Row[] = [];
    for (const [type, accKey] of await distinctAccounts(source, types, inRange)) {
      events.push(
        ...(await source.all<Row>(
          `SELECT ${EVENT_COLS.join(', ')} FROM ledger_events WHERE type = ? AND acc_key = ? ORDER BY id`,
          [type, accKey],
        )),
      );
    }
    if (dialect === 'postgres' && events.length > 0)
      await ensureMonths(target, new Set(events.map((e) => Number(e.dt))));
    await insertRows(target, 'ledger_events', events);
    n += events.length;
    if (dialect === 'postgres' && events.length > 0) {
      // The moved events keep their ids: the target's sequence must pass them (never below where it stands).
      await target.all(
        `SELECT setval('${sql.eventIdSequence}', GREATEST((SELECT max(id) FROM ledger_events), (SELECT last_value FROM ${sql.eventIdSequence})))`,
      );
    }
    for (const k of KEYED) {
      for (const r of await keyedRows(target, k.table, k.keyCol, types[k.kind], inRange))
        await deleteByPk(target, k.table, k.pk, r);
      const rows = await keyedRows(source, k.table, k.keyCol, types[k.kind], inRange);
      await insertRows(target, k.table, rows);
      n += rows.length;
    }
    for (const r of await idempotencyRows(target, inRange))
      await target.run('DELETE FROM ledger_idempotency WHERE key = ?', [r.key]);
    const idem = await idempotencyRows(source, inRange);
    await insertRows(target, 'ledger_idempotency', idem);
    n += idem.length;
    const parts = await source.all<Row>('SELECT key, request_hash, created_at FROM ledger_batch_parts');
    await insertRows(target, 'ledger_batch_parts', parts, ' ON CONFLICT (key) DO NOTHING');
    return n + parts.length;
  };

  const dropRows = async (source: Tx, inRange: InRange): Promise<number> => {
    let n = 0;
    for (const [type, accKey] of await distinctAccounts(source, types, inRange)) {
      for (const table of ['ledger_events', 'ledger_aggregates', 'ledger_buckets'])
        n += await source.run(`DELETE FROM ${table} WHERE type = ? AND acc_key = ?`, [type, accKey]);
    }
    for (const k of KEYED) {
      for (const r of await keyedRows(source, k.table, k.keyCol, types[k.kind], inRange))
        n += await deleteByPk(source, k.table, k.pk, r);
    }
    for (const r of await idempotencyRows(source, inRange))
      n += await source.run('DELETE FROM ledger_idempotency WHERE key = ?', [r.key]);
    return n;
  };

  return {
    kind: 'ledger',
    migrationPrefix: 'ledger/',
    keyOfStream,
    copyRows,
    dropRows,
    // The runtime hands the ledger section as `ledgerConfigSchema` parsed it.
    configured: (section: unknown) => ledgerSplitMover(section as LedgerConfig),
  };
}

/** Without a configuration: every type routed by its whole key (the runtime configures it, see SplitMover.configured). */
export const LEDGER_SPLIT_MOVER: SplitMover = ledgerSplitMover({ accounts: {}, locks: {}, states: {} });
