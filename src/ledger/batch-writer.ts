import { createHash, randomUUID } from 'node:crypto';
import { sleep } from '../core/clock.js';
import { isMillraceError, MillraceError } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { BeforeStatement, NewEvent } from '../log/log.js';
import type { Tx } from '../storage/port.js';
import { IdBlocks } from './id-blocks.js';
import { PostingCombiner } from './posting-combiner.js';
import type { Shard } from '../storage/storage.js';
import { formatUnits } from './decimal.js';
import { ledgerSql as sql } from './ledger-sql.js';
import { type BatchAnswer, type BatchRequest, POSTED } from './ledger-types.js';
import { lockHeadKey, type LockStore } from './lock-store.js';
import type { PreparedEvent, PreparedLock, PreparedState, RequestValidator } from './request-validator.js';
import { stateKey, type StateStore } from './state-store.js';

const canonical = (v: unknown): string => {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
};

/** One shard's part of a batch (`shard` a view checking the route of each of its keys). */
interface Part {
  shard: Shard;
  events: PreparedEvent[];
  locks: PreparedLock[];
  states: PreparedState[];
}

/** Plain postings of one batch's part, with the view of the shard that checks their keys' routes. */
interface Posting {
  batchId: string;
  events: PreparedEvent[];
  view: Shard;
}

/** A part refused because its keys moved is routed again this many times (a cut-over lasts a moment) before the batch fails. */
const REROUTE_ATTEMPTS = 600;
const REROUTE_PAUSE_MS = 50;

/** Writes batches: events, lock checks and state updates, atomically per shard, idempotent by key across shards. */
export class BatchWriter {
  private readonly idBlocks = new Map<string, IdBlocks>();
  private readonly combiners = new Map<string, PostingCombiner<Posting>>();

  constructor(
    private readonly rt: Runtime,
    private readonly validate: RequestValidator,
    private readonly locks: LockStore,
    private readonly states: StateStore,
  ) {}

  async write(req: BatchRequest): Promise<BatchAnswer> {
    const now = this.rt.clock.now();
    const { events: prepared, locks, states, idempotencyKey: idem } = this.validate.batch(req);
    // Only an idempotent batch is compared with its earlier request.
    const requestHash =
      idem === undefined
        ? ''
        : createHash('sha256')
            .update(canonical({ ...req, idempotency_key: undefined }))
            .digest('hex');
    const home = idem === undefined ? undefined : this.rt.storage.shardFor(['ledger.idempotency', idem]);
    if (idem !== undefined && home !== undefined) {
      const rows = await home.reader.all<{ request_hash: string; answer: string }>(sql.idempotencyGet, [idem]);
      const prior = rows[0];
      if (prior) {
        if (prior.request_hash !== requestHash) throw reused(idem);
        return JSON.parse(prior.answer) as BatchAnswer;
      }
    }
    const batchId =
      idem === undefined ? randomUUID() : `idem-${createHash('sha256').update(idem).digest('hex').slice(0, 32)}`;

    // Group the batch by shard; each shard's part commits atomically.
    const ordered = this.group(prepared, locks, states);

    // Preflight across shards, so a stale version, a missing lock or a range
    // cutting over on one shard fails the batch before any shard is written.
    if (ordered.length > 1) {
      const fenced = ordered.find((p) => p.shard.route?.fenced === true);
      if (fenced !== undefined) throw movedBatch(fenced.shard.name);
      for (const p of ordered) {
        for (const l of p.locks) await this.locks.checkLockHeld(p.shard.reader, l.type, l.keyText, l.uid, now);
        for (const s of p.states) await this.states.checkStateVersion(p.shard.reader, s.type, s.keyText, s.expected);
      }
    }

    const writePart = (p: Part): Promise<BatchAnswer['states'] | null> =>
      this.writePart(p, { batchId, idem, requestHash, now });
    const stateVersions: BatchAnswer['states'] = [];
    const committed: string[] = [];
    for (const p of ordered) {
      try {
        let versions: BatchAnswer['states'] | null;
        try {
          versions = await writePart(p);
          committed.push(p.shard.name);
        } catch (err) {
          // Parts are in already and this one's keys moved (a split cut over since the batch was routed):
          // the part follows its keys to the shard that owns them now, so the batch is never half written.
          if (committed.length === 0 || !isMillraceError(err, 'shard_moved')) throw err;
          versions = await this.rerouted(p, writePart, committed);
        }
        if (versions) stateVersions.push(...versions);
      } catch (err) {
        if (committed.length > 0 && err instanceof MillraceError) {
          throw new MillraceError(
            err.code,
            `${err.message} (the parts of this batch on shards ${committed.join(', ')} were already committed; cross-shard batches are atomic per shard only)`,
            {
              details: { ...(err.details ?? {}), committed_shards: committed },
              cause: err,
            },
          );
        }
        throw err;
      }
    }
    const answer: BatchAnswer = { batch_id: batchId, events: prepared.length, states: stateVersions };
    if (idem !== undefined && home !== undefined) {
      await home.write(async (tx) => {
        await tx.run(sql.idempotencyPut, [idem, requestHash, JSON.stringify(answer), now]);
      });
      const rows = await home.reader.all<{ request_hash: string; answer: string }>(sql.idempotencyGet, [idem]);
      if (rows[0] && rows[0].request_hash !== requestHash) throw reused(idem);
      if (rows[0]) return JSON.parse(rows[0].answer) as BatchAnswer;
    }
    return answer;
  }

