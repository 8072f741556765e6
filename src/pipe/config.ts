import { z } from 'zod';

export const KIND_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Seconds, fractional allowed (tests use milliseconds). */
const seconds = z
  .number()
  .min(0)
  .max(365 * 24 * 3600);

/** One kind's definition: the same schema for `pipe.kinds.<k>` in YAML and `PUT /v1/pipe/kinds/{k}`. */
export const kindSchema = z
  .object({
    /** Small integer a client may use instead of the name (seed 003: `New(clientKind uint32)`). */
    code: z.number().int().min(0).max(4_294_967_295).optional(),
    /** URL that unfinished sessions are POSTed to. Without one, sessions stay stored until one is configured. */
    handler: z.url({ protocol: /^https?$/ }).optional(),
    /** Delay before a session whose owner went away comes back. */
    default_delay_s: seconds.default(10),
    /** Pushes of one session before it goes to the dead letters. */
    max_repeats: z.number().int().min(1).max(1_000_000).default(20),
    /** Pushes of this kind in flight at once on one node. */
    concurrency: z.number().int().min(1).max(10_000).default(32),
    /** First backoff after a failed push; doubles per repeat up to `retry_max_s`. */
    retry_base_s: seconds.default(1),
    retry_max_s: seconds.default(300),
    /** How long the handler's HTTP call may take. */
    push_timeout_s: seconds.min(0.001).default(10),
  })
  .strict();

/** Configuration of the pipe face (the `pipe:` section of millrace.yaml). */
export const pipeConfigSchema = z
  .object({
    /**
     * Kinds of session by name (a name may itself be a small integer, e.g.
     * `"7"`). A kind not listed here is refused with `kind_not_found`.
     */
    kinds: z
      .record(z.string().regex(KIND_NAME, 'a kind name of letters, digits, "_", "." or "-"'), kindSchema)
      .default({}),
    /** Lease of a session written over plain HTTP (and of a pushed session): extended by every write. */
    session_ttl_s: seconds.min(0.01).default(30),
    /** Upper bound of the random jitter added to `store(timeout)`; the jitter is at most 10% of the timeout. */
    store_jitter_s: seconds.default(1),
    /** Dead sessions (past max_repeats) untouched for this long are removed with their records by the pruning job; unset: kept until deleted. */
    dead_max_age_s: seconds.min(0.001).optional(),
    /** Largest record, in bytes. */
    max_record_bytes: z
      .number()
      .int()
      .min(1)
      .max(64 * 1024 * 1024)
      .default(1024 * 1024),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Map<string, string>();
    for (const [name, k] of Object.entries(c.kinds)) {
      const names = [name, ...(k.code === undefined ? [] : [String(k.code)])];
      for (const n of names) {
        const other = seen.get(n);
        if (other !== undefined && other !== name)
          ctx.addIssue({
            code: 'custom',
            path: ['kinds', name],
            message: `kind "${n}" is also the name or code of kind "${other}"`,
          });
        seen.set(n, name);
      }
    }
  })
  .prefault({});

export type PipeConfig = z.output<typeof pipeConfigSchema>;
export type PipeKindConfig = z.output<typeof kindSchema>;
