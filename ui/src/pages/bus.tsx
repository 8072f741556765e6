import { useState } from 'preact/hooks';
import { api, enc, items, itemsOr } from '../api';
import { allowed } from '../auth';
import type { Definition, PublishAnswer, SubscriptionInfo } from '../types';
import {
  ActionForm,
  Badge,
  ErrorBanner,
  Field,
  Notice,
  Table,
  parseJsonInput,
  short,
  useAction,
  useLoad,
  type PageProps,
} from '../ui';

export async function loadSubscriptions(): Promise<SubscriptionInfo[]> {
  return items<SubscriptionInfo>('/v1/bus/subscriptions?limit=500');
}

/** Subscriptions with their lag and connection; with `onDelete`/`onPause`, their actions. */
export function SubscriptionTable({
  subs,
  onDelete,
  onPause,
}: {
  subs: SubscriptionInfo[];
  onDelete?: (name: string) => void;
  onPause?: (name: string, paused: boolean) => void;
}) {
  const actions = onDelete !== undefined || onPause !== undefined;
  return (
    <Table
      testid="subscriptions"
      head={['subscription', 'topics', 'lag', 'state', 'dead-letter topic', 'positions', ...(actions ? [''] : [])]}
      rows={subs.map((s) => [
        <code>{s.name}</code>,
        s.config.topics.join(', '),
        <span class="num" data-testid={`lag-${s.name}`}>
          {s.lag_total}
        </span>,
        <span data-testid={`state-${s.name}`}>
          <Badge value={s.connected ? 'connected' : 'disconnected'} /> {s.paused && <Badge value="paused" />}
        </span>,
        s.dead_letter_topic ?? '—',
        <code class="small">{short(s.positions)}</code>,
        ...(actions
          ? [
              <span class="actions">
                {onPause && (
                  <button
                    data-action={s.paused ? 'resume' : 'pause'}
                    {...allowed(`bus:admin:${s.name}`)}
                    onClick={() => onPause(s.name, s.paused)}
                  >
                    {s.paused ? 'Resume' : 'Pause'}
                  </button>
                )}
                {onDelete && (
                  <button
                    class="danger"
                    {...allowed(`bus:admin:${s.name}`)}
                    onClick={() => confirm(`Delete subscription ${s.name} and its positions?`) && onDelete(s.name)}
                  >
                    Delete
                  </button>
                )}
              </span>,
            ]
          : []),
      ])}
    />
  );
}

/** Creates (or redefines) a subscription: PUT /v1/bus/subscriptions/{name}. */
function SubscriptionForm({ topics, onSaved }: { topics: string[]; onSaved: () => void }) {
  const act = useAction();
  const [name, setName] = useState('');
  const [chosen, setChosen] = useState('');
  const [start, setStart] = useState('latest');
  const [dlt, setDlt] = useState('');
  const save = () =>
    act.run(`subscription ${name.trim()} saved`, async () => {
      const list = chosen
        .split(',')
        .map((t) => t.trim())
        .filter(Boolean);
      if (!name.trim()) throw new Error('give the subscription a name');
      const body: Record<string, unknown> = { topics: list, start };
      if (dlt) body.dead_letter_topic = dlt;
      await api(`/v1/bus/subscriptions/${enc(name.trim())}`, { method: 'PUT', body });
      onSaved();
    });
  return (
    <div class="panel" data-testid="new-subscription">
      <h2>New subscription</h2>
      <ActionForm act={act} onSubmit={() => void save()} submit="Create">
        <Field name="name" label="name" value={name} set={setName} placeholder="billing" />
        <Field
          name="topics"
          label="topics (comma-separated)"
          value={chosen}
          set={setChosen}
          placeholder={topics.join(', ')}
          grow
        />
        <label>
          start
          <select name="start" value={start} onChange={(e) => setStart((e.target as HTMLSelectElement).value)}>
            <option value="latest">latest</option>
            <option value="earliest">earliest</option>
          </select>
        </label>
        <label>
          dead-letter topic
          <select name="dead_letter_topic" value={dlt} onChange={(e) => setDlt((e.target as HTMLSelectElement).value)}>
            <option value="">none</option>
            {topics.map((t) => (
              <option value={t}>{t}</option>
            ))}
          </select>
        </label>
      </ActionForm>
    </div>
  );
}

