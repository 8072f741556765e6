import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { badRequest, MillraceError } from '../core/errors.js';
import { permissionProblem, type Principal } from '../core/principal.js';
import type { Migration } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';

export { TOKEN_ERRORS } from './error-codes.js';

/**
 * API tokens live on the first shard (like runtime definitions: one home,
 * one answer). Only a scrypt hash of each secret is stored. Every shard gets
 * the table so that the first shard may change without a new migration.
 */
export const TOKEN_MIGRATIONS: readonly Migration[] = [
  {
    id: 'auth/0001_tokens',
    sql: {
      sqlite: `
        CREATE TABLE auth_tokens (
          id TEXT PRIMARY KEY,
          name TEXT NOT NULL,
          permissions TEXT NOT NULL,
          secret_hash TEXT NOT NULL,
          created_at INTEGER NOT NULL,
          expires_at INTEGER,
          revoked_at INTEGER
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE auth_tokens (
          id TEXT PRIMARY KEY,
          name TEXT NOT NULL,
          permissions TEXT NOT NULL,
          secret_hash TEXT NOT NULL,
          created_at BIGINT NOT NULL,
          expires_at BIGINT,
          revoked_at BIGINT
        );
      `,
    },
  },
];

/** `mr_<16 hex id>_<43 base64url secret>`: the id finds the row, the secret is checked against its hash. */
const TOKEN_RE = /^mr_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
export const TOKEN_NAME = /^[A-Za-z0-9._@ -]{1,100}$/;

/** scrypt cost: N=2^14, r=8, p=1 (about 16 MiB and tens of ms per hash). */
const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 } as const;

