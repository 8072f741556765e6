import { createHash } from 'node:crypto';
import { Cron } from 'croner';
import { z } from 'zod';

/** Schedule names: 1-150 letters, digits, ".", "_" or "-". */
export const SCHEDULE_NAME = /^[A-Za-z0-9._-]{1,150}$/;

const iso = z
  .string()
  .refine((s) => !Number.isNaN(Date.parse(s)) && /^\d{4}-\d{2}-\d{2}T/.test(s), 'must be an RFC 3339 date-time');

const machineAction = z
  .object({
    machine: z
      .object({
        namespace: z.string().min(1).max(100),
        /** The machine id; may hold `{{fire_time}}`, `{{fire_time_ms}}` or `{{schedule}}`. */
        id: z.string().min(1).max(500),
        op: z.enum(['start', 'call', 'notify']),
        /** Args template: every string in it has its placeholders filled in. */
        args: z.unknown().optional(),
      })
      .strict(),
  })
  .strict();

const publishAction = z
  .object({
    publish: z
      .object({
        topic: z.string().min(1).max(200),
        key: z.string().min(1).max(500).optional(),
        type: z.string().min(1).max(200),
        headers: z.record(z.string(), z.string()).optional(),
        data: z.unknown().optional(),
      })
      .strict(),
  })
  .strict();

function validZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

export const scheduleSchema = z
  .object({
    spec: z
      .object({
        /** Five fields, or six with seconds first (croner syntax). */
        cron: z.string().min(1).max(200).optional(),
        /** IANA time zone of the cron fields (default UTC). */
        timezone: z.string().min(1).max(100).optional(),
        /** Fixed interval, anchored at `start_at` (or the Unix epoch). */
        every_ms: z
          .number()
          .int()
          .min(1000)
          .max(366 * 86_400_000)
          .optional(),
        /** Each fire runs up to this much later than its nominal time (the same delay on every node). */
        jitter_ms: z.number().int().min(0).max(86_400_000).default(0),
        start_at: iso.optional(),
        end_at: iso.optional(),
      })
      .strict()
      .superRefine((s, ctx) => {
        if ((s.cron === undefined) === (s.every_ms === undefined))
          ctx.addIssue({ code: 'custom', message: 'give exactly one of cron and every_ms' });
        if (s.timezone !== undefined && s.cron === undefined)
          ctx.addIssue({ code: 'custom', path: ['timezone'], message: 'timezone applies to cron only' });
        if (s.timezone !== undefined && !validZone(s.timezone))
          ctx.addIssue({ code: 'custom', path: ['timezone'], message: `unknown time zone "${s.timezone}"` });
        if (s.cron !== undefined) {
          try {
            new Cron(s.cron, { paused: true, timezone: s.timezone ?? 'UTC' });
          } catch (err) {
            ctx.addIssue({ code: 'custom', path: ['cron'], message: (err as Error).message });
          }
        }
        if (s.start_at !== undefined && s.end_at !== undefined && Date.parse(s.end_at) <= Date.parse(s.start_at)) {
          ctx.addIssue({ code: 'custom', path: ['end_at'], message: 'end_at must be after start_at' });
        }
      }),
    action: z.union([machineAction, publishAction]),
    /** While an earlier fire's action still runs: skip this fire, keep one buffered, or run it anyway. */
    overlap: z.enum(['skip', 'buffer_one', 'allow']).default('skip'),
    /** After downtime, fires at most this late (past their due time, jitter included) still run; later ones are counted as missed. At least a second. */
    catchup_window_ms: z
      .number()
      .int()
      .min(1000)
      .max(366 * 86_400_000)
      .default(60_000),
    /** Initial state only: a replaced definition keeps the schedule's paused state unless it says. */
    paused: z.boolean().optional(),
  })
  .strict();

export type ScheduleDef = z.output<typeof scheduleSchema>;

/** `schedules:` in the config file: definitions by name. */
export const schedulesConfigSchema = z
  .record(z.string().regex(SCHEDULE_NAME, 'schedule names are 1-150 letters, digits, ".", "_" or "-"'), scheduleSchema)
  .default({});

const crons = new Map<string, Cron>();
function cronOf(pattern: string, tz: string): Cron {
  const k = `${tz}\u0000${pattern}`;
  let c = crons.get(k);
  if (c === undefined) {
    c = new Cron(pattern, { paused: true, timezone: tz });
    if (crons.size > 1000) crons.clear();
    crons.set(k, c);
  }
  return c;
}

/** The first nominal fire time strictly after `after` (ms), or null when the schedule has ended. */
export function nextFire(def: ScheduleDef, after: number): number | null {
  const s = def.spec;
  const start = s.start_at === undefined ? undefined : Date.parse(s.start_at);
  const end = s.end_at === undefined ? Number.POSITIVE_INFINITY : Date.parse(s.end_at);
  let from = after;
  if (start !== undefined && from < start - 1) from = start - 1;
  let next: number | null;
  if (s.every_ms !== undefined) {
    const anchor = start ?? 0;
    next = anchor + (Math.floor((from - anchor) / s.every_ms) + 1) * s.every_ms;
  } else {
    const d = cronOf(s.cron!, s.timezone ?? 'UTC').nextRun(new Date(from));
    next = d === null ? null : d.getTime();
  }
  return next === null || next > end ? null : next;
}

/** Up to `count` nominal fire times strictly after `after`. */
export function nextFires(def: ScheduleDef, after: number, count: number): number[] {
  const out: number[] = [];
  let t = after;
  while (out.length < count) {
    const n = nextFire(def, t);
    if (n === null) break;
    out.push(n);
    t = n;
  }
  return out;
}

/** The delay added to a fire: derived from the name and the fire time, so every node and every retry agree. */
export function jitterOf(def: ScheduleDef, name: string, fireAt: number): number {
  const j = def.spec.jitter_ms;
  if (j === 0) return 0;
  const h = createHash('sha1').update(`${name}\u0000${fireAt}`).digest();
  return h.readUInt32BE(0) % (j + 1);
}

/** Fills `{{fire_time}}` (RFC 3339), `{{fire_time_ms}}` and `{{schedule}}` into every string of a template; a string that is only `{{fire_time_ms}}` becomes a number. */
export function render(template: unknown, name: string, fireAt: number): unknown {
  if (typeof template === 'string') {
    if (template === '{{fire_time_ms}}') return fireAt;
    return template
      .replaceAll('{{fire_time}}', new Date(fireAt).toISOString())
      .replaceAll('{{fire_time_ms}}', String(fireAt))
      .replaceAll('{{schedule}}', name);
  }
  if (Array.isArray(template)) return template.map((v) => render(v, name, fireAt));
  if (template !== null && typeof template === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(template)) out[k] = render(v, name, fireAt);
    return out;
  }
  return template;
}
