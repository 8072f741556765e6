import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, enc, eventStream, itemsOf, noRoute } from './api';
import { allowed, useSession } from './auth';
import { ActionForm, Badge, ErrorBanner, Field, Notice, Table, go, parseJsonInput, short, sumLag, useAction, useLoad, when } from './ui';

type P = { params: URLSearchParams };

// ---------------------------------------------------------------- overview

export function Overview(_: P) {
  const shards = useLoad(() => api('/v1/shards'), [], 2000);
  const ready = useLoad(() => api('/readyz').catch((e) => ({ ok: false, problems: [String(e.message)] })), [], 2000);
  const subs = useLoad(() => loadSubscriptions(), [], 2000);
  const dead = useLoad(() => api('/v1/pipe/dead-letters?limit=500').then((r) => itemsOf<any>(r, 'dead_letters')), [], 5000);
  const ns = useLoad(() => api('/v1/namespaces').then((r) => itemsOf<any>(r)).catch((e) => (noRoute(e) ? [] : Promise.reject(e))), [], 5000);
  const nodes = useLoad(() => api('/v1/nodes').then((r) => itemsOf<any>(r)).catch((e) => (noRoute(e) ? null : Promise.reject(e))), [], 5000);
  const failed = (ns.data ?? []).filter((n) => n.machines?.failed > 0);
  const r = ready.data as any;
  return (
    <section>
      <h1>Overview</h1>
      <ErrorBanner error={shards.error ?? subs.error} />
      {r && !r.ok && (
        <div class="banner error" role="alert">
          <code class="code">not_ready</code> {(r.problems ?? []).map((p: unknown) => short(p)).join('; ')}
        </div>
      )}
      <div class="cards">
        <Card label="Node" value={r ? (r.ok ? 'ready' : 'not ready') : '…'} tone={r?.ok ? 'ok' : 'bad'} />
        <Card label="Dialect" value={(shards.data as any)?.dialect ?? '…'} />
        <Card label="Shards" value={String((shards.data as any)?.shards?.length ?? '…')} />
        {nodes.data && <Card label="Nodes" value={String(nodes.data.length)} />}
        <Card label="Subscription lag" value={String((subs.data ?? []).reduce((a, s) => a + sumLag(s.lag), 0))} />
        <Card label="Pipe dead letters" value={dead.data ? String(dead.data.length) + (dead.data.length >= 500 ? '+' : '') : '…'} tone={dead.data?.length ? 'bad' : 'ok'} />
        <Card label="Failed machines" value={String(failed.reduce((a, n) => a + n.machines.failed, 0))} tone={failed.length ? 'bad' : 'ok'} />
      </div>
      <h2>Shards</h2>
      <Table
        testid="shards"
        head={['shard', 'hash range', 'head position']}
        rows={((shards.data as any)?.shards ?? []).map((s: any) => [<code>{s.name}</code>, <code class="small">{s.from.slice(0, 8)}… – {s.to === 'end' ? 'end' : `${s.to.slice(0, 8)}…`}</code>, s.head])}
      />
      {nodes.data && (
        <>
          <h2>Nodes</h2>
          <Table
            testid="nodes"
            head={['node', 'sessions per shard (pool / leases / listen / locks)']}
            rows={nodes.data.map((n) => [
              <span>
                <code>{n.node_id}</code> {n.self && <Badge value="this node" />}
              </span>,
              Object.keys(n.sessions).length === 0 ? (
                <span class="note">embedded: no shared database</span>
              ) : (
                <code class="small">
                  {Object.entries(n.sessions as Record<string, any>)
                    .map(([shard, c]) => `${shard}: ${c.pool} / ${c.relaxed} / ${c.listen} / ${c.lock}`)
                    .join('   ')}
                </code>
              ),
            ])}
          />
        </>
      )}
      <h2>Subscriptions</h2>
      <SubscriptionTable subs={subs.data ?? []} />
      {failed.length > 0 && (
        <>
          <h2>Namespaces with failed machines</h2>
          <Table head={['namespace', 'failed', 'total']} rows={failed.map((n) => [<a href={`#/machines?ns=${enc(n.name)}&status=failed`}>{n.name}</a>, n.machines.failed, n.machines.total])} />
        </>
      )}
    </section>
  );
}

