import { readFileSync, existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve, dirname, isAbsolute } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { MillraceError } from './errors.js';
import { parseHashBound, HASH_SPACE_END } from './routing.js';
import type { FaceSpec } from '../face-spec.js';
import { BUILT_IN_FACE_SPECS } from '../face-specs.js';

/** The config sections the faces declare, by key, typed. */
type FaceSections<T> = T extends readonly [infer F extends FaceSpec, ...infer R]
  ? { [K in F['config']['key']]: F['config']['schema'] } & FaceSections<R>
  : unknown;

function faceSections<const T extends readonly FaceSpec[]>(specs: T): FaceSections<T> {
  const out: Record<string, z.ZodType> = {};
  for (const s of specs) {
    if (Object.hasOwn(out, s.config.key)) throw new Error(`config section ${s.config.key} declared by two faces`);
    out[s.config.key] = s.config.schema;
  }
  return out as FaceSections<T>;
}

const hexBound = z.string().regex(/^[0-9a-fA-F]{1,40}$/, 'a hex prefix of a SHA-1 hash, 1 to 40 hex digits');

/** A listener's TLS: its certificate and key (PEM files); with `client_ca_file`, client certificates signed by that CA are required. */
const tlsSchema = z
  .object({
    cert_file: z.string().min(1),
    key_file: z.string().min(1),
    client_ca_file: z.string().min(1).optional(),
  })
  .strict();

const shardSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'a lower-case name of letters, digits, "_" or "-"'),
    /** SQLite: database file (relative paths resolve against data_dir). */
    path: z.string().min(1).optional(),
    /** PostgreSQL: connection URL. */
    url: z.string().min(1).optional(),
    /** Inclusive lower bound of SHA-1(shard key), as a hex prefix. Default: start of the space. */
    from: hexBound.default('0'),
    /** Exclusive upper bound, as a hex prefix. Omitted: end of the space. */
    to: hexBound.optional(),
    /**
     * A spare shard owns no hash range until a split moves one to it
     * (`millrace shards split`, docs/operations.md). Every node opens it, so
     * all nodes can route to it the moment the split cuts over.
     */
    spare: z.boolean().default(false),
  })
  .strict();

