import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { badRequest, MillraceError, toMillraceError } from '../core/errors.js';
import { decodeCursor, encodeCursor, pageLimit, type Page } from '../core/paging.js';
import type { Runtime } from '../runtime.js';
import { RetryTimer, type Timer, type TimerContext } from '../scheduler/scheduler.js';
import { timerPlaceIn, whileMoved } from '../storage/routed-timers.js';
import type { Shard } from '../storage/storage.js';
import type { Machines } from '../machines/machines.js';
import type { Pipe } from '../pipe/pipe.js';

export const STEP_KIND = 'bulk.step';
const owner = (id: string): string => `bulk:${id}`;
/** Errors kept on a job (the first ones). */
const ERRORS_KEPT = 100;
const iso = z
  .string()
  .refine((s) => /^\d{4}-\d{2}-\d{2}T/.test(s) && !Number.isNaN(Date.parse(s)), 'must be an RFC 3339 date-time');

export const machineBulkSchema = z
  .object({
    filter: z
      .object({
        status: z.enum(['working', 'failed']).optional(),
        /** Matches when the failure reason (as text) contains this. */
        reason_contains: z.string().min(1).max(500).optional(),
        /** Matches when the failure reason is this string, or an object whose `code` is this. */
        reason_code: z.string().min(1).max(200).optional(),
        tag: z.string().min(1).max(100).optional(),
        id_prefix: z.string().min(1).max(100).optional(),
        updated_before: iso.optional(),
        updated_after: iso.optional(),
      })
      .strict()
      .default({}),
    action: z
      .object({ op: z.enum(['repair', 'simple_repair', 'remove', 'notify']), args: z.unknown().optional() })
      .strict(),
    /** Machines acted on per second at most. */
    rate_per_s: z.number().int().min(1).max(10_000).default(50),
    dry_run: z.boolean().default(false),
  })
  .strict();

export const deadLetterBulkSchema = z
  .object({
    filter: z
      .object({
        kind: z.string().min(1).max(100).optional(),
        id_prefix: z.string().min(1).max(100).optional(),
        error_contains: z.string().min(1).max(500).optional(),
        died_before: iso.optional(),
        died_after: iso.optional(),
      })
      .strict()
      .default({}),
    action: z.object({ op: z.enum(['redrive', 'delete']) }).strict(),
    rate_per_s: z.number().int().min(1).max(10_000).default(50),
    dry_run: z.boolean().default(false),
  })
  .strict();

type MachineSpec = z.output<typeof machineBulkSchema> & { target: 'machines'; namespace: string };
type DeadSpec = z.output<typeof deadLetterBulkSchema> & { target: 'pipe_dead_letters' };
type Spec = MachineSpec | DeadSpec;

export type JobStatus = 'running' | 'done' | 'cancelled';

export interface BulkJobInfo {
  id: string;
  target: 'machines' | 'pipe_dead_letters';
  spec: Spec;
  status: JobStatus;
  /** Matches counted when the job was created. */
  total: number;
  /** Matches met so far (each acted on once). */
  matched: number;
  succeeded: number;
  failed: number;
  /** Share of `total` handled, 0..1 (1 once done). */
  progress: number;
  errors: Array<{ item: string; code: string; message: string }>;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

interface Row {
  id: string;
  target: string;
  spec: string;
  status: string;
  after: string;
  matched: number;
  succeeded: number;
  failed: number;
  errors: string;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
}

interface Candidate {
  item: string;
}

interface MachineRow {
  id: string;
  status: string;
  reason: string | null;
  tags: string;
  updated_at: number;
}

const COLS = 'id, target, spec, status, after, matched, succeeded, failed, errors, created_at, updated_at, finished_at';

/** Thrown inside a transaction to roll it back when this node's timer claim was lost. */
class ClaimLost extends Error {}

/** Thrown inside a transaction to roll it back when the timer's shard does not own the job now (a split cuts over). */
class NotHere extends Error {}

/**
 * Bulk jobs: an action over every machine (or pipe dead letter) that a
 * filter matches, run as a durable job on the scheduler. Each step takes up
 * to `rate_per_s` targets in id order after the job's position, records each
 * one as started before acting on it (so a job resumed after a crash never
 * acts on a target twice: one whose outcome was lost counts as failed with
 * `interrupted`), stores the outcomes and the position, and runs again a
 * second later.
 */
export class BulkJobs {
  /** Targets this node acted on, by outcome. */
  readonly stats = { succeeded: 0, failed: 0, interrupted: 0 };