function Card({ label, value, tone }: { label: string; value: string; tone?: string }) {
  return (
    <div class={`card ${tone ?? ''}`}>
      <div class="label">{label}</div>
      <div class="value">{value}</div>
    </div>
  );
}

// ---------------------------------------------------------------- machines

export function Machines({ params }: P) {
  const ns = params.get('ns') ?? '';
  const status = params.get('status') ?? '';
  const id = params.get('id') ?? '';
  const namespaces = useLoad(() => api('/v1/namespaces').then((r) => itemsOf<any>(r)).catch((e) => (noRoute(e) ? [] : Promise.reject(e))), []);
  const [lookup, setLookup] = useState(id);
  useEffect(() => setLookup(id), [id]);
  const list = useLoad(
    () => (ns ? api(`/v1/namespaces/${enc(ns)}/machines?limit=100${status ? `&status=${enc(status)}` : ''}`) : Promise.resolve(null)),
    [ns, status],
    3000,
  );
  const set = (p: Record<string, string | undefined>) => go('machines', { ns, status, id, ...p });
  return (
    <section>
      <h1>Machines</h1>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          set({ id: lookup.trim() });
        }}
      >
        <label>
          namespace
          {(namespaces.data ?? []).length > 0 ? (
            <select name="ns" value={ns} onChange={(e) => set({ ns: (e.target as HTMLSelectElement).value, id: undefined })}>
              <option value="">—</option>
              {(namespaces.data ?? []).map((n) => <option value={n.name}>{n.name}</option>)}
            </select>
          ) : (
            <input name="ns" value={ns} placeholder="orders" onChange={(e) => set({ ns: (e.target as HTMLInputElement).value, id: undefined })} />
          )}
        </label>
        <label>
          status
          <select name="status" value={status} onChange={(e) => set({ status: (e.target as HTMLSelectElement).value })}>
            <option value="">any</option>
            <option value="failed">failed</option>
            <option value="working">working</option>
          </select>
        </label>
        <label>
          machine id
          <input name="id" value={lookup} onInput={(e) => setLookup((e.target as HTMLInputElement).value)} placeholder="id" />
        </label>
        <button type="submit" disabled={!ns}>Open</button>
      </form>
      <ErrorBanner error={namespaces.error} />
      {ns && id && (
        <MachineDetail
          ns={ns}
          id={id}
          onChanged={() => list.reload()}
          onGone={() => {
            list.reload();
            set({ id: undefined });
          }}
        />
      )}
      {ns && (
        <>
          <h2>In {ns}</h2>
          {list.error && noRoute(list.error) ? (
            <Notice>This node has no machine list API; open a machine by id.</Notice>
          ) : (
            <>
              <ErrorBanner error={list.error} />
              <Table
                testid="machines"
                head={['id', 'status', 'reason', 'events', 'tags', 'timer', 'updated']}
                rows={itemsOf<any>(list.data).map((m) => [
                  <a href={`#/machines?ns=${enc(ns)}&status=${enc(status)}&id=${enc(m.id)}`}>{m.id}</a>,
                  <Badge value={m.status} />,
                  m.reason === undefined ? '' : <span class="reason">{short(m.reason)}</span>,
                  m.events,
                  (m.tags ?? []).join(', '),
                  when(m.timer?.at),
                  when(m.updated_at),
                ])}
              />
            </>
          )}
        </>
      )}
      {!ns && <Notice>Choose a namespace.</Notice>}
    </section>
  );
}