export function Bus(_: PageProps) {
  const topics = useLoad(() => itemsOr<Definition, null>('/v1/bus/topics', null), [], 5000);
  const subs = useLoad(() => loadSubscriptions(), [], 1000);
  const act = useAction();
  const topicNames = (topics.data ?? []).map((t) => t.name);
  return (
    <section>
      <h1>Bus</h1>
      <h2>Subscriptions</h2>
      <ErrorBanner error={subs.error} />
      <ErrorBanner error={act.error} />
      {act.done && <Notice kind="ok">{act.done}</Notice>}
      <SubscriptionTable
        subs={subs.data ?? []}
        onDelete={(name) =>
          void act.run(
            `deleted ${name}`,
            async () => (await api(`/v1/bus/subscriptions/${enc(name)}`, { method: 'DELETE' }), subs.reload()),
          )
        }
        onPause={(name, paused) =>
          void act.run(
            `${paused ? 'resumed' : 'paused'} ${name}`,
            async () => (
              await api(`/v1/bus/subscriptions/${enc(name)}/${paused ? 'resume' : 'pause'}`, {
                method: 'POST',
                body: {},
              }),
              subs.reload()
            ),
          )
        }
      />
      <SubscriptionForm topics={topicNames} onSaved={() => subs.reload()} />
      <h2>Topics</h2>
      <ErrorBanner error={topics.error} />
      {topics.data === null ? (
        <Notice>This node has no topic list API.</Notice>
      ) : (
        <Table
          testid="topics"
          head={['topic', 'source', 'definition', '']}
          rows={(topics.data ?? []).map((t) => [
            <code>{t.name}</code>,
            <Badge value={t.source} />,
            <code>{short(t.definition ?? '')}</code>,
            <a href={`#/topics?topic=${enc(t.name)}`}>Browse events</a>,
          ])}
        />
      )}
      <PublishForm topics={topicNames} onPublished={() => subs.reload()} />
    </section>
  );
}

/** Publishes one event by hand (a test message, as in a broker's console). */
function PublishForm({ topics, onPublished }: { topics: string[]; onPublished: () => void }) {
  const act = useAction();
  const [topic, setTopic] = useState('');
  const [key, setKey] = useState('');
  const [type, setType] = useState('test');
  const [id, setId] = useState('');
  const [data, setData] = useState('{}');
  const chosen = topic || topics[0] || '';
  const publish = () =>
    act.run('published', async () => {
      const event: Record<string, unknown> = { type, data: parseJsonInput(data, 'the data') };
      if (key) event.key = key;
      if (id) event.id = id;
      const r = await api<PublishAnswer>(`/v1/bus/topics/${enc(chosen)}/events`, {
        method: 'POST',
        body: { events: [event] },
      });
      onPublished();
      const p = r.positions[0];
      return p ? `${p.duplicate ? 'duplicate of the event at' : 'published at'} ${p.shard}:${p.pos}` : 'published';
    });
  return (
    <div class="panel" data-testid="publish">
      <h2>Publish an event</h2>
      <ActionForm act={act} onSubmit={() => void publish()} submit="Publish" disabled={!chosen}>
        <label>
          topic
          <select name="topic" value={chosen} onChange={(e) => setTopic((e.target as HTMLSelectElement).value)}>
            {topics.map((t) => (
              <option value={t}>{t}</option>
            ))}
          </select>
        </label>
        <Field name="key" label="key" value={key} set={setKey} placeholder="(none)" />
        <Field name="type" label="type" value={type} set={setType} />
        <Field name="id" label="id" value={id} set={setId} placeholder="(no dedupe)" />
        <Field name="data" label="data (JSON)" value={data} set={setData} rows={2} grow />
      </ActionForm>
    </div>
  );
}