  constructor(
    private readonly rt: Runtime,
    private readonly targets: { machines?: Machines | undefined; pipe?: Pipe | undefined },
  ) {}

  registerTimers(): void {
    this.rt.scheduler.register(STEP_KIND, (t, ctx) => this.onStep(t, ctx));
  }

  private home(id: string): Shard {
    return this.rt.storage.shardFor(['bulk', id]);
  }

  private machines(): Machines {
    if (this.targets.machines === undefined) throw badRequest('this node does not serve machines');
    return this.targets.machines;
  }

  private pipe(): Pipe {
    if (this.targets.pipe === undefined) throw badRequest('this node does not serve the pipe');
    return this.targets.pipe;
  }

  /** Starts a job over a namespace's machines, or (dry run) counts the matches and writes nothing. */
  async startMachines(ns: string, raw: unknown): Promise<{ dry_run: true; matched: number } | BulkJobInfo> {
    const r = machineBulkSchema.safeParse(raw ?? {});
    if (!r.success) throw invalid(r.error);
    this.machines().nsConfig(ns);
    return this.create({ ...r.data, target: 'machines', namespace: ns });
  }

  /** Starts a job over pipe dead letters, or (dry run) counts the matches and writes nothing. */
  async startDeadLetters(raw: unknown): Promise<{ dry_run: true; matched: number } | BulkJobInfo> {
    const r = deadLetterBulkSchema.safeParse(raw ?? {});
    if (!r.success) throw invalid(r.error);
    const pipe = this.pipe();
    const spec: DeadSpec = { ...r.data, target: 'pipe_dead_letters' };
    // An unknown kind is a typed error here, before anything is written.
    if (spec.filter.kind !== undefined) spec.filter.kind = pipe.resolveKind(spec.filter.kind);
    return this.create(spec);
  }

  private async create(spec: Spec): Promise<{ dry_run: true; matched: number } | BulkJobInfo> {
    let total = 0;
    let after = '';
    for (;;) {
      const page = await this.scan(spec, after, 1000);
      total += page.matches.length;
      if (page.next === null) break;
      after = page.next;
    }
    if (spec.dry_run) return { dry_run: true, matched: total };
    const id = randomUUID();
    const now = this.rt.clock.now();
    await this.home(id).write(async (tx) => {
      await tx.run(
        `INSERT INTO bulk_jobs (id, target, spec, status, matched, created_at, updated_at) VALUES (?, ?, ?, 'running', 0, ?, ?)`,
        [id, spec.target, JSON.stringify({ ...spec, total }), now, now],
      );
      await this.rt.scheduler.scheduleIn(tx, owner(id), STEP_KIND, now, { id });
    });
    return this.get(id);
  }

  async get(id: string): Promise<BulkJobInfo> {
    if (typeof id !== 'string' || id.length === 0 || id.length > 100)
      throw badRequest('job id must be 1-100 characters');
    const row = (await this.home(id).reader.all<Row>(`SELECT ${COLS} FROM bulk_jobs WHERE id = ?`, [id]))[0];
    if (row === undefined) throw notFound(id);
    return infoOf(row);
  }

