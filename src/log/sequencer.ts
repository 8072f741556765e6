import type { Logger } from 'pino';
import { sleepUnless, Waker } from '../core/waker.js';
import type { RoleLease } from '../storage/role-leases.js';
import type { Shard } from '../storage/storage.js';
import { chainHash, GENESIS_HASH, rowChainFields, type StoredEventRow } from './chain.js';
import { APPEND_CHANNEL, POS_CHANNEL, type Log } from './log.js';

type Unnumbered = Omit<StoredEventRow, 'pos' | 'hash'> & { id: number };

/**
 * The sequencer of a shard whose writers commit concurrently (PostgreSQL).
 * Writers insert rows without `pos`; exactly one sequencer per shard, the
 * holder of the shard's sequencer role (`RoleLeases`), numbers committed rows
 * in batches and sets their hashes. Rows it has not seen yet are invisible to
 * position readers, so a reader that has seen `pos = N` never later finds a
 * row below N. When the holder dies, or hangs past `cluster.role_lease_ms`,
 * a standby on any node takes over, reloading the chain tip from the
 * database; every numbering transaction checks the role's epoch, so a holder
 * that wakes after the hand-over numbers nothing.
 */
export class Sequencer {
  private stopped = false;
  private running: Promise<void> | undefined;
  private readonly waker = new Waker();
  private readonly abort = new AbortController();
  /** Rows numbered since start, for metrics. */
  numbered = 0;
  leader = false;
  /** Epoch of the role while leading. */
  epoch = 0;

  constructor(
    private readonly log: Log,
    private readonly shard: Shard,
    private readonly opts: {
      batch: number;
      pollMs: number;
      logger: Logger;
      /** Awaited between reading a batch and the transaction that numbers it (lets tests stand for a pause there). */
      beforeNumbering?: () => Promise<void>;
    },
  ) {}

  /** Name of the role (and its lock) that the sequencer of `shard` holds. */
  static role(shard: string): string {
    return `millrace:sequencer:${shard}`;
  }

