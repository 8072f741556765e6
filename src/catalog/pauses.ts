// The codes `paused` and `paused_queue_full` are in the ops table.
import type { Catalog } from './catalog.js';

/** What can be paused. */
export type PauseKind = 'namespace' | 'machine' | 'subscription' | 'pipe_kind' | 'exporter';
export const PAUSE_KINDS: readonly PauseKind[] = ['namespace', 'machine', 'subscription', 'pipe_kind', 'exporter'];

export interface PauseInfo {
  kind: PauseKind;
  /** The name; a machine's is `<namespace>/<id>`. */
  name: string;
  paused_at: string;
  reason: string | null;
}

/** How long a timer, push or exporter waits before looking again whether its target was resumed. */
export const PAUSED_RECHECK_MS = 1000;

/**
 * Pause state of namespaces, machines, subscriptions, pipe kinds and
 * exporters. Stored as runtime definitions (kind `ops.pause`), so it survives
 * restarts and reaches every node the way definitions do (at once on this
 * node, by notification or poll on the others). Faces ask `paused()` on
 * their hot paths: a map look-up.
 */
export class Pauses {
  private waiters: Array<() => void> = [];

  constructor(private readonly catalog: Catalog) {
    catalog.on('ops.pause', () => {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  static key(kind: PauseKind, name: string): string {
    return `${kind}:${name}`;
  }

  paused(kind: PauseKind, name: string): boolean {
    return this.catalog.get('ops.pause', Pauses.key(kind, name)) !== undefined;
  }

  /** A machine waits while it or its namespace is paused. */
  machinePaused(ns: string, id: string): boolean {
    return this.paused('namespace', ns) || this.paused('machine', `${ns}/${id}`);
  }

  info(kind: PauseKind, name: string): PauseInfo | null {
    const d = this.catalog.get('ops.pause', Pauses.key(kind, name));
    if (d === undefined) return null;
    const v = d.definition as { kind: PauseKind; name: string; reason?: string | null };
    return { kind: v.kind, name: v.name, paused_at: new Date(d.updated_at).toISOString(), reason: v.reason ?? null };
  }

  list(): PauseInfo[] {
    return this.catalog.list('ops.pause').map((d) => {
      const v = d.definition as { kind: PauseKind; name: string; reason?: string | null };
      return { kind: v.kind, name: v.name, paused_at: new Date(d.updated_at).toISOString(), reason: v.reason ?? null };
    });
  }

  /** Pauses (again: the reason and time are replaced). */
  async pause(kind: PauseKind, name: string, reason: string | null): Promise<PauseInfo> {
    if (this.paused(kind, name)) return this.info(kind, name)!;
    await this.catalog.put('ops.pause', Pauses.key(kind, name), { kind, name, reason });
    return this.info(kind, name)!;
  }

  /** Resumes; false when it was not paused. */
  resume(kind: PauseKind, name: string): Promise<boolean> {
    return this.catalog.delete('ops.pause', Pauses.key(kind, name));
  }

  /** Resolves at the next change of pause state seen on this node (or after `ms`). */
  changed(ms: number, abort?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        abort?.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      t.unref?.();
      abort?.addEventListener('abort', done, { once: true });
      this.waiters.push(done);
    });
  }
}

const byCatalog = new WeakMap<Catalog, Pauses>();

/** The one Pauses of a node's catalog. */
export function pausesOf(catalog: Catalog): Pauses {
  let p = byCatalog.get(catalog);
  if (p === undefined) {
    p = new Pauses(catalog);
    byCatalog.set(catalog, p);
  }
  return p;
}
