import { api, enc, itemsOr } from '../api';
import { allowed } from '../auth';
import type { DeadLettersAnswer, Definition, PauseInfo, SessionSummary } from '../types';
import { Badge, ErrorBanner, Notice, Table, go, short, useAction, useLoad, when, type PageProps } from '../ui';

export function Pipe({ params }: PageProps) {
  const kind = params.get('kind') ?? '';
  const state = params.get('state') ?? '';
  const q = (extra: string) => `?limit=100${kind ? `&kind=${enc(kind)}` : ''}${extra}`;
  const sessions = useLoad(
    () => itemsOr<SessionSummary, null>(`/v1/pipe/sessions${q(state ? `&state=${enc(state)}` : '')}`, null),
    [kind, state],
    3000,
  );
  const dead = useLoad(
    () => api<DeadLettersAnswer>(`/v1/pipe/dead-letters${q('')}`).then((r) => r.dead_letters),
    [kind],
    2000,
  );
  const kinds = useLoad(() => itemsOr<Definition, Definition[]>('/v1/pipe/kinds', []), [], 5000);
  const pauses = useLoad(() => itemsOr<PauseInfo, PauseInfo[]>('/v1/pauses', []), [], 3000);
  const act = useAction();
  const set = (p: Record<string, string>) => go('pipe', { kind, state, ...p });
  const paused = (k: string) => (pauses.data ?? []).some((p) => p.kind === 'pipe_kind' && p.name === k);
  return (
    <section>
      <h1>Pipe</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          kind{' '}
          <input
            name="kind"
            value={kind}
            placeholder="any"
            onChange={(e) => set({ kind: (e.target as HTMLInputElement).value.trim() })}
          />
        </label>
        <label>
          state
          <select name="state" value={state} onChange={(e) => set({ state: (e.target as HTMLSelectElement).value })}>
            <option value="">any</option>
            {['open', 'stored', 'delivering', 'dead'].map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        </label>
      </form>
      <ErrorBanner error={act.error} />
      {act.done && <Notice kind="ok">{act.done}</Notice>}
      <h2>Kinds</h2>
      <ErrorBanner error={kinds.error ?? pauses.error} />
      <Table
        testid="kinds"
        head={['kind', 'source', 'pushes', '']}
        rows={(kinds.data ?? []).map((k) => [
          <a href={`#/pipe?kind=${enc(k.name)}`}>{k.name}</a>,
          <Badge value={k.source} />,
          paused(k.name) ? <Badge value="paused" /> : <Badge value="ok" />,
          <button
            data-action={paused(k.name) ? 'resume' : 'pause'}
            {...allowed(`pipe:admin:${k.name}`, { disabled: act.busy })}
            onClick={() =>
              act.run(
                `${paused(k.name) ? 'resumed' : 'paused'} ${k.name}`,
                async () => (
                  await api(`/v1/pipe/kinds/${enc(k.name)}/${paused(k.name) ? 'resume' : 'pause'}`, {
                    method: 'POST',
                    body: {},
                  }),
                  pauses.reload()
                ),
              )
            }
          >
            {paused(k.name) ? 'Resume' : 'Pause'}
          </button>,
        ])}
      />
      <h2>Dead letters</h2>
      <ErrorBanner error={dead.error} />
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
            <button
              data-action="redrive"
              {...allowed(`pipe:admin:${d.kind}`)}
              onClick={() =>
                act.run(
                  `redriven ${d.id}`,
                  async () => (
                    await api(`/v1/pipe/dead-letters/${enc(d.id)}/redrive`, { method: 'POST' }),
                    dead.reload(),
                    sessions.reload()
                  ),
                )
              }
            >
              Redrive
            </button>
            <button
              class="danger"
              data-action="delete"
              {...allowed(`pipe:admin:${d.kind}`)}
              onClick={() =>
                confirm(`Delete dead letter ${d.id}?`) &&
                act.run(
                  `deleted ${d.id}`,
                  async () => (await api(`/v1/pipe/dead-letters/${enc(d.id)}`, { method: 'DELETE' }), dead.reload()),
                )
              }
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
          rows={(sessions.data ?? []).map((s) => [
            <code>{s.id}</code>,
            s.kind,
            <Badge value={s.state} />,
            s.records,
            when(s.due_at),
            when(s.updated_at),
          ])}
        />
      )}
    </section>
  );
}
