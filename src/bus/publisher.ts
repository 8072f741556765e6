import { randomUUID } from 'node:crypto';
import { MillraceError, badRequest } from '../core/errors.js';
import type { Log, AppendResult, NewEvent } from '../log/log.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import type { Clock } from '../core/clock.js';
import { TOPIC_NAME } from './config.js';
import { CLAIM, FENCE, SQL, fenceRef } from './bus-sql.js';

/** An event as a publisher hands it to the bus. */
export interface PublishEvent {
  /** Idempotency id: repeated within the dedupe window, the event is not stored again. */
  id?: string | undefined;
  topic: string;
  /** Events of one key keep their order; the key routes the event to a shard. */
  key?: string | undefined;
  type: string;
  headers?: Record<string, string> | undefined;
  data?: unknown;
}

export interface Published {
  shard: string;
  pos: number;
  /** The id was seen within the dedupe window: this is the first event's position. */
  duplicate: boolean;
}

/** What the bus keeps beside an event's data in the log's `meta`. */
export interface TopicMeta {
  topic: string;
  key: string;
  id?: string;
  headers?: Record<string, string>;
}

const MAX_ID = 200;
const MAX_KEY = 200;
const MAX_HEADERS = 64;
const MAX_BATCH = 10_000;

export const topicStream = (topic: string, key: string): string => `t/${topic}/${key}`;

interface Prepared {
  index: number;
  stream: string;
  shardKey: [string, string];
  ref: string | null;
  event: NewEvent;
  /** The shard that stores the event (of [topic, key]). */
  target: Shard;
  /** Several shards: this attempt's claim token on the id's home shard. */
  token: string | null;
}

/** An event whose claim was taken over or fenced before it committed: it goes through the claim again. */
const RESTART = 'restart' as const;
/** An id claimed by an older publish in flight: claimed again after a pause. */
const WAIT = 'wait' as const;
type Where = { shard: Shard; stream: string; seq: number };

/** Validates a whole batch before anything is written: one bad event refuses the batch. */
export function validateEvents(
  events: unknown,
  topics: ReadonlySet<string>,
  opts: { internal?: boolean } = {},
): PublishEvent[] {
  if (!Array.isArray(events) || events.length === 0) throw badRequest('events must be a non-empty array');
  if (events.length > MAX_BATCH) throw badRequest(`a batch holds at most ${MAX_BATCH} events`);
  return events.map((raw, i) => {
    const at = `events[${i}]`;
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw badRequest(`${at} must be an object`);
    const e = raw as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!['id', 'topic', 'key', 'type', 'headers', 'data'].includes(k))
        throw badRequest(`${at}: unknown field "${k}"`);
    }
    if (typeof e.topic !== 'string' || !TOPIC_NAME.test(e.topic)) throw badRequest(`${at}.topic must be a topic name`);
    if (!opts.internal && !topics.has(e.topic)) {
      throw new MillraceError('topic_not_found', `no topic "${e.topic}" is configured`, {
        details: { topic: e.topic },
      });
    }
    if (e.id !== undefined && (typeof e.id !== 'string' || e.id.length === 0 || e.id.length > MAX_ID)) {
      throw badRequest(`${at}.id must be a non-empty string of at most ${MAX_ID} characters`);
    }
    if (e.key !== undefined && (typeof e.key !== 'string' || e.key.length > MAX_KEY))
      throw badRequest(`${at}.key must be a string of at most ${MAX_KEY} characters`);
    if (typeof e.type !== 'string' || e.type.length === 0 || e.type.length > 200)
      throw badRequest(`${at}.type must be a non-empty string of at most 200 characters`);
    if (e.headers !== undefined) {
      if (e.headers === null || typeof e.headers !== 'object' || Array.isArray(e.headers))
        throw badRequest(`${at}.headers must be an object of strings`);
      const entries = Object.entries(e.headers as Record<string, unknown>);
      if (entries.length > MAX_HEADERS) throw badRequest(`${at}.headers: at most ${MAX_HEADERS} headers`);
      for (const [k, v] of entries)
        if (typeof v !== 'string' || k.length > 200 || v.length > 4096)
          throw badRequest(`${at}.headers.${k} must be a string`);
    }
    if (e.data !== undefined) {
      let text: string | undefined;
      try {
        text = JSON.stringify(e.data);
      } catch {
        text = undefined;
      }
      if (text === undefined) throw badRequest(`${at}.data is not JSON-serialisable`);
    }
    const out: PublishEvent = { topic: e.topic, type: e.type, data: e.data ?? null };
    if (e.id !== undefined) out.id = e.id as string;
    if (e.key !== undefined) out.key = e.key as string;
    if (e.headers !== undefined && Object.keys(e.headers as object).length > 0)
      out.headers = e.headers as Record<string, string>;
    return out;
  });
}