export const configSchema = z
  .object({
    /** Identifies this node in logs, leases and claims. */
    node_id: z.string().min(1).max(100).optional(),
    data_dir: z.string().min(1).default('./data'),
    http: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(7070),
        body_limit_bytes: z
          .number()
          .int()
          .min(1024)
          .default(8 * 1024 * 1024),
        /** How long SIGTERM waits for in-flight requests before closing anyway. */
        drain_timeout_ms: z.number().int().min(0).default(10_000),
        /** Serve HTTPS (docs/security.md, TLS). */
        tls: tlsSchema.optional(),
      })
      .strict()
      .prefault({}),
    grpc: z
      .object({
        enabled: z.boolean().default(true),
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(7071),
        /** Serve gRPC over TLS (docs/security.md, TLS). */
        tls: tlsSchema.optional(),
      })
      .strict()
      .prefault({}),
    /** Authentication and authorization (docs/security.md). */
    auth: z
      .object({
        /**
         * Require credentials on every route but /healthz, /readyz and the console's static files.
         * Default: on when an admin token (MILLRACE_ADMIN_TOKEN or admin_token_file) or jwt is configured.
         * Set true to rely on API tokens alone (made through another node).
         */
        enabled: z.boolean().optional(),
        /** Allow listening on a non-loopback address with authentication off. */
        insecure: z.boolean().default(false),
        /** A file holding the bootstrap admin token (every permission); MILLRACE_ADMIN_TOKEN wins. */
        admin_token_file: z.string().min(1).optional(),
        jwt: z
          .object({
            key_file: z.string().min(1).optional(),
            jwks_file: z.string().min(1).optional(),
            issuer: z.string().min(1),
            audience: z.string().min(1),
            permissions_claim: z.string().min(1).default('permissions'),
            algorithms: z.array(z.string().min(1)).min(1).optional(),
            clock_tolerance_s: z.number().int().min(0).max(600).default(30),
          })
          .strict()
          .refine((j) => (j.key_file === undefined) !== (j.jwks_file === undefined), {
            message: 'set exactly one of key_file and jwks_file',
          })
          .optional(),
        /** Serve /metrics without credentials (else it needs log:read). */
        open_metrics: z.boolean().default(false),
        /** Serve /openapi.json without credentials (else it needs log:read). */
        open_openapi: z.boolean().default(false),
        /**
         * Principals of client certificates (with http.tls / grpc.tls client_ca_file):
         * a verified certificate whose subject equals `subject` (e.g. "CN=orders-svc,O=Example")
         * gets these permissions when the request carries no bearer token.
         */
        client_certs: z
          .array(
            z
              .object({
                subject: z.string().min(1).max(1000),
                permissions: z.array(z.string()).min(1),
              })
              .strict(),
          )
          .default([]),
        /** An ed25519 private key (PEM): every request to a processor or pipe handler is signed with it. */
        signing_key_file: z.string().min(1).optional(),
        /** Requests per principal: over it, `429 rate_limited` with Retry-After. Off when not set. */
        rate_limit: z
          .object({
            requests_per_s: z.number().positive().max(1_000_000),
            /** Requests at once after an idle spell (default: one second's worth, at least 1). */
            burst: z.number().int().min(1).max(10_000_000).optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    /** OpenTelemetry traces: off unless set. */
    telemetry: z
      .object({
        /** OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces. */
        otlp_url: z.url({ protocol: /^https?$/ }),
        service_name: z.string().min(1).max(200).default('millrace'),
      })
      .strict()
      .optional(),
    logging: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** Log every answered HTTP request at info (otherwise at debug; failures and slow answers are logged at warn either way). */
        requests: z.boolean().default(false),
        /** HTTP answers slower than this are logged at warn (streams and long polls excepted). */
        slow_request_ms: z.number().int().min(1).max(3_600_000).default(1000),
      })
      .strict()
      .prefault({}),
    storage: z
      .object({
        dialect: z.enum(['sqlite', 'postgres']).default('sqlite'),
        /**
         * strict: an acknowledged write is fsync'd (SQLite: the WAL after each group commit,
         * PostgreSQL synchronous_commit=on). relaxed: acknowledged writes may be
         * lost on power loss or OS crash (not on a process crash).
         */
        durability: z.enum(['strict', 'relaxed']).default('strict'),
        group_commit: z
          .object({
            /** Most callers' writes folded into one transaction. */
            max_batch: z.number().int().min(1).max(100_000).default(2000),
            /** Concurrent committing connections per PostgreSQL shard (SQLite always uses one). */
            writers: z.number().int().min(1).max(64).default(4),
          })
          .strict()
          .prefault({}),
        pool_size: z.number().int().min(2).max(200).default(10),
        shards: z.array(shardSchema).min(1).optional(),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        /** Rows the sequencer numbers in one transaction (PostgreSQL). */
        sequencer_batch: z.number().int().min(1).max(100_000).default(5000),
        /** Safety poll of the sequencer and of cursors when no notification arrives. */
        poll_ms: z.number().int().min(5).max(60_000).default(500),
      })
      .strict()
      .prefault({}),
    cluster: z
      .object({
        /**
         * Bound on how long a node that stops making progress (frozen process,
         * stuck disk, paused VM) keeps an exclusive role: the sequencer of a
         * shard, an exclusive cursor, a timer claim. A holder renews its role
         * every third of this; once a role has gone unrenewed this long, a
         * standby ends the holder's session and takes it over. Also the
         * server-side bound (idle_in_transaction_session_timeout) on a
         * transaction that a frozen node left open. PostgreSQL only.
         */
        role_lease_ms: z.number().int().min(500).max(120_000).default(5_000),
        /**
         * How long a write that needs positions from the sequencer (a bus
         * publish) waits for them before it is answered with a retryable
         * `unavailable`; what it stored is numbered later and a retry with
         * the same ids answers them as duplicates.
         */
        publish_deadline_ms: z.number().int().min(100).max(300_000).default(10_000),
      })
      .strict()
      .prefault({}),
    /** Retention: the pruning job (docs/operations.md). Rules live with the faces (bus.retention, pipe.dead_max_age_ms). */
    retention: z
      .object({
        /** Run the pruning job on this node (one node per shard holds it at a time). */
        enabled: z.boolean().default(true),
        /** Pause between pruning passes once a pass has nothing left to remove. */
        interval_ms: z
          .number()
          .int()
          .min(10)
          .max(24 * 3600_000)
          .default(60_000),
        /** Events (or pipe sessions) removed per transaction: bounds how long a pruning transaction holds a writer. */
        batch: z.number().int().min(1).max(10_000).default(500),
      })
      .strict()
      .prefault({}),
    cursors: z
      .object({
        chunk: z.number().int().min(1).max(100_000).default(1000),
      })
      .strict()
      .prefault({}),
    scheduler: z
      .object({
        poll_ms: z.number().int().min(5).max(60_000).default(1000),
        /**
         * A timer claim lasts this long and is renewed while its handler runs,
         * so a node that stops (or freezes) loses its claims within it and
         * another node fires them. Default: cluster.role_lease_ms.
         */
        lease_ms: z.number().int().min(100).optional(),
        batch: z.number().int().min(1).max(10_000).default(200),
        /** First retry delay of a failing timer handler; doubles up to max. */
        retry_base_ms: z.number().int().min(1).default(1000),
        retry_max_ms: z
          .number()
          .int()
          .min(1)
          .default(5 * 60_000),
      })
      .strict()
      .prefault({}),
    // The faces' sections (machines, ledger, pipe, bus, and the ops face's schedules), as each face declares them.
    ...faceSections(BUILT_IN_FACE_SPECS),
  })
  .strict();

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;