function MachineDetail({ ns, id, onChanged, onGone }: { ns: string; id: string; onChanged: () => void; onGone: () => void }) {
  const m = useLoad(() => api(`/v1/namespaces/${enc(ns)}/machines/${enc(id)}?direction=backward&limit=50`), [ns, id], 3000);
  const act = useAction();
  const [args, setArgs] = useState('null');
  const base = `/v1/namespaces/${enc(ns)}/machines/${enc(id)}`;
  const d = m.data as any;
  /** start, call or repair with the JSON arguments of the form; a call answers with the processor's response. */
  const send = (op: 'start' | 'call' | 'repair') =>
    act.run(op === 'repair' ? 'repaired' : op === 'start' ? 'started' : 'called', async () => {
      const r = await api(`${base}/${op}`, { method: 'POST', body: { args: parseJsonInput(args, 'the arguments') } });
      m.reload();
      onChanged();
      if (op === 'call') return `response: ${short(r?.response ?? null)}`;
      return undefined;
    });
  const repair = () => send('repair');
  const failed = d?.status === 'failed';
  const onlyFailed = failed ? undefined : 'only a failed machine can be repaired';
  const absent = m.error instanceof ApiError && m.error.code === 'machine_not_found';
  const argsInput = (
    <label>
      args (JSON) <input name="args" value={args} onInput={(e) => setArgs((e.target as HTMLInputElement).value)} />
    </label>
  );
  return (
    <div class="panel" data-testid="machine">
      <h2>
        {ns} / {id} {d && <Badge value={d.status} />}
      </h2>
      {absent ? <Notice>No machine {id} in {ns} yet: start it with its init arguments.</Notice> : <ErrorBanner error={m.error} />}
      <ErrorBanner error={act.error} />
      {act.done && <Notice kind="ok">{act.done}</Notice>}
      {absent && (
        <div class="actions">
          {argsInput}
          <button onClick={() => send('start')} {...allowed(`machines:write:${ns}`, { disabled: act.busy })}>
            Start
          </button>
        </div>
      )}
      {d && (
        <>
          {d.status === 'failed' && (
            <div class="banner error">
              <code class="code">machine_failed</code> {short(d.reason)}
            </div>
          )}
          <dl class="kv">
            <dt>timer</dt>
            <dd>{d.timer ? when(d.timer.due_at) : '—'}</dd>
            <dt>tags</dt>
            <dd>{d.tags.length ? d.tags.join(', ') : '—'}</dd>
            <dt>aux state</dt>
            <dd>
              <code>{short(d.aux_state)}</code>
            </dd>
          </dl>
          <div class="actions">
            {argsInput}
            <button onClick={() => send('call')} {...allowed(`machines:write:${ns}`, { disabled: act.busy || failed, ...(failed ? { title: 'a failed machine takes repairs only' } : {}) })}>
              Call
            </button>
            <button onClick={repair} {...allowed(`machines:repair:${ns}`, { disabled: act.busy || !failed, ...(onlyFailed ? { title: onlyFailed } : {}) })}>
              Repair
            </button>
            <button
              onClick={() => act.run('simple repair done', async () => (await api(`${base}/simple-repair`, { method: 'POST' }), m.reload(), onChanged()))}
              {...allowed(`machines:repair:${ns}`, { disabled: act.busy || !failed, ...(onlyFailed ? { title: onlyFailed } : {}) })}
            >
              Simple repair
            </button>
            <button
              class="danger"
              {...allowed(`machines:repair:${ns}`, { disabled: act.busy })}
              onClick={() => confirm(`Remove machine ${id} with its history?`) && act.run('removed', async () => (await api(base, { method: 'DELETE' }), onGone()))}
            >
              Remove
            </button>
          </div>
          <h3>History (newest first)</h3>
          <Table testid="history" head={['event', 'created', 'body']} rows={(d.history ?? []).map((h: any) => [h.id, when(h.created_at), <code>{short(h.body ?? h.data ?? h)}</code>])} />
        </>
      )}
    </div>
  );
}

// ---------------------------------------------------------------- sink tail