  start(): void {
    if (this.running) return;
    this.shard.committer.on('notify', (channel: string) => {
      if (channel === APPEND_CHANNEL) this.waker.wake();
    });
    this.running = this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let lease: RoleLease;
      try {
        // A standby waits here on one session of its own until the role frees (or its holder's lease runs out).
        lease = await this.shard.roles.acquire(Sequencer.role(this.shard.name), this.abort.signal);
      } catch (err) {
        if (this.stopped) break;
        this.opts.logger.warn({ err, shard: this.shard.name }, 'sequencer: cannot reach the shard');
        // Not the waker: appends wake it, and each wake would open a session.
        await sleepUnless(this.opts.pollMs * 2, this.abort.signal);
        continue;
      }
      this.leader = true;
      this.epoch = lease.epoch;
      this.opts.logger.info({ shard: this.shard.name, epoch: lease.epoch }, 'sequencer: holding the shard role');
      // Append notices from other nodes matter only to the leader: a standby
      // does not listen, so the server does not send it one per commit. The
      // leader listens before its first read, so nothing slips between.
      const unlisten = await this.shard.driver.listen(APPEND_CHANNEL, () => this.waker.wake()).catch(() => undefined);
      // This node's own commits wake it in process; they need not tell the server.
      this.shard.committer.setLocalOnly(APPEND_CHANNEL, true);
      const onLost = (): void => this.waker.wake();
      lease.lost.addEventListener('abort', onLost, { once: true });
      try {
        await this.lead(lease);
        if (!this.stopped)
          this.opts.logger.warn(
            { shard: this.shard.name, epoch: lease.epoch },
            'sequencer: lost the shard role, standing by',
          );
      } catch (err) {
        if (!this.stopped)
          this.opts.logger.warn({ err, shard: this.shard.name }, 'sequencer: lost the shard, standing by');
      } finally {
        lease.lost.removeEventListener('abort', onLost);
        this.leader = false;
        // A successor elsewhere reads what is unnumbered when it starts, then hears this node's commits again.
        this.shard.committer.setLocalOnly(APPEND_CHANNEL, false);
        // Stepping down: a listener that fails to stop is on a broken connection, which listens no more.
        await unlisten?.().catch(() => {});
        await lease
          .release()
          .catch((err: unknown) =>
            this.opts.logger.warn(
              { err, shard: this.shard.name },
              'sequencer: releasing the role lease failed; it lapses at the end of its term',
            ),
          );
      }
    }
  }

  private async lead(lease: RoleLease): Promise<void> {
    const conn = lease.conn;
    const tipRows = await lease.step(() =>
      conn.all<{ pos: number; hash: Buffer }>(
        'SELECT pos, hash FROM events WHERE pos IS NOT NULL ORDER BY pos DESC LIMIT 1',
      ),
    );
    let tip = tipRows[0] ? { pos: tipRows[0].pos, hash: tipRows[0].hash } : { pos: 0, hash: GENESIS_HASH };
    const sl = this.log.shardLog(this.shard.name);
    sl.signal.advance(tip.pos);
    while (!this.stopped && !lease.lost.aborted) {
      // One step per batch: a step stuck for a whole lease (a hung statement, a pause) lets the lease run out.
      const done = await lease.step(() => this.numberBatch(lease, tip));
      if (done === null) {
        await this.waker.sleep(this.opts.pollMs);
        continue;
      }
      tip = done.tip;
      sl.tip = tip;
      sl.signal.advance(tip.pos);
      this.log.emit('sequenced', this.shard.name, tip.pos);
      // A batch that was not full took every row committed before it was
      // read; rows committed since then woke the waker (every append
      // notifies), so the next read waits for that wake instead of finding
      // nothing.
      if (!done.full) await this.waker.sleep(this.opts.pollMs);
    }
  }

  /** Numbers the next batch of committed rows after `tip`; the new tip and whether the batch was full, or null if there was nothing to number. */
  private async numberBatch(
    lease: RoleLease,
    tip: { pos: number; hash: Buffer },
  ): Promise<{ tip: { pos: number; hash: Buffer }; full: boolean } | null> {
    const conn = lease.conn;
    const rows = await conn.all<Unnumbered>(
      'SELECT id, stream, seq, type, data, meta, created_at FROM events WHERE pos IS NULL ORDER BY id LIMIT ?',
      [this.opts.batch],
    );
    if (rows.length === 0) return null;
    const ids: number[] = [];
    const positions: number[] = [];
    const hashes: Buffer[] = [];
    let next = tip;
    for (const r of rows) {
      const pos = next.pos + 1;
      const hash = chainHash(next.hash, rowChainFields(pos, r));
      ids.push(r.id);
      positions.push(pos);
      hashes.push(hash);
      next = { pos, hash };
    }
    if (this.opts.beforeNumbering) await this.opts.beforeNumbering();
    // One statement, a transaction by itself (one round trip): the fence
    // (it numbers only if the role is still ours, its epoch unchanged), the
    // numbering and the position notice. Should some row have been numbered
    // elsewhere (only a second numberer could), the statement fails and
    // numbers nothing: never chain on a tip that is not the shard's.
    const fence = lease.fenceStatement();
    const r = await conn.all<{ fenced: number; n: number }>(
      `WITH f AS (${fence === null ? 'SELECT 1' : `${fence.sql} RETURNING 1`}),
            u AS (UPDATE events SET pos = v.pos, hash = v.hash
                    FROM (SELECT unnest(?::bigint[]) AS id, unnest(?::bigint[]) AS pos, unnest(?::bytea[]) AS hash) AS v
                   WHERE events.id = v.id AND events.pos IS NULL AND EXISTS (SELECT 1 FROM f)
                  RETURNING 1)
       SELECT c.fenced, c.n,
              CASE WHEN c.fenced = 1 THEN pg_notify(?, ?) END AS notified,
              CAST(CASE WHEN c.fenced <> 1 OR c.n = ?::int THEN '0' ELSE 'sequencer: rows were numbered elsewhere' END AS int) AS checked
         FROM (SELECT (SELECT count(*) FROM f)::int AS fenced, (SELECT count(*) FROM u)::int AS n) AS c`,
      [...(fence?.params ?? []), ids, positions, hashes, POS_CHANNEL, String(next.pos), ids.length],
    );
    // The role lost: nothing was numbered.
    fence?.confirm(r[0]!.fenced);
    if (r[0]!.n !== ids.length)
      throw new Error(`sequencer: ${ids.length - r[0]!.n} of ${ids.length} rows were numbered elsewhere`);
    this.numbered += rows.length;
    return { tip: next, full: rows.length >= this.opts.batch };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.waker.wake();
    await this.running;
    this.running = undefined;
  }
}
