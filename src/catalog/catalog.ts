import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { MillraceError } from '../core/errors.js';
import type { Migration } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';

/** What a runtime definition defines. */
export type CatalogKind = 'bus.topic' | 'machines.namespace' | 'pipe.kind' | 'ops.pause';

export const CATALOG_CHANNEL = 'millrace_catalog';

export { CATALOG_ERRORS } from './error-codes.js';

/**
 * Runtime definitions live on the first shard only: they are few, small and
 * read at startup and on change, and one home gives one answer to "what is
 * defined" without cross-shard agreement. Every shard gets the table (the
 * migration runs everywhere) so that the first shard may change without a
 * new migration.
 */
export const CATALOG_MIGRATIONS: readonly Migration[] = [
  {
    id: 'catalog/0001_definitions',
    sql: {
      sqlite: `
        CREATE TABLE catalog_definitions (
          kind TEXT NOT NULL,
          name TEXT NOT NULL,
          definition TEXT NOT NULL,
          updated_at INTEGER NOT NULL,
          PRIMARY KEY (kind, name)
        ) WITHOUT ROWID;
      `,
      postgres: `
        CREATE TABLE catalog_definitions (
          kind TEXT NOT NULL,
          name TEXT NOT NULL,
          definition TEXT NOT NULL,
          updated_at BIGINT NOT NULL,
          PRIMARY KEY (kind, name)
        );
      `,
    },
  },
];

export interface StoredDefinition {
  name: string;
  definition: unknown;
  updated_at: number;
}

/**
 * The runtime definitions of topics, namespaces and pipe kinds, cached in
 * memory and reloaded when any node changes them: by LISTEN/NOTIFY on
 * PostgreSQL, at once in-process on SQLite, and by a poll as a fallback for
 * lost notifications. Faces subscribe with `on(kind, fn)`; validation is the
 * faces' business (they own the schemas) and happens before `put`.
 */
export class Catalog {
  private state = new Map<CatalogKind, Map<string, StoredDefinition>>();
  private readonly events = new EventEmitter();
  private timer: NodeJS.Timeout | null = null;
  private unlisten: (() => Promise<void>) | null = null;
  private loading: Promise<void> | null = null;
  private again = false;

  constructor(
    private readonly home: Shard,
    private readonly opts: { pollMs: number; now: () => number; logger: Logger },
  ) {
    this.events.setMaxListeners(0);
  }

  async start(): Promise<void> {
    await this.reload();
    this.unlisten = await this.home.driver.listen(CATALOG_CHANNEL, () => void this.reload());
    this.timer = setInterval(() => void this.reload(), this.opts.pollMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.unlisten?.();
    this.unlisten = null;
  }

  list(kind: CatalogKind): StoredDefinition[] {
    return [...(this.state.get(kind)?.values() ?? [])].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  get(kind: CatalogKind, name: string): StoredDefinition | undefined {
    return this.state.get(kind)?.get(name);
  }

  /** Runs `fn` whenever the definitions of `kind` change (on this node's view). */
  on(kind: CatalogKind, fn: () => void): void {
    this.events.on(kind, fn);
  }

  /** Stores a (validated) definition; every node sees it after its next reload. */
  async put(kind: CatalogKind, name: string, definition: unknown): Promise<StoredDefinition> {
    const now = this.opts.now();
    const text = JSON.stringify(definition);
    await this.home.write(async (tx) => {
      await tx.run(
        'INSERT INTO catalog_definitions (kind, name, definition, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (kind, name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at',
        [kind, name, text, now],
      );
      tx.notify(CATALOG_CHANNEL);
    });
    await this.reload();
    return { name, definition, updated_at: now };
  }

  /** Deletes a definition; false when there was none. */
  async delete(kind: CatalogKind, name: string): Promise<boolean> {
    const n = await this.home.write(async (tx) => {
      const n = await tx.run('DELETE FROM catalog_definitions WHERE kind = ? AND name = ?', [kind, name]);
      if (n > 0) tx.notify(CATALOG_CHANNEL);
      return n;
    });
    await this.reload();
    return n > 0;
  }

  /** Reads every definition; emits the kinds whose definitions changed. Concurrent calls fold into one more read. */
  reload(): Promise<void> {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = (async () => {
      try {
        do {
          this.again = false;
          await this.readOnce();
        } while (this.again);
      } catch (err) {
        this.opts.logger.warn({ err }, 'reading runtime definitions failed');
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  private async readOnce(): Promise<void> {
    const rows = await this.home.reader.all<{ kind: string; name: string; definition: string; updated_at: number }>(
      'SELECT kind, name, definition, updated_at FROM catalog_definitions ORDER BY kind, name',
    );
    const next = new Map<CatalogKind, Map<string, StoredDefinition>>();
    for (const r of rows) {
      const k = r.kind as CatalogKind;
      if (!next.has(k)) next.set(k, new Map());
      next.get(k)!.set(r.name, {
        name: r.name,
        definition: JSON.parse(r.definition) as unknown,
        updated_at: Number(r.updated_at),
      });
    }
    const changed: CatalogKind[] = [];
    for (const k of ['bus.topic', 'machines.namespace', 'pipe.kind', 'ops.pause'] as const) {
      const fp = (m: Map<string, StoredDefinition> | undefined) =>
        JSON.stringify([...(m?.values() ?? [])].map((d) => [d.name, d.definition]));
      if (fp(this.state.get(k)) !== fp(next.get(k))) changed.push(k);
    }
    this.state = next;
    for (const k of changed) {
      try {
        this.events.emit(k);
      } catch (err) {
        this.opts.logger.warn({ err, kind: k }, 'applying runtime definitions failed');
      }
    }
  }
}

export const definedInConfig = (what: string, name: string): MillraceError =>
  new MillraceError('defined_in_config', `${what} "${name}" is defined in the configuration file`, {
    details: { name },
  });
