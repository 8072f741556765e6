import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, TOKEN_KEY } from './api';

/** The caller as the node sees it (`GET /v1/auth/whoami`). */
export interface Me {
  authentication: boolean;
  principal: { id: string; source: string; name: string; permissions: string[] };
}

/** What the console knows of its credentials: loading, needs a token, or signed in (or authentication off). */
export type Session = { state: 'loading' } | { state: 'login'; error?: string } | { state: 'in'; me: Me | null };

let current: Session = { state: 'loading' };
const listeners = new Set<(s: Session) => void>();
const set = (s: Session) => {
  current = s;
  for (const l of listeners) l(s);
};

/** Asks the node who the stored token is; an older node without whoami counts as signed in with every permission. */
export async function refreshSession(): Promise<void> {
  try {
    set({ state: 'in', me: await api<Me>('/v1/auth/whoami') });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401)
      set({ state: 'login', ...(sessionStorage.getItem(TOKEN_KEY) ? { error: e.message } : {}) });
    else if (e instanceof ApiError && e.code === 'not_found') set({ state: 'in', me: null });
    else set({ state: 'login', error: (e as Error).message });
  }
}

/** Keeps the token for this browser tab only (sessionStorage, never a URL), then asks who it is. */
export async function signIn(token: string): Promise<void> {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
  await refreshSession();
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  set({ state: 'login' });
}

export function useSession(): Session {
  const [s, setS] = useState(current);
  useEffect(() => {
    listeners.add(setS);
    setS(current);
    return () => void listeners.delete(setS);
  }, []);
  return s;
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .split('*')
      .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
  );
}

/** Whether the granted pattern covers `required` — the same grammar as the node's (src/core/principal.ts). */
export function grants(pattern: string, required: string): boolean {
  if (pattern === '*') return true;
  const [face, action, ...rest] = pattern.split(':');
  if (action === undefined) return false;
  const [rf, ra, ...rr] = required.split(':');
  if (!globToRegExp(face!).test(rf ?? '')) return false;
  if (action === '*' && rest.length === 0) return true;
  if (!globToRegExp(action).test(ra ?? '')) return false;
  if (rr.length === 0) return true;
  if (rest.length === 0) return false;
  return globToRegExp(rest.join(':')).test(rr.join(':'));
}

/** Whether the signed-in principal holds `permission` (always, when authentication is off or the node predates whoami). */
export function can(permission: string): boolean {
  if (current.state !== 'in') return false;
  const me = current.me;
  if (me === null || !me.authentication) return true;
  return me.principal.permissions.some((g) => grants(g, permission));
}

/** Props that disable a control the principal may not use, saying which permission it lacks. */
export function allowed(
  permission: string,
  otherwise?: { disabled?: boolean; title?: string },
): { disabled: boolean; title?: string; 'data-needs'?: string } {
  if (!can(permission)) return { disabled: true, title: `your token lacks ${permission}`, 'data-needs': permission };
  return { disabled: otherwise?.disabled ?? false, ...(otherwise?.title ? { title: otherwise.title } : {}) };
}