  async list(opts: { limit?: number | undefined; cursor?: string | undefined } = {}): Promise<Page<BulkJobInfo>> {
    const limit = pageLimit(opts.limit);
    const before = decodeCursor(
      opts.cursor,
      (v): v is [number, string] => Array.isArray(v) && Number.isInteger(v[0]) && typeof v[1] === 'string',
    ) ?? [Number.MAX_SAFE_INTEGER, ''];
    const rows: Row[] = [];
    for (const shard of this.rt.storage.shards) {
      rows.push(
        ...(await shard.reader.all<Row>(
          `SELECT ${COLS} FROM bulk_jobs WHERE created_at < ? OR (created_at = ? AND id < ?) ORDER BY created_at DESC, id DESC LIMIT ?`,
          [before[0], before[0], before[1], limit + 1],
        )),
      );
    }
    rows.sort((a, b) => Number(b.created_at) - Number(a.created_at) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    const items = rows.slice(0, limit).map(infoOf);
    const last = rows[limit - 1];
    return {
      items,
      next_cursor: rows.length > limit && last ? encodeCursor([Number(last.created_at), last.id]) : null,
    };
  }

  /** Stops a running job: no target is acted on after this returns. */
  async cancel(id: string): Promise<BulkJobInfo> {
    await this.get(id);
    const shard = this.home(id);
    await shard.write(async (tx) => {
      const row = (await tx.all<Row>(`SELECT ${COLS} FROM bulk_jobs WHERE id = ?${lock(shard)}`, [id]))[0];
      if (row === undefined) throw notFound(id);
      if (row.status !== 'running')
        throw new MillraceError('bulk_job_finished', `bulk job ${id} is ${row.status}`, {
          details: { id, status: row.status },
        });
      const now = this.rt.clock.now();
      await tx.run(`UPDATE bulk_jobs SET status = 'cancelled', updated_at = ?, finished_at = ? WHERE id = ?`, [
        now,
        now,
        id,
      ]);
      await this.rt.scheduler.cancelIn(tx, owner(id));
    });
    return this.get(id);
  }

  /** One page of targets in id order after `after`: the matches, and where the next page starts (null at the end). */
  private async scan(spec: Spec, after: string, limit: number): Promise<{ matches: Candidate[]; next: string | null }> {
    if (spec.target === 'machines') {
      const f = spec.filter;
      const rows: Array<MachineRow & { owned: boolean }> = [];
      const sql = `SELECT id, status, reason, tags, updated_at FROM machines WHERE ns = ? AND status <> 'none' AND id > ?${f.status ? ' AND status = ?' : ''} ORDER BY id LIMIT ?`;
      for (const shard of this.rt.storage.shards) {
        const page = await shard.reader.all<MachineRow>(
          sql,
          f.status ? [spec.namespace, after, f.status, limit] : [spec.namespace, after, limit],
        );
        // A split's source keeps moved machines for a grace period: each is met once, where routing finds it.
        for (const r of page)
          rows.push({ ...r, owned: this.rt.storage.shardFor([spec.namespace, r.id]).name === shard.name });
      }
      // By id, the owned copy of an id first (the page ends after it, never between it and a stale copy's id).
      rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : Number(b.owned) - Number(a.owned)));
      const page = rows.slice(0, limit);
      return {
        matches: page.filter((r) => r.owned && machineMatches(f, r)).map((r) => ({ item: r.id })),
        next: rows.length > limit || (page.length === limit && page.length > 0) ? page[page.length - 1]!.id : null,
      };
    }
    const f = spec.filter;
    // The dead-letter list pages by at most 1000.
    limit = Math.min(limit, 1000);
    const dead = await this.pipe().listDead({ kind: f.kind, after, limit });
    const before = f.died_before === undefined ? Number.POSITIVE_INFINITY : Date.parse(f.died_before);
    const afterT = f.died_after === undefined ? Number.NEGATIVE_INFINITY : Date.parse(f.died_after);
    const matches = dead
      .filter(
        (d) =>
          (f.id_prefix === undefined || d.id.startsWith(f.id_prefix)) &&
          (f.error_contains === undefined || (d.lastError ?? '').includes(f.error_contains)) &&
          d.diedAt < before &&
          d.diedAt > afterT,
      )
      .map((d) => ({ item: d.id }));
    return { matches, next: dead.length === limit ? dead[dead.length - 1]!.id : null };
  }

