import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { sleep } from '../core/clock.js';
import { MillraceError } from '../core/errors.js';
import { parseHashBound, sha1, shardKeyText } from '../core/routing.js';
import type { Log } from '../log/log.js';
import type { Tx } from './port.js';
import {
  encodeRanges,
  hexOf,
  normalize,
  readState,
  ROUTING_CHANNEL,
  withoutRange,
  type OwnedRange,
} from './routing-state.js';
import type { SplitMover } from './split-mover.js';
import type { Shard, Storage } from './storage.js';

/**
 * Splitting a shard online: the keys whose SHA-1 falls in [from, to) move
 * from `source` to a spare `target`. A durable job row on the source walks
 * the phases, each step idempotent, so a job cut off by a crash resumes
 * where it stood when any node starts (or `resume` is called):
 *
 * - `copy`: events of moved streams are copied into the target, in source
 *   order, in batches that record their progress in the target's
 *   `shard_imports` row in the same transaction (resumes exactly there);
 *   repeated until what is left is small (catch-up of writes made meanwhile).
 * - `fenced`: the source marks the range fenced under an exclusive lock of
 *   its routing row; from then on its writers refuse keys of the range
 *   (`shard_moved`, retryable). The last events and the movers' rows
 *   (every face's keyed rows: see each face's `SplitMover`) are copied.
 * - `switched`: the target owns the range (epoch bumped, nodes notified).
 * - `cleanup`: the source drops the range; the moved rows are deleted there.
 * - `done`.
 *
 * The moved events stay in the source's log (its chain stays whole); the
 * target's chain starts with an anchor event naming the source and position.
 */

export type { SplitMover } from './split-mover.js';

export type SplitPhase = 'copy' | 'fenced' | 'switched' | 'cleanup' | 'done' | 'aborted';

export interface SplitJob {
  id: string;
  source: string;
  target: string;
  from: string;
  to: string;
  phase: SplitPhase;
  start_pos: number;
  /** Source position up to which events were looked at (copied where moved). */
  copied_pos: number;
  copied_events: number;
  /** The source's head now (progress: copied_pos of it). */
  head: number;
  rows_moved: number;
  /** Why the split ended without moving anything (phase `aborted`). */
  aborted?: string;
  started_at: number;
  updated_at: number;
}

interface JobRow {
  id: string;
  target: string;
  range_from: string;
  range_to: string;
  phase: SplitPhase;
  start_pos: number;
  fence_pos: number | null;
  detail: string | null;
  started_at: number;
  updated_at: number;
}

const BATCH = 500;
/** Tables of keyed entities that no mover moves yet (schedules, bulk jobs): a source holding any row of them is refused. */
const UNMOVED_TABLES = ['schedules', 'bulk_jobs'];
/** Copy rounds stop for the fence once one round found fewer moved events than this. */
const CATCH_UP_LEFT = 200;

export interface SplitOptions {
  logger: Logger;
  now: () => number;
  /**
   * How long the source keeps the moved rows after the range left it, so
   * that nodes still routing by the old table (they re-read it at least
   * this often) read them rather than nothing; their writes are refused.
   */
  graceMs: number;
  /** What each face moves with its keys (every face of the build, served here or not: no face's rows may stay behind). */
  movers: readonly SplitMover[];
}

export class Splitter {
  private readonly running = new Map<string, Promise<void>>();
  private closed = false;
  private watchTimer: NodeJS.Timeout | undefined;
  /** Ends waits for a job's lock when the node closes. */
  private readonly abort = new AbortController();
  /** Called as each step is about to run (a crash test kills the process there). */
  onStep: ((step: string) => void) | undefined;

  constructor(
    private readonly storage: Storage,
    private readonly log: Log,
    private readonly opts: SplitOptions,
  ) {}

  /** The movers whose tables exist on `shard` (their face's migrations were applied there). */
  private async moversOn(shard: Shard): Promise<SplitMover[]> {
    const applied = await shard.driver.appliedMigrations();
    return this.opts.movers.filter(
      (m) => m.migrationPrefix === undefined || applied.some((id) => id.startsWith(m.migrationPrefix!)),
    );
  }