export interface ShardConfig {
  name: string;
  /** SQLite file path (absolute) or PostgreSQL URL. */
  location: string;
  from: bigint;
  /** Exclusive. */
  to: bigint;
  /** Owns no range at first (from = to = 0): the target of a later split. */
  spare?: boolean;
}

export interface Config extends Omit<ParsedConfig, 'storage'> {
  node_id: string;
  storage: Omit<ParsedConfig['storage'], 'shards'> & { shards: ShardConfig[] };
  /** The file the config was read from, if any. */
  source: string | undefined;
}

function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const key = issue.path.length ? issue.path.join('.') : '(root)';
      if (issue.code === 'unrecognized_keys') {
        return `${key}: unknown key(s) ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
      }
      return `${key}: ${issue.message}`;
    })
    .join('\n');
}

function configError(message: string): MillraceError {
  return new MillraceError('config_invalid', message);
}

/**
 * Validates raw config input (already parsed from YAML) and resolves shard
 * ranges. Throws a `config_invalid` MillraceError naming the key at fault.
 */
export function buildConfig(raw: unknown, opts: { source?: string; baseDir?: string } = {}): Config {
  const parsed = configSchema.safeParse(raw ?? {});
  if (!parsed.success)
    throw configError(
      `invalid configuration${opts.source ? ` in ${opts.source}` : ''}:\n${formatIssues(parsed.error)}`,
    );
  const c = parsed.data;
  const baseDir = opts.baseDir ?? process.cwd();
  const dataDir = isAbsolute(c.data_dir) ? c.data_dir : resolve(baseDir, c.data_dir);
  const dialect = c.storage.dialect;

  const rawShards: Array<z.output<typeof shardSchema>> =
    c.storage.shards ?? (dialect === 'sqlite' ? [{ name: 's0', from: '0', spare: false }] : []);
  if (rawShards.length === 0) {
    throw configError('storage.shards: the postgres dialect needs at least one shard with a url');
  }
  const names = new Set<string>();
  const shards: ShardConfig[] = rawShards.map((s, i) => {
    const key = `storage.shards.${i}`;
    if (names.has(s.name)) throw configError(`${key}.name: shard name "${s.name}" is used twice`);
    names.add(s.name);
    let location: string;
    if (dialect === 'sqlite') {
      if (s.url !== undefined) throw configError(`${key}.url: the sqlite dialect takes "path", not "url"`);
      const p = s.path ?? `${s.name}.db`;
      location = isAbsolute(p) ? p : resolve(dataDir, p);
    } else {
      if (s.path !== undefined) throw configError(`${key}.path: the postgres dialect takes "url", not "path"`);
      if (s.url === undefined)
        throw configError(`${key}.url: expected a PostgreSQL URL (postgres://user@host:port/db)`);
      if (!/^postgres(ql)?:\/\//.test(s.url))
        throw configError(`${key}.url: expected a URL starting with postgres:// or postgresql://`);
      location = s.url;
    }
    if (s.spare) {
      if (s.to !== undefined || s.from !== '0')
        throw configError(`${key}: a spare shard owns no range at first; give it no "from" or "to"`);
      return { name: s.name, location, from: 0n, to: 0n, spare: true };
    }
    const from = parseHashBound(s.from ?? '0');
    const to = s.to === undefined ? HASH_SPACE_END : parseHashBound(s.to);
    if (to <= from) throw configError(`${key}: "to" (${s.to}) must be above "from" (${s.from})`);
    return { name: s.name, location, from, to };
  });
  const locations = new Map<string, string>();
  for (const s of shards) {
    const other = locations.get(s.location);
    if (other !== undefined)
      throw configError(
        `storage.shards: shards "${other}" and "${s.name}" point at the same database; each shard needs its own`,
      );
    locations.set(s.location, s.name);
  }
  if (shards[0]!.spare) throw configError('storage.shards.0: the first shard holds the catalog and cannot be a spare');
  checkCoverage(shards.filter((s) => !s.spare));

  const rel = (p: string | undefined): string | undefined =>
    p === undefined || isAbsolute(p) ? p : resolve(baseDir, p);
  const auth = {
    ...c.auth,
    admin_token_file: rel(c.auth.admin_token_file),
    signing_key_file: rel(c.auth.signing_key_file),
    jwt:
      c.auth.jwt === undefined
        ? undefined
        : { ...c.auth.jwt, key_file: rel(c.auth.jwt.key_file), jwks_file: rel(c.auth.jwt.jwks_file) },
  };

  const tls = <T extends { cert_file: string; key_file: string; client_ca_file?: string | undefined } | undefined>(
    t: T,
  ): T =>
    (t === undefined
      ? t
      : { ...t, cert_file: rel(t.cert_file)!, key_file: rel(t.key_file)!, client_ca_file: rel(t.client_ca_file) }) as T;

  return {
    ...c,
    http: { ...c.http, tls: tls(c.http.tls) },
    grpc: { ...c.grpc, tls: tls(c.grpc.tls) },
    auth,
    // Host and process: unique among running nodes even where every container's process is pid 1.
    node_id: c.node_id ?? `${hostname().slice(0, 80)}-${process.pid}`,
    data_dir: dataDir,
    storage: { ...c.storage, shards },
    source: opts.source,
  };
}