  /** The batch's items by the shard their keys route to now: one part per shard, ordered by name, each checking every key's route. */
  private group(
    events: readonly PreparedEvent[],
    locks: readonly PreparedLock[],
    states: readonly PreparedState[],
  ): Part[] {
    const parts = new Map<string, Part & { views: Shard[] }>();
    const part = (s: Shard) => {
      let p = parts.get(s.name);
      if (!p) parts.set(s.name, (p = { shard: s, views: [], events: [], locks: [], states: [] }));
      p.views.push(s);
      return p;
    };
    for (const e of events) part(e.shard).events.push(e);
    for (const l of locks) part(l.shard).locks.push(l);
    for (const s of states) part(s.shard).states.push(s);
    return [...parts.values()]
      .map(({ shard, views, ...items }) => ({ ...items, shard: this.rt.storage.joined(shard, views) }))
      .sort((a, b) => (a.shard.name < b.shard.name ? -1 : 1));
  }

  /**
   * Writes a refused part where its keys are routed now (refreshing the
   * table), waiting out a cut-over; gives up with `shard_moved` after
   * REROUTE_ATTEMPTS. Returns the parts' state versions.
   */
  private async rerouted(
    refused: Part,
    writePart: (p: Part) => Promise<BatchAnswer['states'] | null>,
    committed: string[],
  ): Promise<BatchAnswer['states']> {
    const out: BatchAnswer['states'] = [];
    let pending = [refused];
    for (let attempt = 0; ; attempt++) {
      await this.rt.storage.refreshRouting();
      const next: Part[] = [];
      for (const p of pending) {
        const again = this.group(
          p.events.map((e) => ({ ...e, shard: this.validate.accountShard(e.t, e.keyVals) })),
          p.locks.map((l) => ({ ...l, shard: this.validate.keyedType('locks', l.type, l.attrs, 'locks').shard })),
          p.states.map((s) => ({ ...s, shard: this.validate.keyedType('states', s.type, s.attrs, 'states').shard })),
        );
        for (const q of again) {
          if (q.shard.route?.fenced !== true) {
            try {
              const v = await writePart(q);
              if (v) out.push(...v);
              committed.push(q.shard.name);
              continue;
            } catch (err) {
              if (!isMillraceError(err, 'shard_moved')) throw err;
            }
          }
          next.push(q);
        }
      }
      if (next.length === 0) return out;
      if (attempt >= REROUTE_ATTEMPTS) throw movedBatch(next[0]!.shard.name);
      pending = next;
      await sleep(REROUTE_PAUSE_MS);
    }
  }