  private async onStep(timer: Timer, ctx: TimerContext): Promise<void> {
    const id = (timer.payload as { id: string }).id;
    const shard = this.rt.storage.shard(timer.shard);
    const row = (await shard.reader.all<Row>(`SELECT ${COLS} FROM bulk_jobs WHERE id = ?`, [id]))[0];
    if (row === undefined || row.status !== 'running') {
      await shard.write((tx) => ctx.completeIn(tx));
      return;
    }
    const spec = JSON.parse(row.spec) as Spec;
    const page = await this.scan(spec, row.after, spec.rate_per_s);
    // Mark the page's targets started (those not met before) in one transaction: a target is acted on only by the step that marked it.
    const fresh: string[] = [];
    const interrupted: string[] = [];
    try {
      await shard.write(async (tx) => {
        // Only the shard that owns the job marks targets: a split's source copy of the timer is dropped unacted.
        const place = await timerPlaceIn(this.rt.storage, tx, timer.shard, ['bulk', id]);
        if (place === 'wait') throw new NotHere();
        if (place === 'leftover') {
          await ctx.completeIn(tx);
          throw new ClaimLost();
        }
        const cur = (
          await tx.all<{ status: string }>(`SELECT status FROM bulk_jobs WHERE id = ?${lock(shard)}`, [id])
        )[0];
        if (cur === undefined || cur.status !== 'running') throw new ClaimLost();
        for (const m of page.matches) {
          const seen = (
            await tx.all<{ status: string }>('SELECT status FROM bulk_job_items WHERE job = ? AND item = ?', [
              id,
              m.item,
            ])
          )[0];
          if (seen === undefined) {
            await tx.run(`INSERT INTO bulk_job_items (job, item, status) VALUES (?, ?, 'started')`, [id, m.item]);
            fresh.push(m.item);
          } else if (seen.status === 'started') {
            // Marked by a step whose node stopped before storing the outcome: not acted on again.
            await tx.run(`UPDATE bulk_job_items SET status = 'interrupted' WHERE job = ? AND item = ?`, [id, m.item]);
            interrupted.push(m.item);
          }
        }
      });
    } catch (err) {
      if (err instanceof ClaimLost) return;
      if (err instanceof NotHere) throw new RetryTimer(Math.min(1000, this.rt.config.scheduler.poll_ms));
      throw err;
    }
    const outcomes: Array<{ item: string; error?: { code: string; message: string } }> = [];
    for (const item of fresh) {
      try {
        // A machine whose range is cutting over refuses with nothing written: acted on again by the new routing.
        await whileMoved(this.rt.storage, () => this.act(spec, item));
        outcomes.push({ item });
      } catch (err) {
        const e = toMillraceError(err);
        outcomes.push({ item, error: { code: e.code, message: e.message } });
      }
    }
    const now = this.rt.clock.now();
    await shard
      .write(async (tx) => {
        // The job moved while this step acted (a split cut over): the target has these targets as started and
        // counts them interrupted; none is acted on again.
        if ((await timerPlaceIn(this.rt.storage, tx, timer.shard, ['bulk', id])) !== 'own') return;
        const cur = (await tx.all<Row>(`SELECT ${COLS} FROM bulk_jobs WHERE id = ?${lock(shard)}`, [id]))[0];
        if (cur === undefined) return;
        const errors = JSON.parse(cur.errors) as BulkJobInfo['errors'];
        let ok = 0;
        let bad = interrupted.length;
        for (const item of interrupted) {
          if (errors.length < ERRORS_KEPT)
            errors.push({
              item,
              code: 'interrupted',
              message: 'the node acting on it stopped before storing the outcome; not acted on again',
            });
        }
        for (const o of outcomes) {
          await tx.run('UPDATE bulk_job_items SET status = ? WHERE job = ? AND item = ?', [
            o.error ? 'failed' : 'done',
            id,
            o.item,
          ]);
          if (o.error) {
            bad++;
            if (errors.length < ERRORS_KEPT) errors.push({ item: o.item, ...o.error });
          } else ok++;
        }
        const matched = Number(cur.matched) + fresh.length + interrupted.length;
        tx.onCommit(() => {
          this.stats.succeeded += ok;
          this.stats.failed += bad - interrupted.length;
          this.stats.interrupted += interrupted.length;
        });
        if (cur.status !== 'running') {
          // Cancelled while this step ran: its outcomes still count.
          await tx.run(
            'UPDATE bulk_jobs SET matched = ?, succeeded = succeeded + ?, failed = failed + ?, errors = ?, updated_at = ? WHERE id = ?',
            [matched, ok, bad, JSON.stringify(errors), now, id],
          );
          await ctx.completeIn(tx);
          return;
        }
        const done = page.next === null;
        if (done) {
          if (!(await ctx.completeIn(tx))) throw new ClaimLost();
        } else if (!(await ctx.rescheduleIn(tx, STEP_KIND, now + 1000, { id }))) throw new ClaimLost();
        await tx.run(
          `UPDATE bulk_jobs SET after = ?, matched = ?, succeeded = succeeded + ?, failed = failed + ?, errors = ?, status = ?, updated_at = ?, finished_at = ? WHERE id = ?`,
          [
            page.next ?? cur.after,
            matched,
            ok,
            bad,
            JSON.stringify(errors),
            done ? 'done' : 'running',
            now,
            done ? now : null,
            id,
          ],
        );
      })
      .catch((err) => {
        if (!(err instanceof ClaimLost)) throw err;
      });
  }