  /**
   * Starts moving [at, end of the source's range) of `source` to the spare
   * `target`; resolves once the job is recorded (it runs in the background).
   */
  async start(sourceName: string, at: string, targetName: string): Promise<SplitJob> {
    const source = this.named(sourceName, 'source');
    const target = this.resolveTarget(targetName);
    if (target.name === source.name)
      throw invalid('the target must be another shard than the source', { target: targetName });
    if (!/^[0-9a-fA-F]{1,40}$/.test(at))
      throw invalid('--at is a hex prefix of a SHA-1 hash (1 to 40 hex digits)', { at });
    const from = parseHashBound(at);
    const srcState = await readState(source.reader);
    const tgtState = await readState(target.reader);
    if (srcState === undefined || tgtState === undefined)
      throw invalid('the shards have no routing state yet (start a node on them first)', {});
    const owned = srcState.ranges.find((r) => !r.fenced && from > r.from && from < r.to);
    if (owned === undefined)
      throw invalid(`hash ${at} is not strictly inside a range that shard ${source.name} owns`, {
        at,
        shard: source.name,
      });
    if (tgtState.ranges.length > 0)
      throw invalid(`shard ${target.name} owns ranges already: a split goes to an empty spare shard`, {
        target: target.name,
      });
    for (const s of this.storage.shards) {
      const busy = await s.reader.all<{ id: string }>(
        "SELECT id FROM shard_splits WHERE phase NOT IN ('done', 'aborted')",
      );
      if (busy.length > 0)
        throw new MillraceError('split_in_progress', `split ${busy[0]!.id} of shard ${s.name} is under way`, {
          details: { id: busy[0]!.id },
        });
    }
    await this.checkMovable(source);
    const targetEvents = await target.reader.all<{ n: number }>(
      "SELECT count(*) AS n FROM events WHERE stream NOT LIKE '$split/%'",
    );
    if (Number(targetEvents[0]!.n) > 0)
      throw invalid(`shard ${target.name} holds events: a split goes to an empty spare shard`, { target: target.name });
    const id = randomUUID();
    const head = await this.log.headPos(source.name);
    const now = this.opts.now();
    await source.write((tx) =>
      tx.run(
        'INSERT INTO shard_splits (id, target, range_from, range_to, phase, start_pos, fence_pos, detail, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?)',
        [id, target.name, hexOf(from), hexOf(owned.to), 'copy', head, now, now],
      ),
    );
    this.launch(source, id);
    return (await this.job(source.name, id))!;
  }

  /** Resumes every unfinished job of every shard (at node start). */
  async resumeAll(): Promise<void> {
    for (const s of this.storage.shards) {
      const rows = await s.reader.all<{ id: string }>(
        "SELECT id FROM shard_splits WHERE phase NOT IN ('done', 'aborted')",
      );
      for (const r of rows) this.launch(s, r.id);
    }
  }

  /**
   * Where nodes share the shards: looks for unfinished jobs every
   * `intervalMs`, so that a live node stands by for each (waiting on its
   * lock) and takes a job over at once if the node running it dies.
   */
  watch(intervalMs: number): void {
    this.watchTimer = setInterval(() => {
      this.resumeAll().catch((err: unknown) => this.opts.logger.warn({ err }, 'could not look for unfinished splits'));
    }, intervalMs);
    this.watchTimer.unref();
  }

  /** Resolves once the job ends here (or at once if it does not run on this node). */
  async wait(id: string): Promise<void> {
    await this.running.get(id);
  }

  async jobs(): Promise<SplitJob[]> {
    const out: SplitJob[] = [];
    for (const s of this.storage.shards) {
      const rows = await s.reader.all<{ id: string }>('SELECT id FROM shard_splits ORDER BY started_at');
      for (const r of rows) {
        const j = await this.job(s.name, r.id);
        if (j !== undefined) out.push(j);
      }
    }
    return out;
  }