/** The shard ranges must tile [0, 2^160) exactly: no gap, no overlap. */
export function checkCoverage(shards: ShardConfig[]): void {
  const sorted = [...shards].sort((a, b) => (a.from < b.from ? -1 : a.from > b.from ? 1 : 0));
  let expect = 0n;
  for (const s of sorted) {
    if (s.from > expect) {
      throw configError(
        `storage.shards: hash range has a gap from ${fmt(expect)} to ${fmt(s.from)} (before shard "${s.name}"); the ranges must cover the whole SHA-1 space`,
      );
    }
    if (s.from < expect) {
      throw configError(
        `storage.shards: shard "${s.name}" starts at ${fmt(s.from)}, overlapping the previous range that ends at ${fmt(expect)}`,
      );
    }
    expect = s.to;
  }
  if (expect !== HASH_SPACE_END) {
    throw configError(`storage.shards: hash range has a gap from ${fmt(expect)} to the end of the SHA-1 space`);
  }
}

const fmt = (n: bigint): string =>
  n === HASH_SPACE_END ? 'end' : n.toString(16).padStart(40, '0').replace(/0+$/, '') || '0';

/**
 * Loads the config: `path` (from --config), else $MILLRACE_CONFIG, else
 * ./millrace.yaml if it exists, else defaults only.
 */
export function loadConfig(path?: string, overrides: (c: Record<string, unknown>) => void = () => {}): Config {
  const chosen = path ?? process.env.MILLRACE_CONFIG ?? (existsSync('millrace.yaml') ? 'millrace.yaml' : undefined);
  let raw: Record<string, unknown> = {};
  let source: string | undefined;
  if (chosen !== undefined) {
    source = resolve(chosen);
    let text: string;
    try {
      text = readFileSync(source, 'utf8');
    } catch (err) {
      throw configError(`cannot read config file ${source}: ${(err as Error).message}`);
    }
    try {
      raw = (parseYaml(text) as Record<string, unknown> | null) ?? {};
    } catch (err) {
      throw configError(`config file ${source} is not valid YAML: ${(err as Error).message}`);
    }
    if (typeof raw !== 'object' || Array.isArray(raw))
      throw configError(`config file ${source}: expected a mapping at the top level`);
  }
  overrides(raw);
  return buildConfig(raw, source === undefined ? {} : { source, baseDir: dirname(source) });
}
