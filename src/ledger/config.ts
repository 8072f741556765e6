import { z } from 'zod';

const attrName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'attribute names are 1-63 letters, digits or _, not starting with a digit');
const typeName = /^[A-Za-z_][A-Za-z0-9_.-]{0,99}$/;

const accountTypeSchema = z
  .object({
    /** Key attributes: every read and write names all of them. */
    key: z.array(attrName).min(1),
    /** Auxiliary attributes carried by each event. */
    aux: z.array(attrName).default([]),
    /** The only aux subsets a read may group by. */
    groupings: z.array(z.array(attrName).min(1)).default([]),
    /** What SHA-1 routing hashes (default: key). */
    shard_key: z.array(attrName).min(1).optional(),
    /** Decimal places of amounts. */
    scale: z.number().int().min(0).max(18).default(2),
  })
  .strict();

const keyedTypeSchema = z
  .object({ key: z.array(attrName).min(1), shard_key: z.array(attrName).min(1).optional() })
  .strict();

/** Configuration of the ledger face (the `ledger:` section of millrace.yaml). */
export const ledgerConfigSchema = z
  .object({
    accounts: z
      .record(z.string().regex(typeName, 'type names are letters, digits, _ . -'), accountTypeSchema)
      .default({}),
    locks: z.record(z.string().regex(typeName), keyedTypeSchema).default({}),
    states: z.record(z.string().regex(typeName), keyedTypeSchema).default({}),
    aggregation: z
      .object({
        /** Aggregates are balances at the start of each period. */
        period: z.enum(['day', 'hour']).default('day'),
        /** Where periods start: UTC or a fixed offset such as +03:00. */
        timezone: z
          .string()
          .regex(/^(UTC|[+-](0\d|1[0-4]):[0-5]\d)$/, 'timezone must be UTC or a fixed offset like +03:00')
          .default('UTC'),
        /** Run the aggregator in the background (tests switch it off to interleave runs). */
        enabled: z.boolean().default(true),
        /** Log events per aggregator transaction. */
        chunk: z.number().int().min(1).max(100_000).default(1000),
      })
      .strict()
      .prefault({}),
    /** PostgreSQL: monthly partitions of the events table (by dt, UTC months). */
    partitions: z
      .object({
        /** Months after the current one to create partitions for. */
        ahead_months: z.number().int().min(0).max(120).default(3),
        /** How often the `ledger.partitions` timer runs. */
        every_ms: z
          .number()
          .int()
          .min(1000)
          .default(6 * 3_600_000),
      })
      .strict()
      .prefault({}),
    /**
     * PostgreSQL: keep the current UTC month and this many months before it;
     * the `ledger.partitions` timer drops older monthly partitions once the
     * aggregates cover them, and reads or writes dated before that horizon
     * are refused (`retention_exceeded`). Unset = keep everything. Refused
     * on SQLite, which has no partitions.
     */
    retention_months: z.number().int().min(1).max(1200).optional(),
    /** Longest lock timeout a client may ask for. */
    max_lock_timeout_s: z.number().int().min(1).default(3600),
    /** Largest number of events in one batch. */
    max_batch_events: z.number().int().min(1).max(100_000).default(10_000),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const dupes = (list: readonly string[]): string | undefined => list.find((a, i) => list.indexOf(a) !== i);
    for (const [name, t] of Object.entries(cfg.accounts)) {
      const at = (...p: Array<string | number>) => ['accounts', name, ...p];
      const all = [...t.key, ...t.aux];
      const d = dupes(all);
      if (d !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: at(),
          message: `account type "${name}": attribute "${d}" is repeated across key and aux`,
        });
      t.groupings.forEach((g, i) => {
        const gd = dupes(g);
        if (gd !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: at('groupings', i),
            message: `account type "${name}": attribute "${gd}" is repeated in grouping [${g.join(', ')}]`,
          });
        for (const a of g) {
          if (!t.aux.includes(a)) {
            ctx.addIssue({
              code: 'custom',
              path: at('groupings', i),
              message: `account type "${name}": grouping [${g.join(', ')}] names "${a}", which is not an aux attribute (aux: [${t.aux.join(', ')}])`,
            });
          }
        }
      });
      const seen = new Set<string>();
      t.groupings.forEach((g, i) => {
        const k = [...g].sort().join('\u0000');
        if (seen.has(k))
          ctx.addIssue({
            code: 'custom',
            path: at('groupings', i),
            message: `account type "${name}": grouping [${g.join(', ')}] is listed twice`,
          });
        seen.add(k);
      });
      checkShardKey(ctx, at('shard_key'), `account type "${name}"`, t.key, t.shard_key);
    }
    for (const [kind, types] of [
      ['locks', cfg.locks],
      ['states', cfg.states],
    ] as const) {
      for (const [name, t] of Object.entries(types)) {
        const d = dupes(t.key);
        if (d !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: [kind, name, 'key'],
            message: `${kind} type "${name}": attribute "${d}" is repeated`,
          });
        checkShardKey(ctx, [kind, name, 'shard_key'], `${kind} type "${name}"`, t.key, t.shard_key);
      }
    }
  })
  .prefault({});

function checkShardKey(
  ctx: z.RefinementCtx,
  path: Array<string | number>,
  what: string,
  key: readonly string[],
  shardKey: readonly string[] | undefined,
): void {
  if (shardKey === undefined) return;
  for (const a of shardKey) {
    if (!key.includes(a))
      ctx.addIssue({
        code: 'custom',
        path,
        message: `${what}: shard key attribute "${a}" is not in the key [${key.join(', ')}]`,
      });
  }
  const d = shardKey.find((a, i) => shardKey.indexOf(a) !== i);
  if (d !== undefined)
    ctx.addIssue({ code: 'custom', path, message: `${what}: shard key attribute "${d}" is repeated` });
}

export type LedgerConfig = z.output<typeof ledgerConfigSchema>;
export type AccountTypeConfig = LedgerConfig['accounts'][string];