  async job(sourceName: string, id: string): Promise<SplitJob | undefined> {
    const source = this.storage.shard(sourceName);
    const rows = await source.reader.all<JobRow>('SELECT * FROM shard_splits WHERE id = ?', [id]);
    const r = rows[0];
    if (r === undefined) return undefined;
    const target = this.storage.shard(r.target);
    const imp = await target.reader.all<{ copied_pos: number; copied_events: number }>(
      'SELECT copied_pos, copied_events FROM shard_imports WHERE id = ?',
      [id],
    );
    const detail = r.detail === null ? {} : (JSON.parse(r.detail) as { rows_moved?: number; aborted?: string });
    return {
      id,
      source: sourceName,
      target: r.target,
      from: r.range_from,
      to: r.range_to,
      phase: r.phase,
      start_pos: Number(r.start_pos),
      copied_pos: Number(imp[0]?.copied_pos ?? r.start_pos),
      copied_events: Number(imp[0]?.copied_events ?? 0),
      head: await this.log.headPos(sourceName),
      rows_moved: detail.rows_moved ?? 0,
      ...(detail.aborted === undefined ? {} : { aborted: detail.aborted }),
      started_at: Number(r.started_at),
      updated_at: Number(r.updated_at),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.watchTimer !== undefined) clearInterval(this.watchTimer);
    this.abort.abort();
    await Promise.allSettled([...this.running.values()]);
  }

  private launch(source: Shard, id: string): void {
    if (this.running.has(id)) return;
    const run = this.runLocked(source, id)
      .then(
        () => false,
        (err: unknown) => {
          // Stopped by close(): the job row stays where it was and the next start resumes it; nothing to report.
          if (this.closed) return false;
          this.opts.logger.error({ err, split: id }, 'split step failed; retrying in a second');
          return true;
        },
      )
      .then((again) => {
        this.running.delete(id);
        if (again && !this.closed) setTimeout(() => this.launch(source, id), 1000).unref();
      });
    this.running.set(id, run);
  }

  /** One node runs a job at a time (a lock on the source, freed if the node dies). */
  private async runLocked(source: Shard, id: string): Promise<void> {
    const held = await source.driver.lock(`millrace:split:${id}`, this.abort.signal);
    try {
      await this.run(source, id);
    } finally {
      await held.release();
    }
  }

  private step(name: string): void {
    if (this.closed)
      throw new MillraceError('shutting_down', 'the node is closing; the split resumes at the next start');
    this.onStep?.(name);
  }

