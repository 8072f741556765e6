import { api, enc, itemsOr } from '../api';
import { allowed } from '../auth';
import type { PauseInfo, PauseKind } from '../types';
import { ErrorBanner, Notice, Table, useAction, useLoad, when, type PageProps } from '../ui';

/** The resume route of a paused target (a machine is stored as `ns/id`). */
function resumePath(p: PauseInfo): string {
  switch (p.kind) {
    case 'namespace':
      return `/v1/namespaces/${enc(p.name)}/resume`;
    case 'machine': {
      const i = p.name.indexOf('/');
      return `/v1/namespaces/${enc(p.name.slice(0, i))}/machines/${enc(p.name.slice(i + 1))}/resume`;
    }
    case 'subscription':
      return `/v1/bus/subscriptions/${enc(p.name)}/resume`;
    case 'pipe_kind':
      return `/v1/pipe/kinds/${enc(p.name)}/resume`;
    case 'exporter':
      return `/v1/bus/exporters/${enc(p.name)}/resume`;
  }
}

const PERMISSION: Record<PauseKind, (name: string) => string> = {
  namespace: (n) => `machines:admin:${n}`,
  machine: (n) => `machines:admin:${n.split('/')[0] ?? ''}`,
  subscription: (n) => `bus:admin:${n}`,
  pipe_kind: (n) => `pipe:admin:${n}`,
  exporter: (n) => `bus:admin:${n}`,
};

/** Everything paused on the cluster (`GET /v1/pauses`), each with Resume. Pause from the page of each target. */
export function Pauses(_: PageProps) {
  const list = useLoad(() => itemsOr<PauseInfo, PauseInfo[]>('/v1/pauses', []), [], 2000);
  const act = useAction();
  return (
    <section>
      <h1>Paused</h1>
      <Notice>
        Namespaces and machines pause from Machines, subscriptions from Bus, pipe kinds from Pipe, schedules from
        Schedules. Pauses are stored: they survive restarts and hold on every node.
      </Notice>
      <ErrorBanner error={list.error ?? act.error} />
      {act.done && <Notice kind="ok">{act.done}</Notice>}
      <Table
        testid="pauses"
        empty="nothing is paused"
        head={['kind', 'name', 'since', 'reason', '']}
        rows={(list.data ?? []).map((p) => [
          p.kind.replace('_', ' '),
          <code>{p.name}</code>,
          when(p.paused_at),
          p.reason ?? '—',
          <button
            {...allowed(PERMISSION[p.kind](p.name), { disabled: act.busy })}
            onClick={() =>
              act.run(
                `resumed ${p.kind} ${p.name}`,
                async () => (await api(resumePath(p), { method: 'POST', body: {} }), list.reload()),
              )
            }
          >
            Resume
          </button>,
        ])}
      />
    </section>
  );
}