function scrypt(secret: string, salt: Buffer, o: { N: number; r: number; p: number; keylen: number }): Promise<Buffer> {
  const opts: ScryptOptions = { N: o.N, r: o.r, p: o.p, maxmem: 128 * o.N * o.r * 2 };
  return new Promise((resolve, reject) =>
    scryptCb(secret, salt, o.keylen, opts, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** `scrypt$N$r$p$<salt b64>$<hash b64>` */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(secret, salt, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const [alg, n, r, p, salt, hash] = stored.split('$');
  if (alg !== 'scrypt' || salt === undefined || hash === undefined) return false;
  const want = Buffer.from(hash, 'base64');
  const got = await scrypt(secret, Buffer.from(salt, 'base64'), {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    keylen: want.length,
  });
  return got.length === want.length && timingSafeEqual(got, want);
}

export interface TokenInfo {
  id: string;
  name: string;
  permissions: string[];
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
}

interface TokenRow {
  id: string;
  name: string;
  permissions: string;
  secret_hash: string;
  created_at: number | string;
  expires_at: number | string | null;
  revoked_at: number | string | null;
}

const iso = (v: number | string | null): string | null => (v === null ? null : new Date(Number(v)).toISOString());

function infoOf(r: TokenRow): TokenInfo {
  return {
    id: r.id,
    name: r.name,
    permissions: JSON.parse(r.permissions) as string[],
    created_at: iso(r.created_at)!,
    expires_at: iso(r.expires_at),
    revoked_at: iso(r.revoked_at),
  };
}

export function tokenNotFound(id: string): MillraceError {
  return new MillraceError('token_not_found', `no API token "${id}"`, { details: { id } });
}

/**
 * Runtime API tokens. Verification reads the token's row on every request
 * (one primary-key read on the first shard), so a revocation committed by
 * any node is in force on every node for the next request: there is no
 * cache of the row to invalidate. What is cached, per node, is only the
 * fact that a secret matched its hash (a SHA-256 of the secret), so the
 * costly scrypt runs once per token and node, not per request.
 */
export class TokenStore {
  /** token id -> SHA-256 of a secret already verified against the stored scrypt hash. */
  private readonly verified = new Map<string, Buffer>();

  constructor(
    private readonly home: Shard,
    private readonly now: () => number,
  ) {}

  /** Creates a token; the answer holds its secret, which is never shown again. */
  async create(input: {
    name: unknown;
    permissions: unknown;
    expires_in_s?: unknown;
  }): Promise<{ id: string; token: string; info: TokenInfo }> {
    const { name, permissions, expires_in_s: ttl } = input;
    if (typeof name !== 'string' || !TOKEN_NAME.test(name)) throw badRequest(`name must match ${String(TOKEN_NAME)}`);
    if (!Array.isArray(permissions) || permissions.length === 0 || permissions.length > 200)
      throw badRequest('permissions must be a list of 1 to 200 permissions');
    for (const p of permissions) {
      const problem = permissionProblem(p);
      if (problem !== null) throw badRequest(`permissions: ${problem}`, { permission: p });
    }
    if (ttl !== undefined && (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > 10 * 365 * 86400)) {
      throw badRequest('expires_in_s must be a whole number of seconds from 1 to 315360000');
    }
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const hash = await hashSecret(secret);
    const now = this.now();
    const expiresAt = ttl === undefined ? null : now + ttl * 1000;
    await this.home.write(async (tx) => {
      await tx.run(
        'INSERT INTO auth_tokens (id, name, permissions, secret_hash, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, NULL)',
        [id, name, JSON.stringify(permissions), hash, now, expiresAt],
      );
    });
    return {
      id,
      token: `mr_${id}_${secret}`,
      info: {
        id,
        name,
        permissions: permissions as string[],
        created_at: iso(now)!,
        expires_at: iso(expiresAt),
        revoked_at: null,
      },
    };
  }

  /** Tokens by id, without secrets (revoked and expired ones included, marked). */
  async list(opts: { after?: string; limit: number }): Promise<{ items: TokenInfo[]; next_cursor: string | null }> {
    const rows = await this.home.reader.all<TokenRow>('SELECT * FROM auth_tokens WHERE id > ? ORDER BY id LIMIT ?', [
      opts.after ?? '',
      opts.limit + 1,
    ]);
    const items = rows.slice(0, opts.limit).map(infoOf);
    return { items, next_cursor: rows.length > opts.limit ? items[items.length - 1]!.id : null };
  }

  async get(id: string): Promise<TokenInfo> {
    const [row] = await this.home.reader.all<TokenRow>('SELECT * FROM auth_tokens WHERE id = ?', [id]);
    if (row === undefined) throw tokenNotFound(id);
    return infoOf(row);
  }

  /** Revokes at once (idempotent); `token_not_found` for an unknown id. */
  async revoke(id: string): Promise<void> {
    const n = await this.home.write(async (tx) => {
      const exists = await tx.all<{ id: string }>('SELECT id FROM auth_tokens WHERE id = ?', [id]);
      if (exists.length === 0) return 0;
      await tx.run('UPDATE auth_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', [this.now(), id]);
      return 1;
    });
    this.verified.delete(id);
    if (n === 0) throw tokenNotFound(id);
  }

  /** Whether `bearer` looks like an API token (so other verifiers need not try it). */
  static looksLike(bearer: string): boolean {
    return bearer.startsWith('mr_');
  }

  /** The principal of a valid, unexpired, unrevoked token; null otherwise. */
  async verify(bearer: string): Promise<Principal | null> {
    const m = TOKEN_RE.exec(bearer);
    if (m === null) return null;
    const id = m[1]!;
    const secret = m[2]!;
    const [row] = await this.home.reader.all<TokenRow>('SELECT * FROM auth_tokens WHERE id = ?', [id]);
    if (row === undefined || row.revoked_at !== null) return null;
    if (row.expires_at !== null && Number(row.expires_at) <= this.now()) return null;
    const digest = createHash('sha256').update(secret).digest();
    const known = this.verified.get(id);
    if (known === undefined || !timingSafeEqual(known, digest)) {
      if (!(await verifySecret(secret, row.secret_hash))) return null;
      if (this.verified.size >= 100_000) this.verified.clear();
      this.verified.set(id, digest);
    }
    return { id: `token:${id}`, source: 'token', name: row.name, permissions: JSON.parse(row.permissions) as string[] };
  }
}
