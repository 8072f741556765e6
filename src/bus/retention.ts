import type { PruneBatch, RetentionSource } from '../log/pruner.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';
import type { Bus } from './bus.js';
import { topicDefinitionSchema, type TopicRetention } from './config.js';
import { importHorizon } from './split-gate.js';

const SCOPE = 'topic:';

/** The bounds of a topic's streams (`t/<topic>/<key>`): '0' follows '/' in byte order. */
const range = (topic: string): [string, string] => [`t/${topic}/`, `t/${topic}0`];

/**
 * Retention of bus topics: `max_age_ms` and `max_events` (per topic on each
 * shard, or per key) from `bus.retention` in the config file and from the
 * `retention` of runtime topic definitions (the file wins for a topic it
 * names). Only topic streams are ever offered for removal. When events go,
 * each subscription of the topic whose stored position is below them has
 * them added to its lost count (`retention_lost`), in the same transaction.
 */
export class TopicRetentionSource implements RetentionSource {
  readonly name = 'bus';
  private subs = new Map<string, string[]>();

  constructor(
    private readonly bus: Bus,
    private readonly now: () => number,
  ) {}

  active(): boolean {
    return this.rules().size > 0;
  }

  /** The rules in effect, by topic. */
  rules(): Map<string, TopicRetention> {
    const out = new Map<string, TopicRetention>();
    for (const d of this.bus.rt.catalog.list('bus.topic')) {
      const parsed = topicDefinitionSchema.safeParse(d.definition);
      if (parsed.success && parsed.data.retention) out.set(d.name, parsed.data.retention);
    }
    for (const [t, r] of Object.entries(this.bus.config.retention)) out.set(t, r);
    return out;
  }

  async candidates(shard: Shard, below: number, limit: number): Promise<PruneBatch[]> {
    const rules = this.rules();
    if (rules.size === 0) return [];
    this.subs = await this.bus.subscriptionTopics();
    const out: PruneBatch[] = [];
    let left = limit;
    const q = shard.reader;
    for (const [topic, r] of rules) {
      if (left <= 0) break;
      const [lo, hi] = range(topic);
      const picked = new Set<number>();
      if (r.max_age_ms !== undefined) {
        const rows = await q.all<{ pos: number }>(
          'SELECT pos FROM events WHERE stream >= ? AND stream < ? AND created_at < ? AND pos IS NOT NULL AND pos < ? ORDER BY pos LIMIT ?',
          [lo, hi, this.now() - r.max_age_ms, below, left],
        );
        for (const x of rows) picked.add(Number(x.pos));
      }
      if (r.max_events !== undefined) {
        if (r.per === 'key') {
          const rows = await q.all<{ pos: number }>(
            `SELECT e.pos AS pos FROM events e JOIN streams s ON s.stream = e.stream
              WHERE e.stream >= ? AND e.stream < ? AND e.seq <= s.seq - ? AND e.pos IS NOT NULL AND e.pos < ? ORDER BY e.pos LIMIT ?`,
            [lo, hi, r.max_events, below, left],
          );
          for (const x of rows) picked.add(Number(x.pos));
        } else {
          const [c] = await q.all<{ n: number }>(
            'SELECT COUNT(*) AS n FROM events WHERE stream >= ? AND stream < ? AND pos IS NOT NULL',
            [lo, hi],
          );
          const excess = Number(c?.n ?? 0) - r.max_events;
          if (excess > 0) {
            const rows = await q.all<{ pos: number }>(
              'SELECT pos FROM events WHERE stream >= ? AND stream < ? AND pos IS NOT NULL AND pos < ? ORDER BY pos LIMIT ?',
              [lo, hi, below, Math.min(excess, left)],
            );
            for (const x of rows) picked.add(Number(x.pos));
          }
        }
      }
      if (picked.size === 0) continue;
      const positions = [...picked].sort((a, b) => a - b).slice(0, left);
      left -= positions.length;
      out.push({ scope: `${SCOPE}${topic}`, positions });
    }
    return out;
  }

  async onRemoved(tx: Tx, _shard: Shard, scope: string, removed: readonly number[]): Promise<void> {
    if (removed.length === 0 || !scope.startsWith(SCOPE)) return;
    const topic = scope.slice(SCOPE.length);
    const top = removed[removed.length - 1]!;
    // A split's imports on its target are delivered from the source: their removal here loses nothing.
    const horizon = await importHorizon(tx);
    for (const [name, topics] of this.subs) {
      if (!topics.includes(topic)) continue;
      const cursor = this.bus.cursorName(name);
      const rows = await tx.all<{ pos: number }>('SELECT pos FROM cursors WHERE name = ?', [cursor]);
      // A subscription that has no position on this shard yet starts from what is there.
      if (!rows[0]) continue;
      const at = Number(rows[0].pos);
      const lost = removed.filter((p) => p > at && p > horizon).length;
      if (lost === 0) continue;
      await tx.run(
        `INSERT INTO retention_lost (cursor, lost, horizon, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (cursor) DO UPDATE SET lost = retention_lost.lost + excluded.lost,
           horizon = CASE WHEN retention_lost.horizon > excluded.horizon THEN retention_lost.horizon ELSE excluded.horizon END, updated_at = excluded.updated_at`,
        [cursor, lost, top, this.now()],
      );
    }
  }
}
