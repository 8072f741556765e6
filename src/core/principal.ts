/**
 * Who is calling, as established once at the transport edge. Faces may
 * receive a principal (to record who did what) but never see a token: the
 * transports authenticate and authorize, then hand this object on.
 */

/** How the caller proved who it is. `open`: authentication is off (loopback development). */
export type PrincipalSource = 'admin' | 'token' | 'jwt' | 'cert' | 'open';

export interface Principal {
  /** Stable identifier: `admin`, `token:<id>`, `jwt:<sub>`, `cert:<subject>`, or `open`. */
  readonly id: string;
  readonly source: PrincipalSource;
  /** Human name (token name, JWT subject). */
  readonly name: string;
  /** Granted permission patterns, `<face>:<action>:<resource>` with `*` wildcards. */
  readonly permissions: readonly string[];
}

/**
 * Permission grammar: `*` alone, or `<face>:<action>` optionally followed by
 * `:<resource>`. In a granted pattern any segment may contain `*`, which
 * matches any run of characters within that segment; a last segment of `*`
 * also matches everything after it (so `bus:*` grants every bus permission).
 */
const SEGMENT = /^[A-Za-z0-9._*-]+$/;

/** Why a granted pattern is malformed, or null when it is well formed. */
export function permissionProblem(p: unknown): string | null {
  if (typeof p !== 'string' || p.length === 0 || p.length > 300)
    return 'a permission is a non-empty string of at most 300 characters';
  if (p === '*') return null;
  const parts = p.split(':');
  if (parts.length < 2) return `"${p}": expected <face>:<action>[:<resource>] or "*"`;
  const [face, action, ...rest] = parts;
  if (!SEGMENT.test(face!) || !SEGMENT.test(action!))
    return `"${p}": face and action are letters, digits, ".", "_", "-" or "*"`;
  const resource = rest.join(':');
  if (rest.length > 0 && resource.length === 0) return `"${p}": empty resource`;
  return null;
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .split('*')
      .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
  );
}

const compiled = new Map<string, (required: string) => boolean>();

/** Whether the granted `pattern` covers the `required` permission (a concrete `<face>:<action>[:<resource>]`). */
export function grants(pattern: string, required: string): boolean {
  let fn = compiled.get(pattern);
  if (fn === undefined) {
    fn = compile(pattern);
    if (compiled.size > 10_000) compiled.clear();
    compiled.set(pattern, fn);
  }
  return fn(required);
}

function compile(pattern: string): (required: string) => boolean {
  if (pattern === '*') return () => true;
  const [face, action, ...rest] = pattern.split(':');
  const f = globToRegExp(face ?? '');
  if (action === undefined) return () => false;
  const a = globToRegExp(action);
  // `face:*` covers every action and resource of the face.
  if (action === '*' && rest.length === 0) return (req) => f.test(req.split(':')[0] ?? '');
  const r = rest.length === 0 ? null : globToRegExp(rest.join(':'));
  return (req) => {
    const [rf, ra, ...rr] = req.split(':');
    if (!f.test(rf ?? '') || !a.test(ra ?? '')) return false;
    // A permission without a resource (log:read, auth:admin) is covered by the pattern with or without one.
    if (rr.length === 0) return true;
    if (r === null) return false;
    return r.test(rr.join(':'));
  };
}

/** Whether the principal holds `required`. */
export function holds(p: Principal, required: string): boolean {
  return p.permissions.some((g) => grants(g, required));
}

/**
 * Whether the principal holds `<face>:<action>` on at least one resource:
 * the check at the start of a stream whose messages name their resources
 * one by one (each message is then checked for its own).
 */
export function holdsSome(p: Principal, faceAction: string): boolean {
  const [face, action] = faceAction.split(':');
  return p.permissions.some((g) => {
    if (g === '*') return true;
    const [gf, ga] = g.split(':');
    if (ga === undefined) return false;
    return globToRegExp(gf!).test(face!) && globToRegExp(ga).test(action!);
  });
}

/** The principal of a node whose authentication is off: every permission. */
export const OPEN_PRINCIPAL: Principal = Object.freeze({
  id: 'open',
  source: 'open',
  name: 'open (authentication off)',
  permissions: Object.freeze(['*']),
});
