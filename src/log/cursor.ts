import type { Logger } from 'pino';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import { MillraceError, badRequest } from '../core/errors.js';
import type { Tx } from '../storage/port.js';
import type { RoleLease } from '../storage/role-leases.js';
import { sleepUnless } from '../core/waker.js';
import type { Log, LogEvent } from './log.js';

export type CursorStart = 'earliest' | 'latest' | number;

export interface TailOptions {
  chunk?: number;
  abort?: AbortSignal;
  /** Return instead of waiting once caught up (used by one-shot readers). */
  untilCaughtUp?: boolean;
}

export interface ConsumerOptions {
  shard: string;
  name: string;
  /** Where a cursor that does not exist yet starts. */
  start?: CursorStart;
  chunk?: number;
  /**
   * transactional: the handler's writes and the cursor's new position commit
   * in one transaction on the cursor's shard, so each event is processed
   * exactly once. Otherwise the position is stored after the handler returns
   * (at-least-once: the handler must tolerate repeats, e.g. by message id).
   */
  mode: 'transactional' | 'at-least-once';
  handler: (events: LogEvent[], tx: Tx | null) => Promise<void>;
  /** Delay before retrying a failed handler. */
  retryMs?: number;
  /**
   * Run on one node at a time: before reading, the consumer takes the role
   * named after the shard and cursor (`RoleLeases`: a lock on a session of
   * its own plus a lease with an epoch); other nodes' consumers of the same
   * name stand by and one takes over when the holder stops, dies, or hangs
   * past `cluster.role_lease_ms`. Its transactions are fenced by the
   * role's epoch. Use
   * it for consumers every node starts but only one should run, so that
   * their transactions do not conflict on the cursor row (a conflict rolls
   * back a whole group-commit batch). The cursor's `pos = from` check still
   * guards the hand-over.
   */
  exclusive?: boolean;
}

/** Name of the advisory lock an exclusive consumer holds. */
export const exclusiveLockKey = (shard: string, name: string): string => `millrace:cursor:${shard}:${name}`;

const validName = (name: string): boolean => typeof name === 'string' && /^[A-Za-z0-9._:/-]{1,200}$/.test(name);

/**
 * Named durable cursors over a shard's positions. Reading is one loop for
 * catch-up and live alike: read the next chunk after the last position; when
 * nothing is left, wait for the head to move (in-process signal, or
 * LISTEN/NOTIFY from other nodes, with a poll as a safety net). Because
 * positions are gapless and only ever appear above the head, the switch from
 * catch-up to live can neither skip nor repeat an event.
 */
export class CursorEngine {
  constructor(
    private readonly log: Log,
    private readonly opts: { chunk: number; pollMs: number; logger: Logger; clock?: Clock },
  ) {}

  private get clock(): Clock {
    return this.opts.clock ?? systemClock;
  }

  /** Events after `afterPos`, chunk by chunk, then live as they are appended. */
  async *tail(shard: string, afterPos: number, opts: TailOptions = {}): AsyncGenerator<LogEvent[]> {
    const sl = this.log.shardLog(shard);
    const chunk = opts.chunk ?? this.opts.chunk;
    let pos = afterPos;
    while (!opts.abort?.aborted) {
      const batch = await this.log.readShard(shard, pos, chunk);
      if (batch.length > 0) {
        pos = batch[batch.length - 1]!.pos!;
        yield batch;
        continue;
      }
      if (opts.untilCaughtUp) return;
      await sl.signal.wait(pos, this.opts.pollMs, opts.abort);
    }
  }

  /** Stored position of a cursor, or null if it does not exist. */
  async position(shard: string, name: string): Promise<number | null> {
    const rows = await this.log
      .shardLog(shard)
      .shard.reader.all<{ pos: number }>('SELECT pos FROM cursors WHERE name = ?', [name]);
    return rows[0]?.pos ?? null;
  }

  async list(shard: string): Promise<Array<{ name: string; pos: number; updatedAt: number }>> {
    const rows = await this.log
      .shardLog(shard)
      .shard.reader.all<{ name: string; pos: number; updated_at: number }>(
        'SELECT name, pos, updated_at FROM cursors ORDER BY name',
      );
    return rows.map((r) => ({ name: r.name, pos: r.pos, updatedAt: r.updated_at }));
  }

  /** Creates the cursor at `start` unless it exists; returns its position. */
  async ensure(shard: string, name: string, start: CursorStart = 'earliest'): Promise<number> {
    if (!validName(name)) throw badRequest('cursor name must be 1-200 characters of letters, digits and . _ : / -');
    const existing = await this.position(shard, name);
    if (existing !== null) return existing;
    const pos = await this.resolveStart(shard, start);
    const sl = this.log.shardLog(shard);
    await sl.shard.write((tx) =>
      tx.run('INSERT INTO cursors (name, pos, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING', [
        name,
        pos,
        this.clock.now(),
      ]),
    );
    return (await this.position(shard, name))!;
  }

  async resolveStart(shard: string, start: CursorStart): Promise<number> {
    if (start === 'earliest') return 0;
    if (start === 'latest') return this.log.headPos(shard);
    if (!Number.isInteger(start) || start < 0) throw badRequest('start position must be a non-negative integer');
    return start;
  }