  private async act(spec: Spec, item: string): Promise<void> {
    if (spec.target === 'machines') {
      const m = this.machines();
      const ns = spec.namespace;
      switch (spec.action.op) {
        case 'repair':
          await m.repair(ns, { id: item }, spec.action.args ?? null);
          return;
        case 'simple_repair':
          await m.simpleRepair(ns, { id: item });
          return;
        case 'remove':
          await m.remove(ns, { id: item });
          return;
        case 'notify':
          await m.notify(ns, { id: item }, spec.action.args ?? null);
          return;
      }
    }
    const p = this.pipe();
    if (spec.action.op === 'redrive') await p.redrive(item);
    else await p.deleteDead(item);
  }
}

function machineMatches(f: MachineSpec['filter'], r: MachineRow): boolean {
  if (f.id_prefix !== undefined && !r.id.startsWith(f.id_prefix)) return false;
  const updated = Number(r.updated_at);
  if (f.updated_before !== undefined && !(updated < Date.parse(f.updated_before))) return false;
  if (f.updated_after !== undefined && !(updated > Date.parse(f.updated_after))) return false;
  if (f.tag !== undefined && !(JSON.parse(r.tags) as string[]).includes(f.tag)) return false;
  if (f.reason_contains !== undefined || f.reason_code !== undefined) {
    if (r.status !== 'failed') return false;
    let reason: unknown = r.reason;
    try {
      reason = r.reason === null ? null : JSON.parse(r.reason);
    } catch {
      // stored as plain text
    }
    const text = typeof reason === 'string' ? reason : JSON.stringify(reason ?? null);
    if (f.reason_contains !== undefined && !text.includes(f.reason_contains)) return false;
    if (f.reason_code !== undefined) {
      const code =
        typeof reason === 'string'
          ? reason
          : reason !== null && typeof reason === 'object'
            ? (reason as { code?: unknown }).code
            : undefined;
      if (code !== f.reason_code) return false;
    }
  }
  return true;
}

function lock(shard: Shard): string {
  return shard.driver.capabilities.multiNode ? ' FOR UPDATE' : '';
}

function invalid(error: z.ZodError): MillraceError {
  const issue = error.issues[0]!;
  return badRequest(`bulk job: ${issue.path.join('.') || '(root)'}: ${issue.message}`, {
    problems: error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
  });
}

function notFound(id: string): MillraceError {
  return new MillraceError('bulk_job_not_found', `no bulk job ${id}`, { details: { id } });
}

function infoOf(r: Row): BulkJobInfo {
  const spec = JSON.parse(r.spec) as Spec & { total: number };
  const total = Number(spec.total);
  const status = r.status as JobStatus;
  const matched = Number(r.matched);
  return {
    id: r.id,
    target: r.target as BulkJobInfo['target'],
    spec,
    status,
    total,
    matched,
    succeeded: Number(r.succeeded),
    failed: Number(r.failed),
    progress: status === 'done' ? 1 : total === 0 ? 0 : Math.min(1, matched / total),
    errors: JSON.parse(r.errors) as BulkJobInfo['errors'],
    created_at: new Date(Number(r.created_at)).toISOString(),
    updated_at: new Date(Number(r.updated_at)).toISOString(),
    finished_at: r.finished_at === null ? null : new Date(Number(r.finished_at)).toISOString(),
  };
}
