import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api';

/** Current hash route: `#/page?x=1` → { page, params }. */
export function useRoute(): { page: string; params: URLSearchParams } {
  const read = () => {
    const h = location.hash.replace(/^#\/?/, '');
    const [p, q] = h.split('?');
    return { page: p || 'overview', params: new URLSearchParams(q ?? '') };
  };
  const [r, setR] = useState(read);
  useEffect(() => {
    const on = () => setR(read());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return r;
}

export function go(page: string, params: Record<string, string | undefined> = {}): void {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  location.hash = `#/${page}${s ? `?${s}` : ''}`;
}

/**
 * Loads data with `fn`, again every `everyMs` (0: once) and on `reload()`;
 * keeps the last good data while showing the newest error.
 */
export function useLoad<T>(
  fn: () => Promise<T>,
  deps: unknown[],
  everyMs = 0,
): { data: T | undefined; error: unknown; reload: () => void; loading: boolean } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const fnRef = useRef(fn);
  fnRef.current = fn;
  useEffect(() => {
    setData(undefined);
  }, deps);
  useEffect(() => {
    let live = true;
    setLoading(true);
    fnRef
      .current()
      .then((d) => live && (setData(d), setError(undefined)))
      .catch((e) => live && setError(e))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  useEffect(() => {
    if (everyMs <= 0) return;
    const t = setInterval(() => setTick((n) => n + 1), everyMs);
    return () => clearInterval(t);
  }, [everyMs, ...deps]);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  return { data, error, reload, loading };
}

export function ErrorBanner({ error }: { error: unknown }) {
  if (error === undefined || error === null) return null;
  const e =
    error instanceof ApiError ? error : new ApiError('client_error', String((error as Error)?.message ?? error), 0);
  return (
    <div class="banner error" role="alert">
      <code class="code">{e.code}</code>
      {e.status > 0 && <span class="status">HTTP {e.status}</span>}
      <span>{e.message}</span>
    </div>
  );
}

export function Notice({ children, kind = 'info' }: { children: ComponentChildren; kind?: 'info' | 'ok' }) {
  return <div class={`banner ${kind}`}>{children}</div>;
}

const BADGE: Record<string, string> = {
  working: 'ok',
  done: 'ok',
  active: 'ok',
  running: 'info',
  pending: 'info',
  paused: 'warn',
  cancelled: 'muted',
  skipped: 'muted',
  interrupted: 'bad',
  ok: 'ok',
  connected: 'ok',
  open: 'info',
  stored: 'info',
  delivering: 'warn',
  failed: 'bad',
  dead: 'bad',
  disconnected: 'muted',
  config: 'muted',
  runtime: 'info',
  'this node': 'ok',
  copy: 'info',
  fenced: 'warn',
  switched: 'info',
  cleanup: 'info',
  aborted: 'bad',
  spare: 'muted',
};

export function Badge({ value }: { value: string }) {
  return (
    <span class={`badge ${BADGE[value] ?? 'muted'}`} data-badge={value}>
      {value}
    </span>
  );
}

export function Table({
  head,
  rows,
  empty = 'nothing here',
  testid,
}: {
  head: string[];
  rows: ComponentChildren[][];
  empty?: string;
  testid?: string;
}) {
  return (
    <table data-testid={testid}>
      <thead>
        <tr>
          {head.map((h) => (
            <th key={h}>{h}</th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.length === 0 ? (
          <tr>
            <td class="empty" colSpan={head.length}>
              {empty}
            </td>
          </tr>
        ) : (
          rows.map((r, i) => (
            <tr key={i}>
              {r.map((c, j) => (
                <td key={j}>{c}</td>
              ))}
            </tr>
          ))
        )}
      </tbody>
    </table>
  );
}

export function Json({ value }: { value: unknown }) {
  return <pre class="json">{JSON.stringify(value, null, 2)}</pre>;
}

export const short = (v: unknown): string => {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s === undefined ? '' : s.length > 120 ? `${s.slice(0, 117)}…` : s;
};

export const when = (v: unknown): string =>
  typeof v === 'string'
    ? v.replace('T', ' ').replace(/\.\d+Z$/, 'Z')
    : v === undefined || v === null
      ? '—'
      : JSON.stringify(v);

/** Runs an operator action, reporting its error or success (`label`, or the string the action returns). */
export function useAction(): {
  run: (label: string, fn: () => Promise<unknown>) => Promise<void>;
  error: unknown;
  done: string | undefined;
  busy: boolean;
} {
  const [error, setError] = useState<unknown>(undefined);
  const [done, setDone] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const run = useCallback(async (label: string, fn: () => Promise<unknown>) => {
    setBusy(true);
    setError(undefined);
    setDone(undefined);
    try {
      const r = await fn();
      // An action may name its own outcome (e.g. where an event landed).
      setDone(typeof r === 'string' ? r : label);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }, []);
  return { run, error, done, busy };
}

/** Parses a JSON text typed into a form; `what` names it in the error the action shows. */
export function parseJsonInput(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what} is not valid JSON`);
  }
}

/** A labelled text input (or textarea, with `rows`) bound to a state setter. */
export function Field({
  name,
  label,
  value,
  set,
  placeholder,
  rows,
  grow,
}: {
  name: string;
  label: string;
  value: string;
  set: (v: string) => void;
  placeholder?: string;
  rows?: number;
  grow?: boolean;
}) {
  const onInput = (e: Event) => set((e.target as HTMLInputElement | HTMLTextAreaElement).value);
  return (
    <label class={grow ? 'grow' : undefined}>
      {label}{' '}
      {rows ? (
        <textarea name={name} rows={rows} value={value} onInput={onInput} />
      ) : (
        <input name={name} value={value} onInput={onInput} placeholder={placeholder} />
      )}
    </label>
  );
}

/** An action's outcome banners, then its one-line form with a submit button. */
export function ActionForm({
  act,
  onSubmit,
  submit,
  disabled,
  children,
}: {
  act: ReturnType<typeof useAction>;
  onSubmit: () => void;
  submit: string;
  disabled?: boolean;
  children: ComponentChildren;
}) {
  return (
    <>
      <ErrorBanner error={act.error} />
      {act.done && <Notice kind="ok">{act.done}</Notice>}
      <form
        class="define"
        onSubmit={(e) => {
          e.preventDefault();
          onSubmit();
        }}
      >
        {children}
        <button type="submit" disabled={act.busy || disabled === true}>
          {submit}
        </button>
      </form>
    </>
  );
}

/** What every page receives: the query of its hash route. */
export type PageProps = { params: URLSearchParams };

export function Card({ label, value, tone }: { label: string; value: string; tone?: string }) {
  return (
    <div class={`card ${tone ?? ''}`}>
      <div class="label">{label}</div>
      <div class="value">{value}</div>
    </div>
  );
}

/** The cursors of a paged list walked so far; back to the first page when `resetKey` changes. */
export function usePages(resetKey: string): {
  cursor: string | undefined;
  number: number;
  next: (c: string) => void;
  back: () => void;
} {
  const [state, setState] = useState<{ key: string; cursors: string[] }>({ key: resetKey, cursors: [] });
  const cursors = state.key === resetKey ? state.cursors : [];
  useEffect(() => {
    if (state.key !== resetKey) setState({ key: resetKey, cursors: [] });
  }, [resetKey]);
  return {
    cursor: cursors[cursors.length - 1],
    number: cursors.length + 1,
    next: (c) => setState({ key: resetKey, cursors: [...cursors, c] }),
    back: () => setState({ key: resetKey, cursors: cursors.slice(0, -1) }),
  };
}

/** Previous / next buttons of a paged list. */
export function Pager({ pages, next }: { pages: ReturnType<typeof usePages>; next: string | null }) {
  return (
    <div class="actions pager">
      <button disabled={pages.number === 1} onClick={pages.back}>
        Previous
      </button>
      <span class="note" data-testid="page-number">
        page {pages.number}
      </span>
      <button disabled={next === null} onClick={() => next !== null && pages.next(next)}>
        Next
      </button>
    </div>
  );
}

/** A progress bar from 0 to 1, with its percentage. */
export function ProgressBar({ value, testid }: { value: number; testid?: string }) {
  const pct = Math.round(Math.max(0, Math.min(1, value)) * 100);
  return (
    <span
      class="progress"
      data-testid={testid}
      data-progress={pct}
      role="progressbar"
      aria-valuenow={pct}
      aria-valuemin={0}
      aria-valuemax={100}
    >
      <span class="bar" style={{ width: `${pct}%` }} />
      <span class="pct">{pct}%</span>
    </span>
  );
}
