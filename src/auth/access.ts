import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Config } from '../core/config.js';
import { MillraceError } from '../core/errors.js';
import { holds, holdsSome, OPEN_PRINCIPAL, permissionProblem, type Principal } from '../core/principal.js';
import { RateLimiter, type RateLimitSettings } from './rate-limit.js';
import { JwtVerifier } from './jwt.js';
import {
  isOpenRule,
  noLookup,
  requiredPermissions,
  type AccessInput,
  type PermissionRule,
  type ResourceLookup,
  type Rule,
} from './permissions.js';
import { TokenStore } from './tokens.js';

/** What the configuration and environment say about authentication, checked at start. */
export interface AuthSettings {
  enabled: boolean;
  /** SHA-256 of the bootstrap admin token. */
  adminDigest: Buffer | null;
  jwt: JwtVerifier | null;
  openMetrics: boolean;
  openOpenapi: boolean;
  /** Principals of verified client certificates, by canonical subject (see `canonicalSubject`). */
  clientCerts: ReadonlyMap<string, Principal>;
  rateLimit: RateLimitSettings | null;
}

/**
 * A certificate subject in one canonical form, `K=v,K=v` with the attributes
 * sorted: from config text ("CN=orders, O=Example") or from a peer
 * certificate's subject object ({CN: 'orders', O: 'Example'}).
 */
export function canonicalSubject(subject: string | Record<string, string | string[] | undefined>): string {
  const pairs: string[] = [];
  if (typeof subject === 'string') {
    for (const part of subject.split(/,(?=\s*[A-Za-z.0-9]+=)/)) {
      const i = part.indexOf('=');
      if (i <= 0) continue;
      pairs.push(`${part.slice(0, i).trim()}=${part.slice(i + 1).trim()}`);
    }
  } else {
    for (const [k, v] of Object.entries(subject)) {
      if (v === undefined) continue;
      for (const x of Array.isArray(v) ? v : [v]) pairs.push(`${k}=${x}`);
    }
  }
  return pairs.sort().join(',');
}

const configError = (m: string) => new MillraceError('config_invalid', m);

/** Whether a listen address reaches this machine only. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (h.startsWith('::ffff:')) return h.slice(7).startsWith('127.');
  return false;
}

/**
 * Reads the bootstrap admin token and the JWT key, and enforces the secure
 * default: a node listening on a non-loopback address needs authentication
 * configured, or `auth.insecure: true`. Throws `config_invalid`.
 */
export function resolveAuth(config: Config, env: NodeJS.ProcessEnv = process.env): AuthSettings {
  const a = config.auth;
  let admin: string | null = null;
  const fromEnv = env.MILLRACE_ADMIN_TOKEN;
  if (fromEnv !== undefined && fromEnv !== '') admin = fromEnv;
  else if (a.admin_token_file !== undefined) {
    try {
      admin = readFileSync(a.admin_token_file, 'utf8').trim();
    } catch (err) {
      throw configError(`auth.admin_token_file: cannot read ${a.admin_token_file}: ${(err as Error).message}`);
    }
  }
  if (admin !== null && (admin.length < 16 || /\s/.test(admin))) {
    throw configError(
      `${fromEnv ? 'MILLRACE_ADMIN_TOKEN' : 'auth.admin_token_file'}: the admin token must be at least 16 characters with no white space`,
    );
  }
  const jwt = a.jwt === undefined ? null : new JwtVerifier(a.jwt);
  const enabled = a.enabled ?? (admin !== null || jwt !== null || a.client_certs.length > 0);
  if (a.enabled === false && (admin !== null || jwt !== null)) {
    throw configError('auth.enabled: false, yet an admin token or auth.jwt is configured; remove one or the other');
  }
  if (!enabled && !a.insecure) {
    const exposed: string[] = [];
    if (!isLoopback(config.http.host)) exposed.push(`http.host ${config.http.host}`);
    if (config.grpc.enabled && !isLoopback(config.grpc.host)) exposed.push(`grpc.host ${config.grpc.host}`);
    if (exposed.length > 0) {
      throw configError(
        `${exposed.join(' and ')} listen beyond this machine with authentication off: set MILLRACE_ADMIN_TOKEN, auth.admin_token_file or auth.jwt (or auth.enabled: true), or set auth.insecure: true to serve without authentication`,
      );
    }
  }
  const clientCerts = new Map<string, Principal>();
  a.client_certs.forEach((c, i) => {
    const subject = canonicalSubject(c.subject);
    if (subject === '')
      throw configError(`auth.client_certs.${i}.subject: expected K=v pairs, e.g. "CN=orders-svc,O=Example"`);
    if (clientCerts.has(subject)) throw configError(`auth.client_certs.${i}.subject: ${c.subject} is listed twice`);
    for (const p of c.permissions) {
      const problem = permissionProblem(p);
      if (problem !== null) throw configError(`auth.client_certs.${i}.permissions: ${problem}`);
    }
    clientCerts.set(
      subject,
      Object.freeze({
        id: `cert:${subject}`,
        source: 'cert',
        name: c.subject,
        permissions: Object.freeze([...c.permissions]),
      }),
    );
  });
  if (
    clientCerts.size > 0 &&
    config.http.tls?.client_ca_file === undefined &&
    config.grpc.tls?.client_ca_file === undefined
  ) {
    throw configError(
      'auth.client_certs: needs http.tls.client_ca_file or grpc.tls.client_ca_file (client certificates are only read when they are required and verified)',
    );
  }
  const rl = a.rate_limit;
  return {
    clientCerts,
    rateLimit:
      rl === undefined
        ? null
        : { requestsPerS: rl.requests_per_s, burst: rl.burst ?? Math.max(1, Math.ceil(rl.requests_per_s)) },
    enabled,
    adminDigest: admin === null ? null : createHash('sha256').update(admin).digest(),
    jwt,
    openMetrics: a.open_metrics,
    openOpenapi: a.open_openapi,
  };
}