  /** One shard's part of a batch, atomically; null if an earlier attempt of the idempotent batch committed it. */
  private async writePart(
    p: Part,
    b: { batchId: string; idem: string | undefined; requestHash: string; now: number },
  ): Promise<BatchAnswer['states'] | null> {
    const { batchId, idem, requestHash, now } = b;
    // Plain postings (no idempotency key, locks or states) where arrays bind: folded with concurrent ones into one wave.
    if (
      idem === undefined &&
      p.locks.length === 0 &&
      p.states.length === 0 &&
      p.events.length > 0 &&
      p.shard.driver.capabilities.bulkArrayParams
    ) {
      await this.combinerFor(p.shard.base).post(
        { batchId, events: p.events, view: p.shard },
        partLockKeys(p, undefined),
      );
      return [];
    }
    return p.shard.write(
      async (tx) => {
        if (idem !== undefined) {
          const n = await tx.run(sql.batchPartPut, [idem, requestHash, now]);
          if (n === 0) {
            const r = await tx.all<{ request_hash: string }>(sql.batchPartGet, [idem]);
            if (r[0]?.request_hash !== requestHash) throw reused(idem);
            return null; // this part committed on an earlier attempt
          }
        }
        for (const l of p.locks) {
          await this.locks.lockHead(tx, l.type, l.keyText);
          await this.locks.checkLockHeld(tx, l.type, l.keyText, l.uid, now);
        }
        const versions: BatchAnswer['states'] = [];
        for (const s of p.states)
          versions.push({
            type: s.type,
            attrs: s.attrs,
            version: await this.states.writeState(tx, s.type, s.keyText, s.state, s.expected, now),
          });
        await this.insertEvents(tx, p.shard, batchId, p.events);
        return versions;
      },
      { lockKeys: partLockKeys(p, idem) },
    );
  }

  /** Combines concurrent plain postings per shard (PostgreSQL), see PostingCombiner. */
  private combinerFor(shard: Shard): PostingCombiner<Posting> {
    let c = this.combiners.get(shard.name);
    if (c === undefined) {
      // Postings are written through a view that checks the route of every key they write.
      const route = (postings: readonly Posting[]): Shard =>
        this.rt.storage.joined(
          shard,
          postings.map((p) => p.view),
        );
      c = new PostingCombiner(shard, (tx, postings) => this.insertPostings(tx, shard, postings), {
        route,
        wave: async (postings, keys) => {
          const { items, before } = await this.postingsStatement(shard, postings);
          if (items.length > 0) await this.rt.log.appendManyAlone(route(postings), items, before, keys);
        },
      });
      this.combiners.set(shard.name, c);
    }
    return c;
  }

  private idBlocksFor(shard: Shard): IdBlocks {
    let b = this.idBlocks.get(shard.name);
    if (b === undefined) this.idBlocks.set(shard.name, (b = new IdBlocks(shard.reader, sql.eventIdSequence)));
    return b;
  }

  private insertEvents(tx: Tx, shard: Shard, batchId: string, events: PreparedEvent[]): Promise<void> {
    return this.insertPostings(tx, shard, [{ batchId, events }]);
  }

  /** The events of several batches' parts on one shard, and their log events: one statement where arrays bind (PostgreSQL). */
  private async insertPostings(
    tx: Tx,
    shard: Shard,
    postings: ReadonlyArray<{ batchId: string; events: PreparedEvent[] }>,
  ): Promise<void> {
    if (shard.driver.capabilities.bulkArrayParams) {
      const { items, before } = await this.postingsStatement(shard, postings);
      if (items.length > 0) await this.rt.log.appendManyIn(tx, shard, items, before);
      return;
    }
    const ids: number[] = [];
    const CHUNK = 400;
    for (const p of postings) {
      for (let off = 0; off < p.events.length; off += CHUNK) {
        const chunk = p.events.slice(off, off + CHUNK);
        const params: unknown[] = [];
        for (const e of chunk)
          params.push(p.batchId, e.t.name, e.accKey, JSON.stringify(e.aux), e.side, e.units.toString(), e.dt, e.info);
        const rows = await tx.all<{ id: number }>(sql.insertEvents(chunk.length), params);
        for (const r of rows) ids.push(Number(r.id));
      }
    }
    const items = this.logItems(postings, ids);
    if (items.length > 0) await this.rt.log.appendManyIn(tx, shard, items);
  }

