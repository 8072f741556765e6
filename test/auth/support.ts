import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { exportSPKI, generateKeyPair, SignJWT, type CryptoKey } from 'jose';

export const ISSUER = 'https://issuer.test';
export const AUDIENCE = 'millrace-test';

/** An Ed25519 key pair; the public key written as PEM to `dir/jwt.pem`. Mints JWTs with given permissions. */
export async function jwtIssuer(dir: string): Promise<{
  keyFile: string;
  mint(permissions: string[], o?: { iss?: string; aud?: string; expS?: number; sub?: string }): Promise<string>;
  privateKey: CryptoKey;
}> {
  const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  const keyFile = join(dir, 'jwt.pem');
  writeFileSync(keyFile, await exportSPKI(publicKey));
  return {
    keyFile,
    privateKey,
    mint: (permissions, o = {}) =>
      new SignJWT({ permissions })
        .setProtectedHeader({ alg: 'EdDSA' })
        .setIssuer(o.iss ?? ISSUER)
        .setAudience(o.aud ?? AUDIENCE)
        .setSubject(o.sub ?? 'tester')
        .setIssuedAt()
        .setExpirationTime(Math.floor(Date.now() / 1000) + (o.expS ?? 600))
        .sign(privateKey),
  };
}

/**
 * A digest of everything stored in an SQLite shard file, read through a
 * separate connection: two equal digests mean nothing was written between
 * them. Tables that background loops touch on their own are left out.
 */
export function sqliteDigest(file: string, skip: readonly string[] = []): Record<string, string> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const out: Record<string, string> = {};
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Array<{
      name: string;
    }>;
    for (const { name } of tables) {
      if (skip.includes(name)) continue;
      const rows = (db.prepare(`SELECT * FROM "${name}"`).all() as unknown[]).map((r) =>
        JSON.stringify(r, (_k, v: unknown) =>
          Buffer.isBuffer(v) ? v.toString('hex') : typeof v === 'bigint' ? v.toString() : v,
        ),
      );
      rows.sort();
      out[name] = createHash('sha256').update(rows.join('\n')).digest('hex');
    }
    return out;
  } finally {
    db.close();
  }
}

/** Authorization header of a bearer token. */
export const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

/** The same digest of a PostgreSQL shard (every table of the public schema). */
export async function pgDigest(url: string, skip: readonly string[] = []): Promise<Record<string, string>> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const out: Record<string, string> = {};
    const tables = (
      await c.query(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
      )
    ).rows as Array<{ name: string }>;
    for (const { name } of tables) {
      if (skip.includes(name)) continue;
      const rows = (await c.query(`SELECT * FROM "${name}"`)).rows.map((r) => JSON.stringify(r));
      rows.sort();
      out[name] = createHash('sha256').update(rows.join('\n')).digest('hex');
    }
    return out;
  } finally {
    await c.end();
  }
}

/** A digest of a shard of either dialect (`location`: SQLite file or PostgreSQL URL). */
export function shardDigest(location: string, skip: readonly string[] = []): Promise<Record<string, string>> {
  return /^postgres(ql)?:/.test(location) ? pgDigest(location, skip) : Promise.resolve(sqliteDigest(location, skip));
}

/** The digest once background work of earlier requests has settled (two reads 100 ms apart agree; up to 10 s). */
export async function settledDigest(location: string, skip: readonly string[] = []): Promise<Record<string, string>> {
  let prev = await shardDigest(location, skip);
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const next = await shardDigest(location, skip);
    if (JSON.stringify(next) === JSON.stringify(prev)) return next;
    prev = next;
  }
  throw new Error(`${location} kept changing`);
}