export const OPEN_SETTINGS: AuthSettings = {
  enabled: false,
  adminDigest: null,
  jwt: null,
  openMetrics: true,
  openOpenapi: true,
  clientCerts: new Map(),
  rateLimit: null,
};

const ADMIN: Principal = Object.freeze({
  id: 'admin',
  source: 'admin',
  name: 'bootstrap admin',
  permissions: Object.freeze(['*']),
});

export function unauthenticated(message: string): MillraceError {
  return new MillraceError('unauthenticated', message);
}

export function permissionDenied(permission: string, principal: Principal): MillraceError {
  return new MillraceError('permission_denied', `${principal.id} lacks the permission ${permission}`, {
    details: { permission, principal: principal.id },
  });
}

/**
 * The one access check of both transports: who is calling (authentication,
 * from `Authorization: Bearer <token>`), and whether the table grants the
 * request (authorization). Faces get the resulting Principal, never a token.
 */
export class Access {
  private readonly limiter: RateLimiter | null;

  constructor(
    readonly settings: AuthSettings,
    readonly tokens: TokenStore | null,
    readonly lookup: ResourceLookup = noLookup,
    now: () => number = () => Date.now(),
  ) {
    this.limiter = settings.rateLimit === null ? null : new RateLimiter(settings.rateLimit, now);
  }

  /** Counts one request against the principal's rate limit (when configured); `rate_limited` when over it. */
  limit(principal: Principal): void {
    if (this.limiter !== null && this.enabled) this.limiter.take(principal.id);
  }

  get enabled(): boolean {
    return this.settings.enabled;
  }

  /** Whether an open rule lets a request through without credentials. */
  isOpen(rule: Rule | undefined): boolean {
    if (!this.enabled) return true;
    if (rule === undefined || !isOpenRule(rule)) return false;
    return (
      rule.open === 'always' ||
      (rule.open === 'metrics' && this.settings.openMetrics) ||
      (rule.open === 'openapi' && this.settings.openOpenapi)
    );
  }

  /** The principal of an `authorization` header (or gRPC metadata) value; `unauthenticated` when missing or invalid. */
  async authenticate(header: string | undefined, peerSubject?: string | null): Promise<Principal> {
    if (!this.enabled) return OPEN_PRINCIPAL;
    if (header === undefined || header === '') {
      // A verified client certificate (the TLS listener requires and checks it) stands for its configured principal.
      const byCert = peerSubject ? this.settings.clientCerts.get(peerSubject) : undefined;
      if (byCert !== undefined) return byCert;
      throw unauthenticated(
        peerSubject
          ? `no credentials: the client certificate ${peerSubject} maps to no principal (auth.client_certs), and no bearer token was sent`
          : 'no credentials: send Authorization: Bearer <token>',
      );
    }
    const m = /^Bearer +(\S+) *$/i.exec(header);
    if (m === null) throw unauthenticated('the Authorization header must be "Bearer <token>"');
    const bearer = m[1]!;
    const p = await this.verify(bearer);
    if (p === null) throw unauthenticated('the token is invalid, expired or revoked');
    return p;
  }

  private async verify(bearer: string): Promise<Principal | null> {
    if (this.settings.adminDigest !== null) {
      const d = createHash('sha256').update(bearer).digest();
      if (timingSafeEqual(d, this.settings.adminDigest)) return ADMIN;
    }
    if (TokenStore.looksLike(bearer)) return this.tokens === null ? null : this.tokens.verify(bearer);
    if (this.settings.jwt !== null && JwtVerifier.looksLike(bearer)) return this.settings.jwt.verify(bearer);
    return null;
  }

  /**
   * Refuses with `permission_denied` (naming the first missing permission)
   * unless the principal holds every permission the request needs. A route
   * with no rule is refused: deny by default.
   */
  async authorize(principal: Principal, rule: Rule | undefined, input: AccessInput, what: string): Promise<void> {
    if (rule === undefined) {
      if (!this.enabled) return;
      throw new MillraceError(
        'permission_denied',
        `${what} has no entry in the permission table; it is refused to everyone`,
        { details: { permission: null, route: what } },
      );
    }
    if (isOpenRule(rule)) {
      if (this.isOpen(rule)) return;
      // metrics and openapi when not configured open: read access to the node.
      if (!holds(principal, 'log:read')) throw permissionDenied('log:read', principal);
      return;
    }
    for (const need of await requiredPermissions(rule, input, this.lookup)) {
      if (!holds(principal, need)) throw permissionDenied(need, principal);
    }
  }

  /** At the start of a stream checked message by message: the principal must hold the permission on some resource. */
  authorizeCall(principal: Principal, rule: PermissionRule): void {
    if (!holdsSome(principal, rule.permission)) throw permissionDenied(rule.permission, principal);
  }
}

export type { PermissionRule, Rule, AccessInput, ResourceLookup };