  private async run(source: Shard, id: string): Promise<void> {
    for (;;) {
      const rows = await source.reader.all<JobRow>('SELECT * FROM shard_splits WHERE id = ?', [id]);
      const job = rows[0];
      if (job === undefined || job.phase === 'done' || job.phase === 'aborted') return;
      const target = this.storage.shard(job.target);
      const from = BigInt(`0x${job.range_from}`);
      const to = BigInt(`0x${job.range_to}`);
      const inRange = (key: readonly string[] | string): boolean => {
        const h = sha1(shardKeyText(key));
        return h >= from && h < to;
      };
      const ctx = { id, source: source.name, target: target.name };
      this.opts.logger.info({ split: id, phase: job.phase, source: source.name, target: target.name }, 'split step');
      switch (job.phase) {
        case 'copy': {
          // Copy rounds until little is left; the fence then holds writers only for that little.
          for (let round = 0; ; round++) {
            this.step('copy');
            const moved = await this.copyEvents(source, target, job, inRange);
            if (moved < CATCH_UP_LEFT || round >= 20) break;
          }
          this.step('fence');
          await this.fence(source, id, from, to);
          break;
        }
        case 'fenced': {
          this.step('final-copy');
          await this.waitNumbered(source, job.fence_pos);
          while ((await this.copyEvents(source, target, job, inRange)) > 0) this.step('final-copy');
          // Under the fence: a stream no face moves (e.g. a ledger account key too long to route by
          // its stream name) may have been written since the split began. Moving the range now would
          // strand it, so the range stays here.
          const unmovable = await this.checkMovable(source).then(
            () => undefined,
            (err: unknown) => (err instanceof Error ? err.message : String(err)),
          );
          if (unmovable !== undefined) {
            await target.write(async (tx) => {
              for (const m of await this.moversOn(source)) await m.onAbort?.(tx, ctx, target.driver.dialect);
            });
            await this.abortFenced(source, id, from, to, unmovable);
            return;
          }
          this.step('rows');
          let rowsMoved = 0;
          await target.write(async (tx) => {
            rowsMoved = 0;
            for (const m of await this.moversOn(source))
              rowsMoved += await m.copyRows(source.reader, tx, inRange, target.driver.dialect, ctx);
          });
          this.step('switch');
          // Where rows are numbered later (PostgreSQL): every import is numbered before the target owns the range.
          await this.waitNumbered(target, Number.MAX_SAFE_INTEGER);
          await target.write(async (tx) => {
            for (const m of await this.moversOn(source)) await m.onSwitch?.(tx, ctx, target.driver.dialect);
            const st = await readState(tx);
            const ranges = st?.ranges ?? [];
            if (!ranges.some((r) => r.from === from && r.to === to)) {
              await this.setRanges(tx, normalize([...ranges, { from, to, fenced: false }]));
            }
          });
          await this.setPhase(source, id, 'switched', { rows_moved: rowsMoved });
          await this.storage.refreshRouting();
          break;
        }
        case 'switched': {
          this.step('release');
          await source.write(async (tx) => {
            const st = await readState(tx);
            await this.setRanges(tx, withoutRange(st?.ranges ?? [], from, to));
            await this.phaseIn(tx, id, 'cleanup');
          });
          await this.storage.refreshRouting();
          break;
        }
        case 'cleanup': {
          await sleep(Math.max(0, Number(job.updated_at) + this.opts.graceMs - this.opts.now()));
          this.step('cleanup');
          await source.write(async (tx) => {
            for (const m of await this.moversOn(source)) await m.dropRows(tx, inRange);
            await this.phaseIn(tx, id, 'done');
          });
          this.opts.logger.info({ split: id, source: source.name, target: target.name }, 'split done');
          return;
        }
      }
    }
  }

  /**
   * Copies the next events of moved streams after the import's recorded
   * position, batch by batch, up to the source's head as of now; returns
   * how many were copied.
   */
  private async copyEvents(
    source: Shard,
    target: Shard,
    job: JobRow,
    inRange: (key: readonly string[] | string) => boolean,
  ): Promise<number> {
    const head = await this.log.headPos(source.name);
    let copied = 0;
    for (;;) {
      const imp = await target.reader.all<{ copied_pos: number }>('SELECT copied_pos FROM shard_imports WHERE id = ?', [
        job.id,
      ]);
      const after = imp[0] === undefined ? 0 : Number(imp[0].copied_pos);
      if (after >= head) return copied;
      const rows = await source.reader.all<{
        pos: number;
        stream: string;
        seq: number;
        type: string;
        data: string;
        meta: string | null;
        created_at: number;
      }>(
        'SELECT pos, stream, seq, type, data, meta, created_at FROM events WHERE pos > ? AND pos <= ? ORDER BY pos LIMIT ?',
        [after, head, BATCH],
      );
      if (rows.length === 0) return copied;
      const moved = rows.filter((r) => {
        for (const m of this.opts.movers) {
          const key = m.keyOfStream(r.stream);
          if (key !== undefined) return inRange(key);
        }
        return false;
      });
      const last = Number(rows[rows.length - 1]!.pos);
      await target.write(async (tx) => {
        const cur = await tx.all<{ copied_pos: number }>('SELECT copied_pos FROM shard_imports WHERE id = ?', [job.id]);
        // Another attempt got here first (it committed this batch): nothing to do.
        if (cur[0] !== undefined && Number(cur[0].copied_pos) !== after) return;
        if (cur[0] === undefined) {
          await this.log.appendIn(tx, target, `$split/${job.id}`, [
            {
              type: 'split_anchor',
              data: { source: source.name, source_pos: Number(job.start_pos), from: job.range_from, to: job.range_to },
            },
          ]);
          await tx.run(
            'INSERT INTO shard_imports (id, source, copied_pos, copied_events, updated_at) VALUES (?, ?, 0, 0, ?)',
            [job.id, source.name, this.opts.now()],
          );
        }
        await this.log.importIn(
          tx,
          target,
          moved.map((r) => ({
            stream: r.stream,
            seq: Number(r.seq),
            type: r.type,
            data: r.data,
            meta: r.meta,
            created_at: Number(r.created_at),
          })),
        );
        for (const r of moved)
          await tx.run('INSERT INTO shard_import_map (id, source_pos, stream, seq) VALUES (?, ?, ?, ?)', [
            job.id,
            r.pos,
            r.stream,
            r.seq,
          ]);
        await tx.run(
          'UPDATE shard_imports SET copied_pos = ?, copied_events = copied_events + ?, updated_at = ? WHERE id = ?',
          [last, moved.length, this.opts.now(), job.id],
        );
      });
      copied += moved.length;
      this.step('copied');
    }
  }