  /**
   * Moves a cursor from `from` to `to` inside a transaction. Fails with
   * `stream_conflict` if someone else moved it meanwhile, which rolls back the
   * caller's work: that is what makes transactional consumers exactly-once.
   */
  async advanceIn(tx: Tx, name: string, from: number, to: number): Promise<void> {
    const n = await tx.run('UPDATE cursors SET pos = ?, updated_at = ? WHERE name = ? AND pos = ?', [
      to,
      this.clock.now(),
      name,
      from,
    ]);
    if (n !== 1)
      throw new MillraceError('stream_conflict', `cursor "${name}" is no longer at ${from}`, {
        details: { cursor: name, expected_pos: from },
      });
  }

  /** Stores a position outside any other work (at-least-once consumers, acks). */
  async save(shard: string, name: string, pos: number): Promise<void> {
    await this.log.shardLog(shard).shard.write((tx) => this.saveIn(tx, name, pos));
  }

  /** Moves a cursor forward to `pos` inside a transaction (never back). */
  async saveIn(tx: Tx, name: string, pos: number): Promise<void> {
    await tx.run('UPDATE cursors SET pos = ?, updated_at = ? WHERE name = ? AND pos < ?', [
      pos,
      this.clock.now(),
      name,
      pos,
    ]);
  }

  async remove(shard: string, name: string): Promise<boolean> {
    const n = await this.log.shardLog(shard).shard.write((tx) => tx.run('DELETE FROM cursors WHERE name = ?', [name]));
    return n > 0;
  }

  /** Runs a durable named consumer until stopped. */
  consume(opts: ConsumerOptions): Consumer {
    if (!validName(opts.name))
      throw badRequest('cursor name must be 1-200 characters of letters, digits and . _ : / -');
    this.log.shardLog(opts.shard);
    return new Consumer(this, this.log, opts, this.opts.logger);
  }
}

export class Consumer {
  private readonly abort = new AbortController();
  readonly done: Promise<void>;
  /** Position processed so far (in memory). */
  pos = 0;
  /** An exclusive consumer: whether this node holds its lock and runs it. */
  holding = false;

  constructor(
    private readonly engine: CursorEngine,
    private readonly log: Log,
    private readonly opts: ConsumerOptions,
    private readonly logger: Logger,
  ) {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    const { shard, name } = this.opts;
    const roles = this.log.shardLog(shard).shard.roles;
    while (!this.abort.signal.aborted) {
      if (!this.opts.exclusive) {
        await this.runWhile(this.abort.signal, null);
        return;
      }
      let lease: RoleLease;
      try {
        // Stands by on one session of its own until the role frees (or its holder's lease runs out).
        lease = await roles.acquire(exclusiveLockKey(shard, name), this.abort.signal);
      } catch (err) {
        if (this.abort.signal.aborted) break;
        this.logger.warn({ err, shard, cursor: name }, 'consumer: cannot reach the shard to take its lock');
        await sleepUnless(this.opts.retryMs ?? 500, this.abort.signal);
        continue;
      }
      this.holding = true;
      try {
        await this.runWhile(AbortSignal.any([this.abort.signal, lease.lost]), lease);
        if (!this.abort.signal.aborted)
          this.logger.warn({ shard, cursor: name }, 'consumer: lost its role; standing by');
      } finally {
        this.holding = false;
        await lease
          .release()
          .catch((err: unknown) =>
            this.logger.warn(
              { err, shard, cursor: name },
              'consumer: releasing its lock failed; it lapses at the end of its term',
            ),
          );
      }
    }
  }

  /**
   * Reads and handles until `signal` fires, retrying a failed handler from
   * the stored position. An exclusive consumer's transactions (the handler's
   * and the cursor's, or the cursor's alone) pass its role's fence.
   */
  private async runWhile(signal: AbortSignal, lease: RoleLease | null): Promise<void> {
    const { shard, name } = this.opts;
    const sl = this.log.shardLog(shard);
    while (!signal.aborted) {
      try {
        this.pos = await this.engine.ensure(shard, name, this.opts.start ?? 'earliest');
        for await (const batch of this.engine.tail(shard, this.pos, { chunk: this.opts.chunk, abort: signal })) {
          const from = this.pos;
          const to = batch[batch.length - 1]!.pos!;
          const handle = async (): Promise<void> => {
            if (this.opts.mode === 'transactional') {
              await sl.shard.write(async (tx) => {
                if (lease) await lease.fence(tx);
                await this.opts.handler(batch, tx);
                await this.engine.advanceIn(tx, name, from, to);
              });
            } else {
              // The handler's effects lie outside the shard: make sure the role is still ours before them
              // (a holder waking from a pause finds out here), then fence the stored position.
              if (lease) await lease.check();
              await this.opts.handler(batch, null);
              await sl.shard.write(async (tx) => {
                if (lease) await lease.fence(tx);
                await this.engine.saveIn(tx, name, to);
              });
            }
          };
          await (lease ? lease.step(handle) : handle());
          this.pos = to;
        }
      } catch (err) {
        if (signal.aborted) break;
        this.logger.warn({ err, shard, cursor: name }, 'consumer: handler failed; retrying from the stored position');
        await sleepUnless(this.opts.retryMs ?? 500, signal);
      }
    }
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.done;
  }
}