class DedupeRace extends Error {}

const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Write rounds a publish may take (each after claims lost to older publishes) before it answers `unavailable`. */
const MAX_ROUNDS = 50;

/**
 * A pending claim younger than this is left to its attempt, if that attempt
 * is older (see `Publisher.claim`); past it, the attempt is presumed dead and
 * its claim is taken over.
 */
export const CLAIM_GRACE_MS = 2000;

/**
 * The claim tokens of one publish: its start (fixed width, so tokens compare
 * as strings in start order), a random id of the publish, and a counter that
 * makes each claim attempt's token its own. The smaller token is the older
 * publish; all the tokens of one publish have the same rank.
 */
class Tokens {
  private readonly prefix: string;
  private n = 0;
  constructor(since: number) {
    this.prefix = `${Math.max(0, since).toString(36).padStart(10, '0')}.${randomUUID()}.`;
  }
  next(): string {
    return `${this.prefix}${(this.n++).toString(36)}`;
  }
  /** A token of this publish (an earlier attempt of its claims). */
  mine(token: string): boolean {
    return token.startsWith(this.prefix);
  }
  /** Whether this publish is older than the one that holds `token`. */
  olderThan(token: string): boolean {
    return this.prefix < token.slice(0, this.prefix.length);
  }
}

/** What a publish has committed so far. */
interface Progress {
  /** Some event of the batch was stored by a committed transaction. */
  stored: boolean;
  /** Wall time after which waiting for positions answers retryable `unavailable`. */
  deadline: number;
}

/**
 * The error to answer for a publish that failed. Before anything was
 * stored, the error as it is. After some events were stored, a retryable
 * `unavailable`: publishing the same batch again answers its stored ids as
 * duplicates and stores the rest.
 */
function answerAfter(err: unknown, progress: Progress): unknown {
  if (!progress.stored) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new MillraceError(
    'unavailable',
    `part of the batch was stored before a failure (${message}); publish the same batch again: its stored ids answer as duplicates`,
    {
      cause: err,
      retryAfterS: (err instanceof MillraceError ? err.retryAfterS : undefined) ?? 1,
      details: { partial: true },
    },
  );
}

/**
 * Publishing: routes each event to the shard of [topic, key], appends it to
 * the stream `t/<topic>/<key>` and records its id in the dedupe table in the
 * same transaction. A batch that lands on one shard is all-or-nothing.
 */
export class Publisher {
  constructor(
    private readonly log: Log,
    private readonly clock: Clock,
    private readonly dedupeWindowMs: number,
    /** How long a publish waits at most for the positions of what it stored (then: retryable `unavailable`). */
    private readonly deadlineMs = 10_000,
  ) {}