  /**
   * The write fence: under an exclusive lock of the source's routing row
   * (writers read it in their transactions, so the fence waits for those in
   * flight, and later ones wait for it), the range is marked fenced and the
   * epoch bumped; its writers are refused from then on.
   */
  private async fence(source: Shard, id: string, from: bigint, to: bigint): Promise<void> {
    await source.write(async (tx) => {
      if (source.driver.capabilities.multiNode) await tx.run('LOCK TABLE shard_state IN ACCESS EXCLUSIVE MODE');
      const st = await readState(tx);
      const ranges = st?.ranges ?? [];
      const inside = ranges.filter((r) => r.from <= from && r.to >= to && !r.fenced);
      const kept = withoutRange(ranges, from, to);
      if (inside.length > 0) await this.setRanges(tx, normalize([...kept, { from, to, fenced: true }]));
      // Where rows are numbered later (PostgreSQL), the final copy waits until every row inserted so far is.
      const top = source.driver.capabilities.sequencesOnInsert
        ? await tx.all<{ m: number | null }>('SELECT max(pos) AS m FROM events')
        : await tx.all<{ m: number | null }>('SELECT max(id) AS m FROM events');
      await tx.run("UPDATE shard_splits SET phase = 'fenced', fence_pos = ?, updated_at = ? WHERE id = ?", [
        Number(top[0]?.m ?? 0),
        this.opts.now(),
        id,
      ]);
    });
    await this.storage.refreshRouting();
  }

  /** PostgreSQL: waits until the rows inserted before the fence (ids up to `fenceId`) have positions. */
  private async waitNumbered(source: Shard, fenceId: number | null): Promise<void> {
    if (source.driver.capabilities.sequencesOnInsert || fenceId === null) return;
    for (;;) {
      const r = await source.reader.all<{ n: number }>(
        'SELECT count(*) AS n FROM events WHERE id <= ? AND pos IS NULL',
        [fenceId],
      );
      if (Number(r[0]!.n) === 0) return;
      this.step('final-copy');
      await sleep(20);
    }
  }

  /**
   * Ends a fenced split without moving anything: the source owns the range
   * again, unfenced, and the job is `aborted` with the reason. The events
   * copied to the target stay there, outside any range it owns (routing never
   * reads them); the spare must be emptied before it is a split's target again.
   */
  private async abortFenced(source: Shard, id: string, from: bigint, to: bigint, reason: string): Promise<void> {
    await source.write(async (tx) => {
      const st = await readState(tx);
      await this.setRanges(tx, normalize([...withoutRange(st?.ranges ?? [], from, to), { from, to, fenced: false }]));
      await tx.run("UPDATE shard_splits SET phase = 'aborted', detail = ?, updated_at = ? WHERE id = ?", [
        JSON.stringify({ aborted: reason }),
        this.opts.now(),
        id,
      ]);
    });
    await this.storage.refreshRouting();
    this.opts.logger.warn(
      { split: id, source: source.name, reason },
      'split aborted: the source holds what cannot move yet; the range stays on the source',
    );
  }

