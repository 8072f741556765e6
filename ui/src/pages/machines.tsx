import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, enc, itemsOr, noRoute } from '../api';
import { allowed } from '../auth';
import type {
  MachineResponse,
  MachineSummary,
  MachineView,
  NamespaceInfo,
  Paged,
  PauseInfo,
  SeriesAnswer,
} from '../types';
import {
  Badge,
  ErrorBanner,
  Notice,
  Table,
  go,
  parseJsonInput,
  short,
  useAction,
  useLoad,
  when,
  type PageProps,
} from '../ui';

/** The mean of the last `n` non-null samples of a series (0 when there are none). */
export function recentRate(values: Array<number | null> | undefined, n = 5): number {
  const xs = (values ?? []).filter((v): v is number => v !== null).slice(-n);
  return xs.length === 0 ? 0 : Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 100) / 100;
}

export function Machines({ params }: PageProps) {
  const ns = params.get('ns') ?? '';
  const status = params.get('status') ?? '';
  const id = params.get('id') ?? '';
  const namespaces = useLoad(() => itemsOr<NamespaceInfo, NamespaceInfo[]>('/v1/namespaces', []), [], 3000);
  const [lookup, setLookup] = useState(id);
  useEffect(() => setLookup(id), [id]);
  const list = useLoad(
    () =>
      ns
        ? api<Paged<MachineSummary>>(
            `/v1/namespaces/${enc(ns)}/machines?limit=100${status ? `&status=${enc(status)}` : ''}`,
          )
        : Promise.resolve(null),
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
            <select
              name="ns"
              value={ns}
              onChange={(e) => set({ ns: (e.target as HTMLSelectElement).value, id: undefined })}
            >
              <option value="">—</option>
              {(namespaces.data ?? []).map((n) => (
                <option value={n.name}>{n.name}</option>
              ))}
            </select>
          ) : (
            <input
              name="ns"
              value={ns}
              placeholder="orders"
              onChange={(e) => set({ ns: (e.target as HTMLInputElement).value, id: undefined })}
            />
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
          <input
            name="id"
            value={lookup}
            onInput={(e) => setLookup((e.target as HTMLInputElement).value)}
            placeholder="id"
          />
        </label>
        <button type="submit" disabled={!ns}>
          Open
        </button>
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
                rows={(list.data?.items ?? []).map((m) => [
                  <a href={`#/machines?ns=${enc(ns)}&status=${enc(status)}&id=${enc(m.id)}`}>{m.id}</a>,
                  <Badge value={m.status} />,
                  m.reason === undefined ? '' : <span class="reason">{short(m.reason)}</span>,
                  m.events,
                  m.tags.join(', '),
                  when(m.timer?.at),
                  when(m.updated_at),
                ])}
              />
            </>
          )}
        </>
      )}
      {!ns && <NamespaceTable namespaces={namespaces.data ?? []} onChanged={namespaces.reload} />}
    </section>
  );
}

/** Every namespace: its machines in total, working, failed and paused, its step rate, and pause/resume. */
function NamespaceTable({ namespaces, onChanged }: { namespaces: NamespaceInfo[]; onChanged: () => void }) {
  const pauses = useLoad(() => itemsOr<PauseInfo, PauseInfo[]>('/v1/pauses', []), [], 3000);
  // Without log:read (or on a node without the route) the rates are left out, not an error.
  const rates = useLoad(
    () =>
      api<SeriesAnswer>('/v1/metrics/series?names=steps_per_s').catch((e: unknown) =>
        noRoute(e) || (e instanceof ApiError && e.status === 403) ? null : Promise.reject(e),
      ),
    [],
    4000,
  );
  const act = useAction();
  const pausedMachines = (ns: string) =>
    (pauses.data ?? []).filter((p) => p.kind === 'machine' && p.name.startsWith(`${ns}/`)).length;
  const toggle = (n: NamespaceInfo) =>
    act.run(`${n.paused ? 'resumed' : 'paused'} ${n.name}`, async () => {
      await api(`/v1/namespaces/${enc(n.name)}/${n.paused ? 'resume' : 'pause'}`, { method: 'POST', body: {} });
      onChanged();
      pauses.reload();
    });
  return (
    <>
      <h2>Namespaces</h2>
      <ErrorBanner error={act.error ?? pauses.error ?? rates.error} />
      {act.done && <Notice kind="ok">{act.done}</Notice>}
      <Table
        testid="namespaces"
        empty="no namespace defined"
        head={['namespace', 'total', 'working', 'failed', 'paused', 'steps/s', '']}
        rows={namespaces.map((n) => {
          const total = n.machines?.total ?? 0;
          const failed = n.machines?.failed ?? 0;
          return [
            <a href={`#/machines?ns=${enc(n.name)}`}>{n.name}</a>,
            <span class="num" data-col="total">
              {total}
            </span>,
            <span class="num" data-col="working">
              {total - failed}
            </span>,
            failed > 0 ? (
              <a class="num bad" data-col="failed" href={`#/machines?ns=${enc(n.name)}&status=failed`}>
                {failed}
              </a>
            ) : (
              <span class="num" data-col="failed">
                0
              </span>
            ),
            <span data-col="paused">
              {n.paused ? <Badge value="paused" /> : null}{' '}
              {pausedMachines(n.name) > 0
                ? `${pausedMachines(n.name)} machine${pausedMachines(n.name) === 1 ? '' : 's'}`
                : n.paused
                  ? ''
                  : '—'}
            </span>,
            <span class="num" data-col="rate">
              {rates.data === null ? '—' : recentRate(rates.data?.series[`steps_per_s:${n.name}`])}
            </span>,
            <button
              data-action={n.paused ? 'resume' : 'pause'}
              {...allowed(`machines:admin:${n.name}`, { disabled: act.busy })}
              onClick={() => void toggle(n)}
            >
              {n.paused ? 'Resume' : 'Pause'}
            </button>,
          ];
        })}
      />
      <p class="note">Steps per second: the mean of this node's last five samples (see Activity).</p>
    </>
  );
}