  async publish(events: readonly PublishEvent[]): Promise<Published[]> {
    const prepared = events.map((e, index): Prepared => {
      const key = e.key ?? '';
      const stream = topicStream(e.topic, key);
      const shardKey: [string, string] = [e.topic, key];
      const meta: Record<string, unknown> = { topic: e.topic, key };
      if (e.id !== undefined) meta.id = e.id;
      if (e.headers !== undefined) meta.headers = e.headers;
      const target = this.log.shardFor(stream, shardKey);
      return {
        index,
        stream,
        shardKey,
        target,
        token: null,
        ref: e.id === undefined ? null : `${e.topic}/${e.id}`,
        event: { type: e.type, data: e.data ?? null, meta },
      };
    });
    const out: Published[] = new Array<Published>(events.length);
    // Wall time: the wait is real time whatever clock stamps the events.
    const progress: Progress = { stored: false, deadline: Date.now() + this.deadlineMs };
    try {
      if (this.log.storage.shards.length === 1) {
        // One shard: its dedupe table sees every id, in the transaction that stores the event.
        await this.writeShard(this.log.storage.shards[0]!, prepared, out, progress);
      } else {
        await this.publishSharded(prepared, out, progress);
      }
      return out;
    } catch (err) {
      throw answerAfter(err, progress);
    }
  }

  /**
   * Several shards: an id's dedupe record lives on the shard of
   * [topic, "dedupe", id], whatever the key. Every id is claimed first; then
   * each target shard stores its events in publish order in one transaction.
   * A shard where a claim was lost meanwhile stores nothing: the lost ids are
   * claimed again and the shard's whole list is written again, so the events
   * of a key (which all land on one shard) keep their publish order.
   */
  private async publishSharded(prepared: readonly Prepared[], out: Published[], progress: Progress): Promise<void> {
    const first = new Map<string, Prepared>();
    const repeats: Array<[Prepared, Prepared]> = [];
    const toWrite = new Map<Shard, Prepared[]>();
    let pending: Prepared[] = [];
    for (const p of prepared) {
      if (p.ref !== null) {
        const f = first.get(p.ref);
        if (f !== undefined) {
          repeats.push([p, f]);
          continue;
        }
        first.set(p.ref, p);
        pending.push(p);
      }
      // By shard, not by per-key view of it (see Storage.shardFor): one transaction per shard.
      const list = toWrite.get(p.target.base);
      if (list === undefined) toWrite.set(p.target.base, [p]);
      else list.push(p);
    }
    const tokens = new Tokens(this.clock.now());
    for (let round = 0; toWrite.size > 0; round++) {
      if (round > MAX_ROUNDS)
        throw new MillraceError(
          'unavailable',
          'concurrent publishers of the same event ids kept taking their claims over',
          { retryAfterS: 1 },
        );
      const deadline = Date.now() + 2 * CLAIM_GRACE_MS + 5000;
      for (let attempt = 0; pending.length > 0; attempt++) {
        if (Date.now() > deadline)
          throw new MillraceError('unavailable', 'the claims of the event ids stayed held by other publishes', {
            retryAfterS: 1,
          });
        const again: Prepared[] = [];
        const waiting = await this.claim(pending, out, again, tokens, progress.deadline);
        pending = again;
        // Ids claimed by older publishes in flight: give them a moment to store or give up.
        if (waiting) await sleep(Math.min(100, 5 * 2 ** Math.min(attempt, 5)));
      }
      // Every shard's write is settled before the batch is answered, so an error answer never races a commit.
      const results = await Promise.allSettled(
        [...toWrite].map(async ([shard, ps]) => {
          // Ids answered as duplicates while claiming are not stored again.
          const list = ps.filter((p) => out[p.index] === undefined);
          const lost = await this.writeShard(
            this.log.storage.joined(
              shard,
              list.map((p) => p.target),
            ),
            list,
            out,
            progress,
          );
          if (lost.length === 0) toWrite.delete(shard);
          else pending.push(...lost);
        }),
      );
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    }
    for (const [p, f] of repeats) out[p.index] = { ...out[f.index]!, duplicate: true };
  }

  private homeOf(ref: string): Shard {
    return this.log.shardFor(`dedupe/${ref}`, ['dedupe', ref]);
  }