  private async setRanges(tx: Tx, ranges: OwnedRange[]): Promise<void> {
    await tx.run('UPDATE shard_state SET ranges = ?, epoch = epoch + 1, updated_at = ? WHERE id = 1', [
      encodeRanges(ranges),
      this.opts.now(),
    ]);
    tx.notify(ROUTING_CHANNEL);
  }

  private async setPhase(
    source: Shard,
    id: string,
    phase: SplitPhase,
    detail?: Record<string, unknown>,
  ): Promise<void> {
    await source.write((tx) => this.phaseIn(tx, id, phase, detail));
  }

  private async phaseIn(tx: Tx, id: string, phase: SplitPhase, detail?: Record<string, unknown>): Promise<void> {
    if (detail === undefined)
      await tx.run('UPDATE shard_splits SET phase = ?, updated_at = ? WHERE id = ?', [phase, this.opts.now(), id]);
    else
      await tx.run('UPDATE shard_splits SET phase = ?, detail = ?, updated_at = ? WHERE id = ?', [
        phase,
        JSON.stringify(detail),
        this.opts.now(),
        id,
      ]);
  }

  /**
   * Refuses a source holding rows no mover moves yet (schedules, bulk jobs)
   * or log streams no mover claims: moving only part of a key range's entities would
   * strand the rest on the source, unreachable by routing.
   */
  private async checkMovable(source: Shard): Promise<void> {
    for (const table of UNMOVED_TABLES) {
      const exists =
        source.driver.dialect === 'sqlite'
          ? await source.reader.all("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", [table])
          : await source.reader.all('SELECT to_regclass(?) AS t WHERE to_regclass(?) IS NOT NULL', [table, table]);
      if (exists.length === 0) continue;
      const rows = await source.reader.all(`SELECT 1 AS x FROM ${table} LIMIT 1`);
      if (rows.length > 0) {
        throw invalid(
          `shard ${source.name} holds rows of ${table}, which a split does not move yet; nothing was written`,
          { shard: source.name, table },
        );
      }
    }
    let after = '';
    for (;;) {
      const streams = await source.reader.all<{ stream: string }>(
        "SELECT DISTINCT stream FROM events WHERE stream > ? AND stream NOT LIKE '$split/%' ORDER BY stream LIMIT 1000",
        [after],
      );
      if (streams.length === 0) return;
      for (const { stream } of streams) {
        if (!this.opts.movers.some((m) => m.keyOfStream(stream) !== undefined)) {
          throw invalid(
            `shard ${source.name} holds the stream "${stream}", which no face moves in a split yet; nothing was written`,
            { shard: source.name, stream },
          );
        }
      }
      after = streams[streams.length - 1]!.stream;
    }
  }

  private named(name: string, role: string): Shard {
    try {
      return this.storage.shard(name);
    } catch {
      throw invalid(`no shard named "${name}" is configured (the ${role})`, { [role]: name });
    }
  }

  /** The target by name, or by the location (URL or file) of a configured spare. */
  private resolveTarget(nameOrLocation: string): Shard {
    const byLoc = this.storage.shards.find((s) => s.location === nameOrLocation || s.name === nameOrLocation);
    if (byLoc === undefined) {
      throw invalid(
        `"${nameOrLocation}" is no configured shard: add it to storage.shards with spare: true on every node first`,
        { target: nameOrLocation },
      );
    }
    return byLoc;
  }
}

function invalid(message: string, details: Record<string, unknown>): MillraceError {
  return new MillraceError('split_invalid', message, { details });
}
