import type { Logger } from 'pino';
import { sleepUnless, Waker } from '../core/waker.js';
import type { HeldLock } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import { chainHash, GENESIS_HASH, rowChainFields, type StoredEventRow } from './chain.js';
import { APPEND_CHANNEL, POS_CHANNEL, type Log } from './log.js';

type Unnumbered = Omit<StoredEventRow, 'pos' | 'hash'> & { id: number };

/**
 * The sequencer of a shard whose writers commit concurrently (PostgreSQL).
 * Writers insert rows without `pos`; exactly one sequencer per shard, the
 * holder of an advisory lock, numbers committed rows in batches and sets their
 * hashes. Rows it has not seen yet are invisible to position readers, so a
 * reader that has seen `pos = N` never later finds a row below N. When the
 * holder's connection dies the lock frees and a standby on any node takes over,
 * reloading the chain tip from the database.
 */
export class Sequencer {
  private stopped = false;
  private running: Promise<void> | undefined;
  private readonly waker = new Waker();
  private readonly abort = new AbortController();
  private lock: HeldLock | null = null;
  /** Rows numbered since start, for metrics. */
  numbered = 0;
  leader = false;

  constructor(
    private readonly log: Log,
    private readonly shard: Shard,
    private readonly opts: { batch: number; pollMs: number; logger: Logger },
  ) {}

  start(): void {
    if (this.running) return;
    this.shard.committer.on('notify', (channel: string) => {
      if (channel === APPEND_CHANNEL) this.waker.wake();
    });
    this.running = this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      try {
        // A standby waits here on one session of its own until the holder's lock frees.
        this.lock = await this.shard.driver.lock(`millrace:sequencer:${this.shard.name}`, this.abort.signal);
      } catch (err) {
        if (this.stopped) break;
        this.opts.logger.warn({ err, shard: this.shard.name }, 'sequencer: cannot reach the shard');
        this.lock = null;
        // Not the waker: appends wake it, and each wake would open a session.
        await sleepUnless(this.opts.pollMs * 2, this.abort.signal);
        continue;
      }
      this.leader = true;
      this.opts.logger.info({ shard: this.shard.name }, 'sequencer: holding the shard lock');
      // Append notices from other nodes matter only to the leader: a standby
      // does not listen, so the server does not send it one per commit. The
      // leader listens before its first read, so nothing slips between.
      const unlisten = await this.shard.driver.listen(APPEND_CHANNEL, () => this.waker.wake()).catch(() => undefined);
      // This node's own commits wake it in process; they need not tell the server.
      this.shard.committer.setLocalOnly(APPEND_CHANNEL, true);
      try {
        await this.lead(this.lock);
      } catch (err) {
        if (!this.stopped) this.opts.logger.warn({ err, shard: this.shard.name }, 'sequencer: lost the shard, standing by');
      } finally {
        this.leader = false;
        // A successor elsewhere reads what is unnumbered when it starts, then hears this node's commits again.
        this.shard.committer.setLocalOnly(APPEND_CHANNEL, false);
        await unlisten?.().catch(() => {});
        await this.lock.release().catch(() => {});
        this.lock = null;
      }
    }
  }

  private async lead(lock: HeldLock): Promise<void> {
    const conn = lock.conn;
    let lost = false;
    void lock.lost.then(() => {
      lost = true;
      this.waker.wake();
    });
    const tipRows = await conn.all<{ pos: number; hash: Buffer }>('SELECT pos, hash FROM events WHERE pos IS NOT NULL ORDER BY pos DESC LIMIT 1');
    let tip = tipRows[0] ? { pos: tipRows[0].pos, hash: tipRows[0].hash } : { pos: 0, hash: GENESIS_HASH };
    const sl = this.log.shardLog(this.shard.name);
    sl.signal.advance(tip.pos);
    while (!this.stopped && !lost) {
      const rows = await conn.all<Unnumbered>(
        'SELECT id, stream, seq, type, data, meta, created_at FROM events WHERE pos IS NULL ORDER BY id LIMIT ?',
        [this.opts.batch],
      );
      if (rows.length === 0) {
        await this.waker.sleep(this.opts.pollMs);
        continue;
      }
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
      await conn.exec('BEGIN');
      try {
        await conn.run(
          `UPDATE events SET pos = v.pos, hash = v.hash
             FROM (SELECT unnest(?::bigint[]) AS id, unnest(?::bigint[]) AS pos, unnest(?::bytea[]) AS hash) AS v
            WHERE events.id = v.id AND events.pos IS NULL`,
          [ids, positions, hashes],
        );
        await conn.run(this.shard.driver.sql.notify!, [POS_CHANNEL, String(next.pos)]);
        await conn.exec('COMMIT');
      } catch (err) {
        await conn.exec('ROLLBACK').catch(() => {});
        throw err;
      }
      tip = next;
      this.numbered += rows.length;
      sl.tip = tip;
      sl.signal.advance(tip.pos);
      this.log.emit('sequenced', this.shard.name, tip.pos);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.waker.wake();
    await this.running;
    this.running = undefined;
  }
}
