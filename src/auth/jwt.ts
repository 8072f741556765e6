import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { MillraceError } from '../core/errors.js';
import { permissionProblem, type Principal } from '../core/principal.js';

export interface JwtConfig {
  /** A PEM public key (SPKI) or one JWK as JSON. */
  key_file?: string | undefined;
  /** A JWK Set as JSON (`{"keys": [...]}`); the token's `kid` picks the key. */
  jwks_file?: string | undefined;
  issuer: string;
  audience: string;
  /** Claim holding the permissions: a list of strings or one space-separated string. */
  permissions_claim: string;
  algorithms?: string[] | undefined;
  clock_tolerance_s: number;
}

const configError = (m: string) => new MillraceError('config_invalid', m);

/** Verifies JWTs against a key or JWKS read once from file at start: signature, issuer, audience, expiry, permissions. */
export class JwtVerifier {
  private readonly key: KeyObject | JWTVerifyGetKey;

  constructor(private readonly cfg: JwtConfig) {
    if ((cfg.key_file === undefined) === (cfg.jwks_file === undefined))
      throw configError('auth.jwt: set exactly one of key_file and jwks_file');
    const file = (cfg.key_file ?? cfg.jwks_file)!;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw configError(`auth.jwt: cannot read ${file}: ${(err as Error).message}`);
    }
    try {
      if (cfg.jwks_file !== undefined) {
        this.key = createLocalJWKSet(JSON.parse(text) as Parameters<typeof createLocalJWKSet>[0]);
      } else {
        const trimmed = text.trim();
        this.key = trimmed.startsWith('{')
          ? createPublicKey({ key: JSON.parse(trimmed) as import('node:crypto').JsonWebKey, format: 'jwk' })
          : createPublicKey(trimmed);
      }
    } catch (err) {
      throw configError(`auth.jwt: ${file} holds no usable public key: ${(err as Error).message}`);
    }
  }

  /** Whether the bearer has the shape of a JWT (three base64url parts). */
  static looksLike(bearer: string): boolean {
    return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(bearer);
  }

  /** The principal of a valid token; null for any failure (bad signature, issuer, audience, expired, no permissions). */
  async verify(bearer: string): Promise<Principal | null> {
    try {
      const opts = {
        issuer: this.cfg.issuer,
        audience: this.cfg.audience,
        requiredClaims: ['exp'],
        clockTolerance: this.cfg.clock_tolerance_s,
        ...(this.cfg.algorithms ? { algorithms: this.cfg.algorithms } : {}),
      };
      const { payload } =
        typeof this.key === 'function'
          ? await jwtVerify(bearer, this.key, opts)
          : await jwtVerify(bearer, this.key, opts);
      const raw = payload[this.cfg.permissions_claim];
      const permissions = typeof raw === 'string' ? raw.split(' ').filter((s) => s.length > 0) : raw;
      if (!Array.isArray(permissions) || permissions.some((p) => permissionProblem(p) !== null)) return null;
      const sub = typeof payload.sub === 'string' ? payload.sub : 'unknown';
      return { id: `jwt:${sub}`, source: 'jwt', name: sub, permissions: permissions as string[] };
    } catch {
      return null;
    }
  }
}
