import { useEffect, useState } from 'preact/hooks';
import { api, enc, itemsOr } from '../api';
import type { Definition, Paged, TopicEvent } from '../types';
import { ErrorBanner, Notice, Pager, Table, go, short, useLoad, usePages, when, type PageProps } from '../ui';

/** Local `datetime-local` text to an ISO date-time (empty stays empty). */
const iso = (local: string): string => (local ? new Date(local).toISOString() : '');

/**
 * A topic's stored events (`GET /v1/bus/topics/{topic}/events`), newest
 * first, by key, type and time, a page at a time. The filters live in the
 * URL, so a view can be shared.
 */
export function Topics({ params }: PageProps) {
  const topic = params.get('topic') ?? '';
  const key = params.get('key') ?? '';
  const type = params.get('type') ?? '';
  const from = params.get('from') ?? '';
  const to = params.get('to') ?? '';
  const limit = params.get('limit') ?? '50';
  const topics = useLoad(() => itemsOr<Definition, Definition[]>('/v1/bus/topics', []), []);
  const [form, setForm] = useState({ key, type, from: '', to: '' });
  useEffect(() => setForm((f) => ({ ...f, key, type })), [key, type]);
  const pages = usePages([topic, key, type, from, to, limit].join('\u0000'));
  const page = useLoad(() => {
    if (!topic) return Promise.resolve(null);
    const q = new URLSearchParams({ limit });
    if (key) q.set('key', key);
    if (type) q.set('type', type);
    if (from) q.set('from', from);
    if (to) q.set('to', to);
    if (pages.cursor) q.set('cursor', pages.cursor);
    return api<Paged<TopicEvent>>(`/v1/bus/topics/${enc(topic)}/events?${q.toString()}`);
  }, [topic, key, type, from, to, limit, pages.cursor]);
  const names = (topics.data ?? []).map((t) => t.name);
  const set = (p: Record<string, string>) =>
    go('topics', { topic, key, type, from, to, limit: limit === '50' ? '' : limit, ...p });
  return (
    <section>
      <h1>Topic events</h1>
      <form
        class="filters"
        data-testid="topic-filters"
        onSubmit={(e) => {
          e.preventDefault();
          set({ key: form.key, type: form.type, from: iso(form.from) || from, to: iso(form.to) || to });
        }}
      >
        <label>
          topic
          <select
            name="topic"
            value={topic}
            onChange={(e) => go('topics', { topic: (e.target as HTMLSelectElement).value })}
          >
            <option value="">—</option>
            {names.map((n) => (
              <option value={n}>{n}</option>
            ))}
          </select>
        </label>
        <label>
          key{' '}
          <input
            name="key"
            value={form.key}
            placeholder="any"
            onInput={(e) => setForm({ ...form, key: (e.target as HTMLInputElement).value })}
          />
        </label>
        <label>
          type{' '}
          <input
            name="type"
            value={form.type}
            placeholder="any"
            onInput={(e) => setForm({ ...form, type: (e.target as HTMLInputElement).value })}
          />
        </label>
        <label>
          from{' '}
          <input
            name="from"
            type="datetime-local"
            step="1"
            value={form.from}
            onInput={(e) => setForm({ ...form, from: (e.target as HTMLInputElement).value })}
          />
        </label>
        <label>
          to{' '}
          <input
            name="to"
            type="datetime-local"
            step="1"
            value={form.to}
            onInput={(e) => setForm({ ...form, to: (e.target as HTMLInputElement).value })}
          />
        </label>
        <button type="submit" disabled={!topic}>
          Show
        </button>
        {(from || to) && (
          <button type="button" onClick={() => (setForm({ ...form, from: '', to: '' }), set({ from: '', to: '' }))}>
            Any time
          </button>
        )}
      </form>
      {(from || to) && (
        <p class="hint">
          created {from ? `from ${when(from)}` : ''} {to ? `before ${when(to)}` : ''}
        </p>
      )}
      <ErrorBanner error={topics.error ?? page.error} />
      {!topic && <Notice>Choose a topic.</Notice>}
      {topic && (
        <>
          <Table
            testid="topic-events"
            empty="no events"
            head={['shard:pos', 'key', 'type', 'id', 'created', 'data']}
            rows={(page.data?.items ?? []).map((e) => [
              <code class="small">
                {e.shard}:{e.pos}
              </code>,
              <a href={`#/topics?topic=${enc(topic)}&key=${enc(e.key)}`}>{e.key || '(none)'}</a>,
              e.type,
              e.id ?? '—',
              when(e.created_at),
              <code>{short(e.data)}</code>,
            ])}
          />
          <Pager pages={pages} next={page.data?.next_cursor ?? null} />
        </>
      )}
    </section>
  );
}