  /**
   * Where arrays bind: ids drawn ahead (outside any transaction), the ledger
   * events as one statement to run first (`before`), and their log events.
   */
  private async postingsStatement(
    shard: Shard,
    postings: ReadonlyArray<{ batchId: string; events: PreparedEvent[] }>,
  ): Promise<{ items: Array<{ stream: string; events: NewEvent[] }>; before: BeforeStatement }> {
    const n = postings.reduce((a, p) => a + p.events.length, 0);
    const ids = await this.idBlocksFor(shard).take(n);
    const cols: unknown[][] = [ids, [], [], [], [], [], [], [], []];
    for (const p of postings) {
      for (const e of p.events) {
        const row = [p.batchId, e.t.name, e.accKey, JSON.stringify(e.aux), e.side, e.units.toString(), e.dt, e.info];
        for (let c = 0; c < 8; c++) cols[c + 1]!.push(row[c]);
      }
    }
    return {
      items: this.logItems(postings, ids),
      before: { sql: sql.insertEventsWithIds, params: cols, where: sql.insertEventsWithIdsWhere },
    };
  }

  /** One log event per batch and account touched (events in `ids` order); streams of a batch in name order. */
  private logItems(
    postings: ReadonlyArray<{ batchId: string; events: PreparedEvent[] }>,
    ids: readonly number[],
  ): Array<{ stream: string; events: NewEvent[] }> {
    // The exporter ships these in position order, and the aggregator follows their positions.
    const items: Array<{ stream: string; events: NewEvent[] }> = [];
    let at = 0;
    for (const p of postings) {
      const byAccount = new Map<string, Array<{ e: PreparedEvent; id: number }>>();
      for (const e of p.events) {
        const k = accountStream(e.t.name, e.accKey);
        let l = byAccount.get(k);
        if (!l) byAccount.set(k, (l = []));
        l.push({ e, id: ids[at++]! });
      }
      for (const stream of [...byAccount.keys()].sort()) {
        const list = byAccount.get(stream)!;
        const first = list[0]!.e;
        items.push({
          stream,
          events: [
            {
              type: POSTED,
              data: {
                batch_id: p.batchId,
                account: { type: first.t.name, key: this.validate.keyObject(first.t, first.keyVals) },
                acc_key: first.accKey,
                events: list.map(({ e, id }) => ({
                  id,
                  side: e.side,
                  amount: formatUnits(e.units, e.t.scale),
                  units: e.units.toString(),
                  dt: e.dt,
                  aux: e.aux,
                  ...(e.info === null ? {} : { info: JSON.parse(e.info) as unknown }),
                })),
              },
            },
          ],
        });
      }
    }
    return items;
  }
}

/** The log stream of an account. */
export function accountStream(type: string, accKey: string): string {
  const streamKey = accKey.length <= 400 ? accKey : createHash('sha1').update(accKey).digest('hex');
  return `ledger/${type}/${streamKey}`;
}

/** What a batch's part writes that other writers contend for: its account streams, lock heads, states and idempotency key. */
function partLockKeys(
  p: { events: PreparedEvent[]; locks: PreparedLock[]; states: PreparedState[] },
  idem: string | undefined,
): string[] {
  const keys = new Set<string>();
  for (const e of p.events) keys.add(accountStream(e.t.name, e.accKey));
  for (const l of p.locks) keys.add(lockHeadKey(l.type, l.keyText));
  for (const s of p.states) keys.add(stateKey(s.type, s.keyText));
  if (idem !== undefined) keys.add(`ledger.idempotency/${idem}`);
  return [...keys];
}

function movedBatch(shard: string): MillraceError {
  return new MillraceError('shard_moved', `shard ${shard} is cutting over a hash range of this batch's keys; retry`, {
    retryAfterS: 1,
    details: { shard },
  });
}

function reused(key: string): MillraceError {
  return new MillraceError(
    'idempotency_key_reused',
    `idempotency key "${key}" was already used with a different request`,
    { details: { idempotency_key: key } },
  );
}