export function Sinks({ params }: P) {
  const sink = params.get('sink') ?? '';
  const shard = params.get('shard') ?? '';
  const known = useLoad(() => api('/v1/sinks').then((r) => itemsOf<any>(r)).catch((e) => (noRoute(e) ? [] : Promise.reject(e))), []);
  const shards = useLoad(() => api('/v1/shards').then((r: any) => (r.shards ?? []).map((s: any) => s.name as string)), []);
  const [name, setName] = useState(sink);
  useEffect(() => setName(sink), [sink]);
  const [events, setEvents] = useState<any[]>([]);
  const [state, setState] = useState<'idle' | 'connecting' | 'live' | 'error'>('idle');
  const [error, setError] = useState<unknown>(undefined);
  const shardList: string[] | undefined = shards.data;
  useEffect(() => {
    setEvents([]);
    setError(undefined);
    if (!sink || shardList === undefined) return setState('idle');
    setState('connecting');
    // One stream per shard (a sink's positions are per shard), or the chosen one.
    const targets = shard ? [shard] : shardList;
    // The stream answers refusals (unknown sink) before any event: ask once to show the code.
    api(`/v1/sinks/${enc(sink)}/events?shard=${enc(targets[0] ?? '')}&after=0&limit=1`).catch((e) => (setError(e), setState('error')));
    const streams = targets.map((sh) =>
      eventStream(
        `/v1/sinks/${enc(sink)}/stream?shard=${enc(sh)}&after=0`,
        {
          open: () => setState((s) => (s === 'error' ? s : 'live')),
          event: (type, data) => {
            if (type === 'event') setEvents((prev) => [JSON.parse(data), ...prev].slice(0, 200));
          },
          error: () => setState((s) => (s === 'error' ? s : 'connecting')),
        },
        (lastId) => `/v1/sinks/${enc(sink)}/stream?shard=${enc(sh)}&after=${enc(lastId)}`,
      ),
    );
    return () => streams.forEach((close) => close());
  }, [sink, shard, shardList?.join(',')]);
  const sinkNames = (known.data ?? []).map((k) => k.name as string);
  return (
    <section>
      <h1>Sink tail</h1>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          go('sinks', { sink: name.trim(), shard });
        }}
      >
        <label>
          sink
          <input name="sink" list="sink-names" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} placeholder={sinkNames[0] ?? 'main'} />
          <datalist id="sink-names">{sinkNames.map((n) => <option value={n} />)}</datalist>
        </label>
        {(shardList?.length ?? 0) > 1 && (
          <label>
            shard
            <select name="shard" value={shard} onChange={(e) => go('sinks', { sink, shard: (e.target as HTMLSelectElement).value })}>
              <option value="">all</option>
              {shardList!.map((s) => <option value={s}>{s}</option>)}
            </select>
          </label>
        )}
        <button type="submit">Tail</button>
        {sink && <Badge value={state} />}
      </form>
      <ErrorBanner error={error ?? known.error ?? shards.error} />
      {!sink && sinkNames.length > 0 && (
        <Table head={['sink', 'namespaces']} rows={(known.data ?? []).map((k) => [<a href={`#/sinks?sink=${enc(k.name)}`}>{k.name}</a>, k.namespaces.join(', ')])} />
      )}
      <Table
        testid="sink-events"
        head={['pos', 'shard', 'namespace', 'machine', 'event', 'created', 'data']}
        empty={sink ? 'waiting for events…' : 'choose a sink'}
        rows={events.map((e) => [e.pos, e.shard, e.ns, <a href={`#/machines?ns=${enc(e.ns)}&id=${enc(e.machine_id)}`}>{e.machine_id}</a>, e.event_id, when(e.created_at), <code>{short(e.data)}</code>])}
      />
    </section>
  );
}

// ---------------------------------------------------------------- bus

async function loadSubscriptions(): Promise<any[]> {
  const r = await api('/v1/bus/subscriptions');
  const list = itemsOf<any>(r, 'subscriptions');
  // Older nodes list names only; fetch each one's details.
  return Promise.all(list.map((s) => (typeof s === 'string' ? api(`/v1/bus/subscriptions/${enc(s)}`) : s)));
}

