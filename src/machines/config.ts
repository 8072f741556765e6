import { z } from 'zod';

/** A history range: which events of a machine the processor (or a GET) sees. */
export const historyRangeSchema = z
  .object({
    /** Event id to start after (forward) or before (backward); omitted: the edge. */
    after: z.number().int().min(1).optional(),
    limit: z.number().int().min(1).max(100_000).optional(),
    direction: z.enum(['forward', 'backward']).default('forward'),
  })
  .strict();

export const NAMESPACE_NAME = /^[A-Za-z0-9._-]{1,100}$/;

const processorSchema = z.union([
  z
    .object({
      /** HTTP endpoint taking JSON POSTs. */
      url: z.string().regex(/^https?:\/\//, 'an http:// or https:// URL'),
    })
    .strict(),
  z
    .object({
      /** Name of an in-process processor given to the node (`startNode(config, { processors })`). */
      in_process: z.string().min(1),
    })
    .strict(),
]);

/** One namespace: the same schema for `machines.namespaces.<ns>` in YAML and `PUT /v1/namespaces/{ns}`. */
export const namespaceSchema = z
  .object({
    processor: processorSchema,
    /** Deadline of a request that carries none. */
    default_timeout_ms: z.number().int().min(1).max(3_600_000).default(30_000),
    /** History the processor receives with every signal and call (default: all of it). */
    history_range: historyRangeSchema.optional(),
    /** Retries of transient processor failures (within the caller's deadline, or for timers and notifications). */
    retry: z
      .object({
        base_ms: z.number().int().min(1).default(50),
        max_ms: z.number().int().min(1).default(5_000),
        /** Attempts of a timeout signal before the machine becomes failed. */
        timer_max_attempts: z.number().int().min(1).default(10),
      })
      .strict()
      .prefault({}),
    /** While the namespace or a machine is paused: calls are refused (`paused`, retryable) or wait for the resume, up to `queue_limit` waiting per namespace on a node. */
    pause: z
      .object({
        calls: z.enum(['refuse', 'queue']).default('refuse'),
        queue_limit: z.number().int().min(1).max(100_000).default(1000),
      })
      .strict()
      .prefault({}),
    /** Name of the event sink that publishes this namespace's events. */
    sink: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,100}$/)
      .optional(),
  })
  .strict();

/** Configuration of the machines face (the `machines:` section of millrace.yaml). */
export const machinesConfigSchema = z
  .object({
    namespaces: z
      .record(
        z.string().regex(NAMESPACE_NAME, 'namespace names are 1-100 letters, digits, ".", "_" or "-"'),
        namespaceSchema,
      )
      .default({}),
    /** Serve the built-in example processor `example.counter` (the quick start's; `millrace serve --examples`). Off in production. */
    examples: z.boolean().default(false),
    /** Requests waiting for one machine beyond the one running; more get 503. */
    queue_limit: z.number().int().min(0).max(100_000).default(100),
    /** Machines with work in progress on this node; more get 503. */
    max_active_machines: z.number().int().min(1).max(10_000_000).default(10_000),
    /** Resident set size above which requests get 503 (0: no limit). */
    memory_limit_mb: z.number().int().min(0).default(0),
    /** Machines whose state is kept in memory (LRU). */
    cache_size: z.number().int().min(0).default(10_000),
    /**
     * Memory for the histories of cached machines, in MiB (estimated): each
     * keeps the events its namespace's history_range asks for, so a step reads
     * only events it has not seen; least recently used machines are dropped
     * beyond it, and one machine keeps at most a quarter of it. 0: no events
     * are kept (every step reads its range from the log).
     */
    history_cache_mb: z.number().int().min(0).max(1_048_576).default(128),
    /** Processing lease beyond the request deadline, for cross-node exclusion. */
    lease_margin_ms: z.number().int().min(100).default(5_000),
    /**
     * Where nodes share a shard: how long a node keeps a machine's lease after
     * a committed step, so the machine's next step here needs no lease round
     * trip. Another node that wants the machine asks for it (NOTIFY) and gets
     * it once no step of it runs here; a node that dies holds it at most this
     * long plus lease_margin_ms. 0: give the lease up at every commit.
     */
    lease_keep_ms: z.number().int().min(0).max(60_000).default(1_000),
    /** Backoff of notification delivery while the processor is unavailable. */
    notification_retry_base_ms: z.number().int().min(1).default(200),
    notification_retry_max_ms: z.number().int().min(1).default(30_000),
  })
  .strict()
  .prefault({});

export type MachinesConfig = z.output<typeof machinesConfigSchema>;
export type NamespaceConfig = MachinesConfig['namespaces'][string];
export type HistoryRange = z.output<typeof historyRangeSchema>;
