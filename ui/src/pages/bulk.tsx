import { useState } from 'preact/hooks';
import { api, enc, items, itemsOr } from '../api';
import { allowed } from '../auth';
import type { BulkJob, DryRun, NamespaceInfo } from '../types';
import {
  ActionForm,
  Badge,
  ErrorBanner,
  Field,
  Notice,
  ProgressBar,
  Table,
  parseJsonInput,
  short,
  useAction,
  useLoad,
  when,
  type PageProps,
} from '../ui';

const MACHINE_OPS = ['repair', 'simple_repair', 'remove', 'notify'] as const;
const DEAD_LETTER_OPS = ['redrive', 'delete'] as const;

/** Bulk jobs: start one by filter (with a dry run that counts), watch its progress, cancel it. */
export function Bulk({ params }: PageProps) {
  const jobs = useLoad(() => items<BulkJob>('/v1/bulk-jobs?limit=50'), [], 1000);
  const act = useAction();
  return (
    <section>
      <h1>Bulk jobs</h1>
      <BulkForm initialNs={params.get('ns') ?? ''} onStarted={jobs.reload} />
      <h2>Jobs (newest first)</h2>
      <ErrorBanner error={jobs.error ?? act.error} />
      {act.done && <Notice kind="ok">{act.done}</Notice>}
      <Table
        testid="bulk-jobs"
        empty="no bulk job yet"
        head={['job', 'target', 'action', 'status', 'progress', 'total', 'succeeded', 'failed', 'created', '']}
        rows={(jobs.data ?? []).map((j) => [
          <code class="small" data-job={j.id}>
            {j.id}
          </code>,
          j.target === 'machines'
            ? `machines of ${typeof j.spec.namespace === 'string' ? j.spec.namespace : ''}`
            : 'pipe dead letters',
          <code class="small">{short(j.spec.action)}</code>,
          <Badge value={j.status} />,
          <ProgressBar value={j.progress} testid={`progress-${j.id}`} />,
          j.total,
          j.succeeded,
          j.failed > 0 ? <span title={j.errors.map((e) => `${e.item}: ${e.code}`).join('\n')}>{j.failed}</span> : 0,
          when(j.created_at),
          j.status === 'running' ? (
            <button
              class="danger"
              {...allowed('ops:bulk', { disabled: act.busy })}
              onClick={() =>
                act.run(
                  `cancelled ${j.id}`,
                  async () => (
                    await api<BulkJob>(`/v1/bulk-jobs/${enc(j.id)}/cancel`, { method: 'POST' }),
                    jobs.reload()
                  ),
                )
              }
            >
              Cancel
            </button>
          ) : (
            ''
          ),
        ])}
      />
    </section>
  );
}

function BulkForm({ initialNs, onStarted }: { initialNs: string; onStarted: () => void }) {
  const namespaces = useLoad(() => itemsOr<NamespaceInfo, NamespaceInfo[]>('/v1/namespaces', []), []);
  const act = useAction();
  const [target, setTarget] = useState<'machines' | 'dead_letters'>('machines');
  const [ns, setNs] = useState(initialNs);
  const [status, setStatus] = useState('failed');
  const [reason, setReason] = useState('');
  const [prefix, setPrefix] = useState('');
  const [kind, setKind] = useState('');
  const [op, setOp] = useState('simple_repair');
  const [args, setArgs] = useState('null');
  const [rate, setRate] = useState('50');
  const chosenNs = ns || namespaces.data?.[0]?.name || '';
  const request = (dryRun: boolean) => {
    const filter: Record<string, unknown> = {};
    if (target === 'machines') {
      if (status) filter.status = status;
      if (reason) filter.reason_contains = reason;
    } else {
      if (kind) filter.kind = kind;
      if (reason) filter.error_contains = reason;
    }
    if (prefix) filter.id_prefix = prefix;
    const action: Record<string, unknown> = { op };
    if (op === 'repair' || op === 'notify') action.args = parseJsonInput(args, 'the arguments');
    return { filter, action, rate_per_s: Number(rate), ...(dryRun ? { dry_run: true } : {}) };
  };
  const path = () =>
    target === 'machines' ? `/v1/namespaces/${enc(chosenNs)}/bulk-jobs` : '/v1/pipe/dead-letters/bulk-jobs';
  const count = () =>
    act.run('', async () => {
      const r = await api<DryRun>(path(), { method: 'POST', body: request(true) });
      return `${r.matched} ${target === 'machines' ? 'machines' : 'dead letters'} match`;
    });
  const start = () =>
    act.run('', async () => {
      const j = await api<BulkJob>(path(), { method: 'POST', body: request(false) });
      onStarted();
      return `started job ${j.id} over ${j.total}`;
    });
  const ops = target === 'machines' ? MACHINE_OPS : DEAD_LETTER_OPS;
  return (
    <div class="panel" data-testid="new-bulk-job">
      <h2>New bulk job</h2>
      <ErrorBanner error={namespaces.error} />
      <ActionForm act={act} onSubmit={() => void start()} submit="Start" disabled={target === 'machines' && !chosenNs}>
        <label>
          on
          <select
            name="target"
            value={target}
            onChange={(e) => {
              const t = (e.target as HTMLSelectElement).value === 'dead_letters' ? 'dead_letters' : 'machines';
              setTarget(t);
              setOp(t === 'machines' ? 'simple_repair' : 'redrive');
            }}
          >
            <option value="machines">machines</option>
            <option value="dead_letters">pipe dead letters</option>
          </select>
        </label>
        {target === 'machines' ? (
          <>
            <label>
              namespace
              <select name="ns" value={chosenNs} onChange={(e) => setNs((e.target as HTMLSelectElement).value)}>
                {(namespaces.data ?? []).map((n) => (
                  <option value={n.name}>{n.name}</option>
                ))}
              </select>
            </label>
            <label>
              status
              <select name="status" value={status} onChange={(e) => setStatus((e.target as HTMLSelectElement).value)}>
                <option value="">any</option>
                <option value="failed">failed</option>
                <option value="working">working</option>
              </select>
            </label>
            <Field name="reason_contains" label="reason contains" value={reason} set={setReason} placeholder="any" />
          </>
        ) : (
          <>
            <Field name="kind" label="kind" value={kind} set={setKind} placeholder="any" />
            <Field name="error_contains" label="error contains" value={reason} set={setReason} placeholder="any" />
          </>
        )}
        <Field name="id_prefix" label="id prefix" value={prefix} set={setPrefix} placeholder="any" />
        <label>
          action
          <select name="op" value={op} onChange={(e) => setOp((e.target as HTMLSelectElement).value)}>
            {ops.map((o) => (
              <option value={o}>{o.replace('_', ' ')}</option>
            ))}
          </select>
        </label>
        {(op === 'repair' || op === 'notify') && <Field name="args" label="args (JSON)" value={args} set={setArgs} />}
        <Field name="rate_per_s" label="per second" value={rate} set={setRate} />
        <button type="button" disabled={act.busy || (target === 'machines' && !chosenNs)} onClick={() => void count()}>
          Count matches
        </button>
      </ActionForm>
    </div>
  );
}