function SubscriptionTable({ subs, onDelete }: { subs: any[]; onDelete?: (name: string) => void }) {
  return (
    <Table
      testid="subscriptions"
      head={['subscription', 'topics', 'lag', 'connected', 'dead-letter topic', 'positions', ...(onDelete ? [''] : [])]}
      rows={subs.map((s) => [
        <code>{s.name}</code>,
        (s.config?.topics ?? s.topics ?? []).join(', '),
        <span class="num" data-testid={`lag-${s.name}`}>{sumLag(s.lag)}</span>,
        <Badge value={s.connected ? 'connected' : 'disconnected'} />,
        s.dead_letter_topic ?? s.config?.dead_letter_topic ?? '—',
        <code class="small">{short(s.positions)}</code>,
        ...(onDelete
          ? [
              <button class="danger" {...allowed(`bus:admin:${s.name}`)} onClick={() => confirm(`Delete subscription ${s.name} and its positions?`) && onDelete(s.name)}>
                Delete
              </button>,
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
      const list = chosen.split(',').map((t) => t.trim()).filter(Boolean);
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
        <Field name="topics" label="topics (comma-separated)" value={chosen} set={setChosen} placeholder={topics.join(', ')} grow />
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
            {topics.map((t) => <option value={t}>{t}</option>)}
          </select>
        </label>
      </ActionForm>
    </div>
  );
}

export function Bus(_: P) {
  const topics = useLoad(() => api('/v1/bus/topics').then((r) => itemsOf<any>(r)).catch((e) => (noRoute(e) ? null : Promise.reject(e))), [], 5000);
  const subs = useLoad(() => loadSubscriptions(), [], 1000);
  const del = useAction();
  const topicNames = (topics.data ?? []).map((t) => String(t.name ?? t));
  return (
    <section>
      <h1>Bus</h1>
      <h2>Subscriptions</h2>
      <ErrorBanner error={subs.error} />
      <ErrorBanner error={del.error} />
      {del.done && <Notice kind="ok">{del.done}</Notice>}
      <SubscriptionTable subs={subs.data ?? []} onDelete={(name) => void del.run(`deleted ${name}`, async () => (await api(`/v1/bus/subscriptions/${enc(name)}`, { method: 'DELETE' }), subs.reload()))} />
      <SubscriptionForm topics={topicNames} onSaved={() => subs.reload()} />
      <h2>Topics</h2>
      <ErrorBanner error={topics.error} />
      {topics.data === null ? (
        <Notice>This node has no topic list API.</Notice>
      ) : (
        <Table testid="topics" head={['topic', 'source', 'definition']} rows={(topics.data ?? []).map((t) => [<code>{t.name ?? t}</code>, t.source ? <Badge value={t.source} /> : '', <code>{short(t.definition ?? '')}</code>])} />
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
      const r = await api(`/v1/bus/topics/${enc(chosen)}/events`, { method: 'POST', body: { events: [event] } });
      onPublished();
      const p = r.positions?.[0];
      return p ? `${p.duplicate ? 'duplicate of the event at' : 'published at'} ${p.shard}:${p.pos}` : 'published';
    });
  return (
    <div class="panel" data-testid="publish">
      <h2>Publish an event</h2>
      <ActionForm act={act} onSubmit={() => void publish()} submit="Publish" disabled={!chosen}>
        <label>
          topic
          <select name="topic" value={chosen} onChange={(e) => setTopic((e.target as HTMLSelectElement).value)}>
            {topics.map((t) => <option value={t}>{t}</option>)}
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

// ---------------------------------------------------------------- pipe

export function Pipe({ params }: P) {
  const kind = params.get('kind') ?? '';
  const state = params.get('state') ?? '';
  const q = (extra: string) => `?limit=100${kind ? `&kind=${enc(kind)}` : ''}${extra}`;
  const sessions = useLoad(() => api(`/v1/pipe/sessions${q(state ? `&state=${enc(state)}` : '')}`).catch((e) => (noRoute(e) ? null : Promise.reject(e))), [kind, state], 3000);
  const dead = useLoad(() => api(`/v1/pipe/dead-letters${q('')}`).then((r) => itemsOf<any>(r, 'dead_letters')), [kind], 2000);
  const act = useAction();
  const set = (p: Record<string, string>) => go('pipe', { kind, state, ...p });
  return (
    <section>
      <h1>Pipe</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          kind <input name="kind" value={kind} placeholder="any" onChange={(e) => set({ kind: (e.target as HTMLInputElement).value.trim() })} />
        </label>
        <label>
          state
          <select name="state" value={state} onChange={(e) => set({ state: (e.target as HTMLSelectElement).value })}>
            <option value="">any</option>
            {['open', 'stored', 'delivering', 'dead'].map((s) => <option value={s}>{s}</option>)}
          </select>
        </label>
      </form>
      <h2>Dead letters</h2>
      <ErrorBanner error={dead.error} />
      <ErrorBanner error={act.error} />
      {act.done && <Notice kind="ok">{act.done}</Notice>}
      <Table
        testid="dead-letters"
        head={['session', 'kind', 'repeats', 'last error', 'died', '']}
        empty="no dead letters"
        rows={(dead.data ?? []).map((d) => [
          <code>{d.id}</code>,
          d.kind,
          d.repeats,
          <span class="reason">{short(d.last_error)}</span>,
          when(d.died_at),
          <span class="actions">
            <button data-action="redrive" {...allowed(`pipe:admin:${d.kind}`)} onClick={() => act.run(`redriven ${d.id}`, async () => (await api(`/v1/pipe/dead-letters/${enc(d.id)}/redrive`, { method: 'POST' }), dead.reload(), sessions.reload()))}>
              Redrive
            </button>
            <button
              class="danger"
              data-action="delete"
              {...allowed(`pipe:admin:${d.kind}`)}
              onClick={() => confirm(`Delete dead letter ${d.id}?`) && act.run(`deleted ${d.id}`, async () => (await api(`/v1/pipe/dead-letters/${enc(d.id)}`, { method: 'DELETE' }), dead.reload()))}
            >
              Delete
            </button>
          </span>,
        ])}
      />
      <h2>Sessions</h2>
      <ErrorBanner error={sessions.error} />
      {sessions.data === null ? (
        <Notice>This node has no session list API.</Notice>
      ) : (
        <Table
          testid="sessions"
          head={['session', 'kind', 'state', 'records', 'due', 'updated']}
          rows={itemsOf<any>(sessions.data).map((s) => [<code>{s.id}</code>, s.kind, <Badge value={s.state} />, s.records, when(s.due_at), when(s.updated_at)])}
        />
      )}
    </section>
  );
}

// ---------------------------------------------------------------- ledger

export function Ledger(_: P) {
  const types = useLoad(() => api('/v1/ledger/types').catch((e) => (noRoute(e) ? null : Promise.reject(e))), []);
  const accountTypes: Record<string, any> = (types.data as any)?.accounts ?? {};
  const [type, setType] = useState('');
  const [key, setKey] = useState('{}');
  const [groupBy, setGroupBy] = useState('');
  const [dt, setDt] = useState(() => new Date().toISOString());
  const [from, setFrom] = useState(() => new Date(Date.now() - 30 * 86400_000).toISOString());
  const [result, setResult] = useState<{ balances?: unknown; turnovers?: unknown }>({});
  const act = useAction();
  const first = useRef(true);
  useEffect(() => {
    const names = Object.keys(accountTypes);
    if (first.current && names.length > 0 && !type) {
      first.current = false;
      const t = names[0]!;
      setType(t);
      setKey(JSON.stringify(Object.fromEntries((accountTypes[t]?.key ?? []).map((k: string) => [k, ''])), null, 0));
    }
  }, [types.data]);
  const account = () => {
    let k: unknown;
    try {
      k = JSON.parse(key);
    } catch {
      throw new Error('account key is not valid JSON');
    }
    const g = groupBy.split(',').map((s) => s.trim()).filter(Boolean);
    return { type, key: k, ...(g.length ? { group_by: g } : {}) };
  };
  const explore = () =>
    act.run('', async () => {
      const a = account();
      const [b, t] = await Promise.all([
        api('/v1/ledger/balances', { method: 'POST', body: { dt, accounts: [a] } }),
        api('/v1/ledger/turnovers', { method: 'POST', body: { dt_from: from, dt_to: dt, accounts: [a] } }),
      ]);
      setResult({ balances: b, turnovers: t });
    });
  return (
    <section>
      <h1>Ledger</h1>
      <ErrorBanner error={types.error} />
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          void explore();
        }}
      >
        <label>
          account type
          {Object.keys(accountTypes).length > 0 ? (
            <select name="type" value={type} onChange={(e) => setType((e.target as HTMLSelectElement).value)}>
              {Object.keys(accountTypes).map((t) => <option value={t}>{t}</option>)}
            </select>
          ) : (
            <input name="type" value={type} onInput={(e) => setType((e.target as HTMLInputElement).value)} />
          )}
        </label>
        <label>
          key (JSON) <input name="key" value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          group by <input name="group_by" value={groupBy} placeholder={(accountTypes[type]?.groupings ?? []).map((g: string[]) => g.join(',')).join(' or ')} onInput={(e) => setGroupBy((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          from <input name="dt_from" value={from} onInput={(e) => setFrom((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          at / to <input name="dt" value={dt} onInput={(e) => setDt((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" disabled={!type || act.busy}>Show</button>
      </form>
      {accountTypes[type] && <p class="hint">key: {(accountTypes[type].key ?? []).join(', ')}; aux: {(accountTypes[type].aux ?? []).join(', ') || '—'}</p>}
      <ErrorBanner error={act.error} />
      {result.balances !== undefined && (
        <>
          <h2>Balance at {when(dt)}</h2>
          <Table
            testid="balances"
            head={['group', 'debit', 'credit']}
            rows={((result.balances as any).balances ?? []).flatMap((b: any) => b.groups.map((g: any) => [groupLabel(g.group), <span class="num">{g.debit}</span>, <span class="num">{g.credit}</span>]))}
          />
          <h2>
            Turnover {when(from)} – {when(dt)}
          </h2>
          <Table
            testid="turnovers"
            head={['group', 'debit at start', 'credit at start', 'debit turnover', 'credit turnover']}
            rows={((result.turnovers as any).turnovers ?? []).flatMap((b: any) =>
              b.groups.map((g: any) => [groupLabel(g.group), ...[g.debit_init, g.credit_init, g.debit_turnover, g.credit_turnover].map((v) => <span class="num">{v}</span>)]),
            )}
          />
        </>
      )}
    </section>
  );
}

const groupLabel = (g: Record<string, unknown>): string => {
  const e = Object.entries(g ?? {});
  return e.length === 0 ? 'total' : e.map(([k, v]) => `${k}=${v ?? '∅'}`).join(', ');
};

// ---------------------------------------------------------------- definitions

/** What can be defined at runtime: machine namespaces, pipe kinds, bus topics. */
const DEFINABLE = [
  { id: 'namespaces', title: 'Machine namespaces', path: '/v1/namespaces', admin: 'machines:admin', example: '{"processor": {"in_process": "example.counter"}}' },
  { id: 'kinds', title: 'Pipe kinds', path: '/v1/pipe/kinds', admin: 'pipe:admin', example: '{"handler": "http://127.0.0.1:8080/sessions", "max_repeats": 5}' },
  { id: 'topics', title: 'Bus topics', path: '/v1/bus/topics', admin: 'bus:admin', example: '{"description": "orders of the shop"}' },
] as const;

export function Definitions(_: P) {
  return (
    <section>
      <h1>Definitions</h1>
      <Notice>
        Namespaces, kinds and topics defined here are stored in the shard database and seen by every node without a restart. Those of the config file are shown
        too; they win on a name conflict and cannot be changed here.
      </Notice>
      {DEFINABLE.map((d) => (
        <DefinitionSection key={d.id} {...d} />
      ))}
    </section>
  );
}

function DefinitionSection({ id, title, path, example, admin }: { id: string; title: string; path: string; example: string; admin: string }) {
  const list = useLoad(() => api(path).then((r) => itemsOf<any>(r)), [path], 5000);
  const act = useAction();
  const [name, setName] = useState('');
  const [body, setBody] = useState(example);
  const save = () =>
    act.run(`saved ${name.trim()}`, async () => {
      const parsed = parseJsonInput(body, 'the definition');
      if (!name.trim()) throw new Error('give it a name');
      await api(`${path}/${enc(name.trim())}`, { method: 'PUT', body: parsed });
      list.reload();
    });
  return (
    <div class="panel" data-testid={`defs-${id}`}>
      <h2>{title}</h2>
      <ErrorBanner error={list.error} />
      <Table
        testid={`defs-${id}-list`}
        head={['name', 'source', 'definition', '']}
        rows={(list.data ?? []).map((d) => [
          <code>{d.name}</code>,
          <Badge value={d.source} />,
          <code>{short(d.definition)}</code>,
          d.source === 'runtime' ? (
            <span class="actions">
              <button
                onClick={() => {
                  setName(d.name);
                  setBody(JSON.stringify(d.definition, null, 2));
                }}
              >
                Edit
              </button>
              <button
                class="danger"
                {...allowed(`${admin}:${d.name}`)}
                onClick={() => confirm(`Delete ${d.name}?`) && act.run(`deleted ${d.name}`, async () => (await api(`${path}/${enc(d.name)}`, { method: 'DELETE' }), list.reload()))}
              >
                Delete
              </button>
            </span>
          ) : (
            <span class="note">config file</span>
          ),
        ])}
      />
      <ActionForm act={act} onSubmit={() => void save()} submit="Save" {...(name.trim() && allowed(`${admin}:${name.trim()}`).disabled ? { disabled: true } : {})}>
        <Field name="name" label="name" value={name} set={setName} placeholder="name" />
        <Field name="definition" label="definition (JSON)" value={body} set={setBody} rows={3} grow />
      </ActionForm>
    </div>
  );
}

// ---------------------------------------------------------------- audit

/** The audit trail of sensitive actions (`GET /v1/audit`, permission audit:read), oldest first, a page at a time. */
export function Audit(_: P) {
  useSession();
  const [cursors, setCursors] = useState<string[]>([]);
  const cursor = cursors[cursors.length - 1];
  const page = useLoad(() => api(`/v1/audit?limit=100${cursor ? `&cursor=${enc(cursor)}` : ''}`), [cursor], 5000);
  const d = page.data as any;
  return (
    <section>
      <h1>Audit</h1>
      <Notice>
        Definition changes, tokens, repairs, removals, redrives and deletions, written to the log stream <code>millrace.audit</code>: hash-chained like every event,
        so <code>millrace verify</code> detects an edited or removed entry. Each action has a <em>requested</em> entry (before it ran) and a <em>completed</em> one
        with the answer's status.
      </Notice>
      <ErrorBanner error={page.error} />
      <Table
        testid="audit"
        empty="no audited action yet"
        head={['seq', 'at', 'phase', 'principal', 'action', 'resource', 'status', 'request id']}
        rows={(d?.items ?? []).map((a: any) => [a.seq, when(a.at), a.phase, <code>{a.principal}</code>, <code>{a.action}</code>, <code class="small">{a.resource}</code>, a.status ?? '—', <code class="small">{a.request_id}</code>])}
      />
      <div class="actions">
        <button disabled={cursors.length === 0} onClick={() => setCursors(cursors.slice(0, -1))}>
          Previous
        </button>
        <button disabled={!d?.next_cursor} onClick={() => setCursors([...cursors, d.next_cursor])}>
          Next
        </button>
      </div>
    </section>
  );
}
