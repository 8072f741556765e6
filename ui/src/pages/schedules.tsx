import { useState } from 'preact/hooks';
import { api, enc, items } from '../api';
import { allowed } from '../auth';
import type { FireInfo, Paged, ScheduleInfo } from '../types';
import {
  ActionForm,
  Badge,
  ErrorBanner,
  Field,
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

const EXAMPLE_ACTION = '{"publish": {"topic": "orders", "type": "tick", "data": {"at": "{{fire_time}}"}}}';

/** Schedules: their state, pause/resume and delete; a new one; the chosen one's next and recorded fires. */
export function Schedules({ params }: PageProps) {
  const chosen = params.get('name') ?? '';
  const list = useLoad(() => items<ScheduleInfo>('/v1/schedules?limit=500'), [], 2000);
  const act = useAction();
  const op = (s: ScheduleInfo, what: 'pause' | 'resume') =>
    act.run(
      `${what === 'pause' ? 'paused' : 'resumed'} ${s.name}`,
      async () => (await api(`/v1/schedules/${enc(s.name)}/${what}`, { method: 'POST' }), list.reload()),
    );
  return (
    <section>
      <h1>Schedules</h1>
      <ErrorBanner error={list.error ?? act.error} />
      {act.done && <Notice kind="ok">{act.done}</Notice>}
      <Table
        testid="schedules"
        empty="no schedule"
        head={['schedule', 'source', 'spec', 'action', 'state', 'next fire', 'last fire', 'running', 'missed', '']}
        rows={(list.data ?? []).map((s) => [
          <a href={`#/schedules?name=${enc(s.name)}`}>{s.name}</a>,
          <Badge value={s.source} />,
          <code class="small">{short(s.definition.spec)}</code>,
          <code class="small">{short(s.definition.action)}</code>,
          <Badge value={s.paused ? 'paused' : 'active'} />,
          when(s.next_fire_at),
          when(s.last_fire_at),
          s.running,
          s.missed,
          <span class="actions">
            <button
              data-action={s.paused ? 'resume' : 'pause'}
              {...allowed(`schedules:admin:${s.name}`, { disabled: act.busy })}
              onClick={() => void op(s, s.paused ? 'resume' : 'pause')}
            >
              {s.paused ? 'Resume' : 'Pause'}
            </button>
            {s.source === 'runtime' && (
              <button
                class="danger"
                {...allowed(`schedules:admin:${s.name}`, { disabled: act.busy })}
                onClick={() =>
                  confirm(`Delete schedule ${s.name}?`) &&
                  act.run(`deleted ${s.name}`, async () => {
                    await api(`/v1/schedules/${enc(s.name)}`, { method: 'DELETE' });
                    if (chosen === s.name) go('schedules');
                    list.reload();
                  })
                }
              >
                Delete
              </button>
            )}
          </span>,
        ])}
      />
      {chosen && <ScheduleDetail name={chosen} />}
      <ScheduleForm
        onSaved={(name) => {
          list.reload();
          go('schedules', { name });
        }}
      />
    </section>
  );
}

function ScheduleDetail({ name }: { name: string }) {
  const next = useLoad(
    () => api<{ items: Array<{ fire_at: string; due_at: string }> }>(`/v1/schedules/${enc(name)}/next?count=5`),
    [name],
    5000,
  );
  const fires = useLoad(() => api<Paged<FireInfo>>(`/v1/schedules/${enc(name)}/fires?limit=20`), [name], 1000);
  return (
    <div class="panel" data-testid="schedule">
      <h2>{name}</h2>
      <ErrorBanner error={next.error ?? fires.error} />
      <h3>Next fires</h3>
      <Table
        testid="next-fires"
        empty="no further fire"
        head={['fire time', 'due (with jitter)']}
        rows={(next.data?.items ?? []).map((f) => [when(f.fire_at), when(f.due_at)])}
      />
      <h3>Recorded fires (newest first)</h3>
      <Table
        testid="fires"
        empty="not fired yet"
        head={['fire time', 'status', 'backfill', 'attempts', 'started', 'finished', 'error']}
        rows={(fires.data?.items ?? []).map((f) => [
          when(f.fire_at),
          <Badge value={f.status} />,
          f.backfill ? 'yes' : '',
          f.attempts,
          when(f.started_at),
          when(f.finished_at),
          f.error ?? '',
        ])}
      />
    </div>
  );
}

/** Creates or replaces a schedule: PUT /v1/schedules/{name}. */
function ScheduleForm({ onSaved }: { onSaved: (name: string) => void }) {
  const act = useAction();
  const [name, setName] = useState('');
  const [kind, setKind] = useState<'every_ms' | 'cron'>('every_ms');
  const [value, setValue] = useState('60000');
  const [timezone, setTimezone] = useState('');
  const [jitter, setJitter] = useState('');
  const [overlap, setOverlap] = useState('skip');
  const [action, setAction] = useState(EXAMPLE_ACTION);
  const save = () =>
    act.run(`schedule ${name.trim()} saved`, async () => {
      if (!name.trim()) throw new Error('give the schedule a name');
      const spec: Record<string, unknown> = kind === 'every_ms' ? { every_ms: Number(value) } : { cron: value.trim() };
      if (kind === 'cron' && timezone.trim()) spec.timezone = timezone.trim();
      if (jitter.trim()) spec.jitter_ms = Number(jitter);
      const body = { spec, action: parseJsonInput(action, 'the action'), overlap };
      await api<ScheduleInfo>(`/v1/schedules/${enc(name.trim())}`, { method: 'PUT', body });
      onSaved(name.trim());
    });
  return (
    <div class="panel" data-testid="new-schedule">
      <h2>New schedule</h2>
      <ActionForm act={act} onSubmit={() => void save()} submit="Save">
        <Field name="name" label="name" value={name} set={setName} placeholder="heartbeat" />
        <label>
          every
          <select
            name="kind"
            value={kind}
            onChange={(e) => setKind((e.target as HTMLSelectElement).value === 'cron' ? 'cron' : 'every_ms')}
          >
            <option value="every_ms">interval (ms)</option>
            <option value="cron">cron</option>
          </select>
        </label>
        <Field
          name="spec"
          label={kind === 'cron' ? 'cron (sec min hour day month weekday)' : 'interval ms'}
          value={value}
          set={setValue}
        />
        {kind === 'cron' && (
          <Field name="timezone" label="timezone" value={timezone} set={setTimezone} placeholder="UTC" />
        )}
        <Field name="jitter_ms" label="jitter ms" value={jitter} set={setJitter} placeholder="0" />
        <label>
          overlap
          <select name="overlap" value={overlap} onChange={(e) => setOverlap((e.target as HTMLSelectElement).value)}>
            <option value="skip">skip</option>
            <option value="buffer_one">buffer one</option>
            <option value="allow">allow</option>
          </select>
        </label>
        <Field name="action" label="action (JSON: publish or machine)" value={action} set={setAction} rows={2} grow />
      </ActionForm>
    </div>
  );
}