  /**
   * Claims each id on its home shard, or finds the event already stored
   * (answered as a duplicate into `out`). Those to try again go to `again`;
   * resolves true if some of them wait for an older publish.
   *
   * A pending claim of another publish is taken over only if that publish
   * is younger (its token is greater: wound-wait) or the claim is older than
   * `CLAIM_GRACE_MS` (its publish is presumed dead). Otherwise this publish
   * waits for it. Waits only ever go from a younger publish to an older one,
   * so no two publishes wait for each other, and the oldest one in flight
   * never loses a claim to a live publish: concurrent publishers of the same
   * ids cannot keep taking them from each other.
   */
  private async claim(
    list: readonly Prepared[],
    out: Published[],
    again: Prepared[],
    tokens: Tokens,
    deadline: number,
  ): Promise<boolean> {
    const byHome = new Map<Shard, Prepared[]>();
    const homeViews = new Map<Shard, Shard[]>();
    // In id order: the order in which every publisher locks the claims.
    for (const p of [...list].sort((a, b) => compare(a.ref!, b.ref!))) {
      p.token = tokens.next();
      const view = this.homeOf(p.ref!);
      const h = view.base;
      const ps = byHome.get(h);
      if (ps === undefined) {
        byHome.set(h, [p]);
        homeViews.set(h, [view]);
      } else {
        ps.push(p);
        homeViews.get(h)!.push(view);
      }
    }
    let waiting = false;
    const results = await Promise.allSettled(
      [...byHome].map(async ([base, ps]) => {
        const home = this.log.storage.joined(base, homeViews.get(base)!);
        const found = await this.retryRace(() => home.write((tx) => this.claimIn(tx, home, ps, tokens)));
        for (const [p, f] of found) {
          if (f === 'claimed') continue;
          if (f === WAIT) {
            waiting = true;
            again.push(p);
          } else if ('seq' in f)
            out[p.index] = {
              shard: f.shard.name,
              pos: await this.positionOf(f.shard, f.stream, f.seq, deadline),
              duplicate: true,
            };
          else if (f.wait) {
            // Claimed by an older publish in flight, for another shard: stored there already, or wait.
            const w = await this.storedOn(f.target, p.ref!);
            if (w === null) {
              waiting = true;
              again.push(p);
            } else
              out[p.index] = {
                shard: w.shard.name,
                pos: await this.positionOf(w.shard, w.stream, w.seq, deadline),
                duplicate: true,
              };
          } else {
            // A pending claim of another attempt aimed at another shard: that attempt died, or is younger.
            const r = await this.takeOver(home, p, f.target, f.token);
            if (r === RESTART) again.push(p);
            else if (r !== 'claimed')
              out[p.index] = {
                shard: r.shard.name,
                pos: await this.positionOf(r.shard, r.stream, r.seq, deadline),
                duplicate: true,
              };
          }
        }
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    return waiting;
  }

  /** Where `ref` is stored on `shard`, or null. */
  private async storedOn(shard: Shard, ref: string): Promise<Where | null> {
    const rows = await shard.reader.all<{ stream: string; seq: number }>(SQL.dedupeOf, [
      ref,
      this.clock.now() - this.dedupeWindowMs,
    ]);
    const seq = rows[0] === undefined ? -1 : Number(rows[0].seq);
    return seq >= 0 ? { shard, stream: rows[0]!.stream, seq } : null;
  }

  /** Whether this publish may take over a pending claim (see `claim`). */
  private mayTakeOver(tokens: Tokens, row: { token: string | null; created_at: number }, now: number): boolean {
    if (row.token === null || tokens.mine(row.token)) return true;
    if (now - Number(row.created_at) > CLAIM_GRACE_MS) return true;
    return tokens.olderThan(row.token);
  }

  private async claimIn(
    tx: Tx,
    home: Shard,
    ps: readonly Prepared[],
    tokens: Tokens,
  ): Promise<Array<[Prepared, 'claimed' | typeof WAIT | Where | { target: Shard; token: string; wait: boolean }]>> {
    const now = this.clock.now();
    const cutoff = now - this.dedupeWindowMs;
    const res: Array<[Prepared, 'claimed' | typeof WAIT | Where | { target: Shard; token: string; wait: boolean }]> =
      [];
    for (const p of ps) {
      const row = (
        await tx.all<{ stream: string; seq: number; token: string | null; target: string | null; created_at: number }>(
          SQL.claimOf,
          [p.ref, cutoff],
        )
      )[0];
      const seq = row === undefined ? null : Number(row.seq);
      if (row !== undefined && seq! >= 0) {
        res.push([p, { shard: home, stream: row.stream, seq: seq! }]);
        continue;
      }
      if (row !== undefined && seq === CLAIM && row.target !== home.name) {
        res.push([
          p,
          { target: this.shardNamed(row.target!), token: row.token!, wait: !this.mayTakeOver(tokens, row, now) },
        ]);
        continue;
      }
      // A pending claim aimed at this same shard is not stored (its event would have replaced it).
      if (row !== undefined && seq === CLAIM && !this.mayTakeOver(tokens, row, now)) {
        res.push([p, WAIT]);
        continue;
      }
      // Free, expired, or a pending claim aimed at this same shard: its event would have replaced it in
      // the transaction that stored it, so it is not stored; taking the row over fences that attempt out.
      const n = await tx.all<{ ref: string }>(SQL.takeClaim, [
        p.ref,
        p.stream,
        CLAIM,
        now,
        p.token,
        p.target.name,
        cutoff,
        row?.token ?? '',
      ]);
      if (n.length !== 1) throw new DedupeRace('dedupe race');
      res.push([p, 'claimed']);
    }
    return res;
  }

  /**
   * The id's claim (token `stale`) points at `target`, whose transaction has
   * not stored the event (or has): look there. Stored → duplicate. Not stored
   * → fence that attempt out on `target` (its commit would then fail), and
   * only then move the claim to this attempt.
   */
  private async takeOver(
    home: Shard,
    p: Prepared,
    target: Shard,
    stale: string,
  ): Promise<'claimed' | typeof RESTART | Where> {
    const stored = await this.retryRace(() =>
      target.write(async (tx): Promise<Where | null> => {
        const now = this.clock.now();
        const cutoff = now - this.dedupeWindowMs;
        const row = (
          await tx.all<{ stream: string; seq: number; token: string | null }>(SQL.dedupeOf, [p.ref, cutoff])
        )[0];
        if (row !== undefined && Number(row.seq) >= 0)
          return { shard: target, stream: row.stream, seq: Number(row.seq) };
        if (row !== undefined && row.token === stale) {
          await tx.all(SQL.fenceToken, [fenceRef(p.ref!, stale), now, stale, target.name]);
          return null;
        }
        const n = await tx.all<{ ref: string }>(SQL.fence, [p.ref, now, stale, target.name, cutoff]);
        if (n.length !== 1) throw new DedupeRace('dedupe race');
        // The id's row holds the latest fence only: a later fence of another attempt replaces it there.
        await tx.all(SQL.fenceToken, [fenceRef(p.ref!, stale), now, stale, target.name]);
        return null;
      }),
    );
    if (stored !== null) return stored;
    const moved = await home.write((tx) =>
      tx.run(SQL.settleClaim, [p.stream, this.clock.now(), p.token, p.target.name, p.ref, stale]),
    );
    return moved === 1 ? 'claimed' : RESTART;
  }

  private shardNamed(name: string): Shard {
    const s = this.log.storage.shards.find((x) => x.name === name);
    if (s === undefined)
      throw new MillraceError('shard_not_found', `no shard named "${name}"`, { details: { shard: name } });
    return s;
  }

  private async retryRace<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof DedupeRace)) throw err;
        if (attempt >= 5)
          throw new MillraceError('unavailable', 'concurrent publishers of the same event ids kept racing', {
            retryAfterS: 1,
          });
      }
    }
  }

  /**
   * Stores `list` (in publish order) on `shard` in one transaction, then
   * answers their positions into `out`. If any of their claims was lost
   * meanwhile, stores nothing and returns the events whose claim was lost.
   */
  private async writeShard(
    shard: Shard,
    list: readonly Prepared[],
    out: Published[],
    progress: Progress,
  ): Promise<Prepared[]> {
    if (list.length === 0) return [];
    const res = await this.retryRace(() => shard.write((tx) => this.publishIn(tx, shard, list)));
    if (res.restart.length > 0) return res.restart;
    if (res.appends.length > 0) progress.stored = true;
    const done = await this.resolvePositions(shard, res, progress.deadline);
    for (const [i, p] of done) out[i] = p;
    return [];
  }

  private async publishIn(tx: Tx, shard: Shard, list: readonly Prepared[]): Promise<PublishTxResult> {
    const now = this.clock.now();
    const cutoff = now - this.dedupeWindowMs;
    // The ids' rows, and the fences of this attempt's tokens.
    const refs = [
      ...new Set(
        list.flatMap((p) => (p.ref === null ? [] : p.token === null ? [p.ref] : [p.ref, fenceRef(p.ref, p.token)])),
      ),
    ];
    const seen = new Map<string, { stream: string; seq: number; token: string | null }>();
    for (let off = 0; off < refs.length; off += 500) {
      const part = refs.slice(off, off + 500);
      const rows = await tx.all<{ ref: string; stream: string; seq: number; token: string | null }>(
        SQL.dedupeMany(part.length),
        [...part, cutoff],
      );
      for (const r of rows) seen.set(r.ref, { stream: r.stream, seq: Number(r.seq), token: r.token });
    }
    const restart: Prepared[] = [];
    // Events to store, grouped by stream in publish order; repeats of an id inside the batch point at the first.
    const fresh: Prepared[] = [];
    const firstInBatch = new Map<string, Prepared>();
    const dup = new Map<number, { stream: string; seq: number } | Prepared>();
    for (const p of list) {
      if (p.ref !== null) {
        const s = seen.get(p.ref);
        if (s && s.seq >= 0) {
          dup.set(p.index, s);
          continue;
        }
        // This attempt's claim was taken over (CLAIM of another token) or it was fenced out (FENCE of its own).
        const fenced = p.token !== null && seen.has(fenceRef(p.ref, p.token));
        if (fenced || (s && ((s.seq === CLAIM && s.token !== p.token) || (s.seq === FENCE && s.token === p.token)))) {
          restart.push(p);
          continue;
        }
        const f = firstInBatch.get(p.ref);
        if (f) {
          dup.set(p.index, f);
          continue;
        }
        firstInBatch.set(p.ref, p);
      }
      fresh.push(p);
    }
    // A claim was lost: store nothing, so that the events after it in publish order do not overtake it.
    if (restart.length > 0) return { appends: [], stored: new Map(), dup: new Map(), restart };
    const byStream = new Map<string, Prepared[]>();
    for (const p of fresh) {
      const items = byStream.get(p.stream);
      if (items === undefined) byStream.set(p.stream, [p]);
      else items.push(p);
    }
    const stored = new Map<number, { stream: string; seq: number }>();
    const appends: Array<{ result: AppendResult; items: Prepared[] }> = [];
    // Streams in name order and ids in id order, the lock order every publisher keeps; each stream keeps publish order.
    for (const [stream, items] of [...byStream].sort(([a], [b]) => compare(a, b))) {
      const result = await this.log.appendIn(
        tx,
        shard,
        stream,
        items.map((p) => p.event),
        { shardKey: items[0]!.shardKey },
      );
      items.forEach((p, i) => stored.set(p.index, { stream, seq: result.seqs[i]! }));
      appends.push({ result, items });
    }
    const newRefs = fresh.filter((p) => p.ref !== null).sort((a, b) => compare(a.ref!, b.ref!));
    for (let off = 0; off < newRefs.length; off += 200) {
      const part = newRefs.slice(off, off + 200);
      const params: unknown[] = [];
      for (const p of part) {
        const s = stored.get(p.index)!;
        params.push(p.ref, s.stream, s.seq, now, p.token, p.token === null ? null : shard.name);
      }
      // Replaces only an expired row, this attempt's own claim, or a fence of another attempt.
      const rows = await tx.all<{ ref: string }>(SQL.insertDedupeMany(part.length), [...params, cutoff]);
      // A concurrent publisher (another PostgreSQL connection) committed the same id first: retry, and see it.
      if (rows.length !== part.length) throw new DedupeRace('dedupe race');
    }
    // Holding the ids' rows now, look again for fences of this attempt: one committed since the first look
    // (and whose row on the id another fence has replaced since) would otherwise go unseen.
    const tokened = newRefs.filter((p) => p.token !== null);
    for (let off = 0; off < tokened.length; off += 500) {
      const part = tokened.slice(off, off + 500);
      const rows = await tx.all<{ ref: string }>(SQL.dedupeMany(part.length), [
        ...part.map((p) => fenceRef(p.ref!, p.token!)),
        cutoff,
      ]);
      if (rows.length > 0) throw new DedupeRace('fenced meanwhile');
    }
    return { appends, stored, dup, restart };
  }

  private async resolvePositions(
    shard: Shard,
    res: PublishTxResult,
    deadline: number,
  ): Promise<Array<[number, Published]>> {
    const out: Array<[number, Published]> = [];
    const posOf = new Map<string, number>();
    for (const { result, items } of res.appends) {
      const positions = await this.log.positions(result, deadline - Date.now());
      items.forEach((p, i) => {
        out.push([p.index, { shard: shard.name, pos: positions[i]!, duplicate: false }]);
        posOf.set(`${result.stream}\u0000${result.seqs[i]}`, positions[i]!);
      });
    }
    for (const [index, d] of res.dup) {
      const ref = 'index' in d ? res.stored.get(d.index)! : d;
      const pos =
        posOf.get(`${ref.stream}\u0000${ref.seq}`) ?? (await this.positionOf(shard, ref.stream, ref.seq, deadline));
      out.push([index, { shard: shard.name, pos, duplicate: true }]);
    }
    return out;
  }

  /** The position of an event known by stream and seq, waiting for the sequencer if needed. */
  private async positionOf(shard: Shard, stream: string, seq: number, deadline: number): Promise<number> {
    // (on the shard that stores it)
    const sl = this.log.shardLog(shard.name);
    for (;;) {
      const head = sl.signal.head;
      const rows = await shard.reader.all<{ pos: number | null }>(SQL.posOf, [stream, seq]);
      const pos = rows[0]?.pos;
      if (pos !== null && pos !== undefined) return Number(pos);
      if (rows.length === 0) {
        // Stored once (its id says so) and gone since: retention removed it. Still a duplicate; its position is no more.
        const kept = await shard.reader.all(SQL.streamReached, [stream, seq]);
        if (kept.length > 0) return 0;
      }
      if (Date.now() > deadline)
        throw new MillraceError('unavailable', 'the sequencer did not number the event in time', { retryAfterS: 1 });
      await sl.signal.wait(head, Math.max(1, Math.min(100, deadline - Date.now())));
    }
  }

  /** Deletes dedupe ids older than the window on every shard; returns how many. */
  async prune(shards: readonly Shard[]): Promise<number> {
    const cutoff = this.clock.now() - this.dedupeWindowMs;
    let n = 0;
    for (const s of shards) n += await s.write((tx) => tx.run(SQL.pruneDedupe, [cutoff]));
    return n;
  }
}

interface PublishTxResult {
  appends: Array<{ result: AppendResult; items: Prepared[] }>;
  stored: Map<number, { stream: string; seq: number }>;
  dup: Map<number, { stream: string; seq: number } | Prepared>;
  restart: Prepared[];
}