function MachineDetail({
  ns,
  id,
  onChanged,
  onGone,
}: {
  ns: string;
  id: string;
  onChanged: () => void;
  onGone: () => void;
}) {
  const m = useLoad(
    () => api<MachineView>(`/v1/namespaces/${enc(ns)}/machines/${enc(id)}?direction=backward&limit=50`),
    [ns, id],
    3000,
  );
  const act = useAction();
  const [args, setArgs] = useState('null');
  const base = `/v1/namespaces/${enc(ns)}/machines/${enc(id)}`;
  const d = m.data;
  /** start, call or repair with the JSON arguments of the form; a call answers with the processor's response. */
  const send = (op: 'start' | 'call' | 'repair') =>
    act.run(op === 'repair' ? 'repaired' : op === 'start' ? 'started' : 'called', async () => {
      const r = await api<MachineResponse>(`${base}/${op}`, {
        method: 'POST',
        body: { args: parseJsonInput(args, 'the arguments') },
      });
      m.reload();
      onChanged();
      if (op === 'call') return `response: ${short(r.response ?? null)}`;
      return undefined;
    });
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
        {ns} / {id} {d && <Badge value={d.status} />} {d?.paused && <Badge value="paused" />}
      </h2>
      {absent ? (
        <Notice>
          No machine {id} in {ns} yet: start it with its init arguments.
        </Notice>
      ) : (
        <ErrorBanner error={m.error} />
      )}
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
            <button
              onClick={() => send('call')}
              {...allowed(`machines:write:${ns}`, {
                disabled: act.busy || failed,
                ...(failed ? { title: 'a failed machine takes repairs only' } : {}),
              })}
            >
              Call
            </button>
            <button
              onClick={() => send('repair')}
              {...allowed(`machines:repair:${ns}`, {
                disabled: act.busy || !failed,
                ...(onlyFailed ? { title: onlyFailed } : {}),
              })}
            >
              Repair
            </button>
            <button
              onClick={() =>
                act.run(
                  'simple repair done',
                  async () => (await api(`${base}/simple-repair`, { method: 'POST' }), m.reload(), onChanged()),
                )
              }
              {...allowed(`machines:repair:${ns}`, {
                disabled: act.busy || !failed,
                ...(onlyFailed ? { title: onlyFailed } : {}),
              })}
            >
              Simple repair
            </button>
            <button
              onClick={() =>
                act.run(
                  d.paused ? 'resumed' : 'paused',
                  async () => (
                    await api(`${base}/${d.paused ? 'resume' : 'pause'}`, { method: 'POST', body: {} }),
                    m.reload()
                  ),
                )
              }
              {...allowed(`machines:admin:${ns}`, { disabled: act.busy })}
            >
              {d.paused ? 'Resume' : 'Pause'}
            </button>
            <button
              class="danger"
              {...allowed(`machines:repair:${ns}`, { disabled: act.busy })}
              onClick={() =>
                confirm(`Remove machine ${id} with its history?`) &&
                act.run('removed', async () => (await api(base, { method: 'DELETE' }), onGone()))
              }
            >
              Remove
            </button>
          </div>
          <h3>History (newest first)</h3>
          <Table
            testid="history"
            head={['event', 'created', 'body']}
            rows={d.history.map((h) => [h.id, when(h.created_at), <code>{short(h.body ?? h.data ?? h)}</code>])}
          />
        </>
      )}
    </div>
  );
}
