import { useEffect, useState } from 'preact/hooks';
import { api, enc } from '../api';
import { can } from '../auth';
import type { OwnedRange, ShardInfo, ShardsAnswer, SplitJob, SplitPhase } from '../types';
import {
  ActionForm,
  Badge,
  ErrorBanner,
  Field,
  ProgressBar,
  Table,
  useAction,
  useLoad,
  when,
  type PageProps,
} from '../ui';

/** The phases a split walks, in order (`aborted` ends it off this path). */
const STEPS: readonly SplitPhase[] = ['copy', 'fenced', 'switched', 'cleanup', 'done'];
/** Share of the bar the copy takes; the steps after it share the rest. */
const COPY_SHARE = 0.6;

/**
 * How far a split is, 0 to 1: during the copy, how far `copied_pos` is
 * towards the source's head (scaled to the copy's share of the bar); after
 * it, one equal step per phase reached.
 */
export function splitProgress(j: Pick<SplitJob, 'phase' | 'copied_pos' | 'head'>): number {
  if (j.phase === 'copy') return COPY_SHARE * (j.head <= 0 ? 1 : Math.min(1, j.copied_pos / j.head));
  const step = STEPS.indexOf(j.phase);
  if (step < 0) return 0;
  return COPY_SHARE + ((1 - COPY_SHARE) * step) / (STEPS.length - 1);
}

const running = (j: SplitJob): boolean => j.phase !== 'done' && j.phase !== 'aborted';

/** A hash bound, short (its first 8 hex digits), the whole of it on hover; the end of the hash space (2^160) is `end`. */
function Bound({ value }: { value: string }) {
  const end = value === 'end' || value.replace(/^0+/, '').length > 40;
  return <span title={value}>{end ? 'end' : `${value.slice(0, 8)}…`}</span>;
}

function Ranges({ ranges }: { ranges: OwnedRange[] }) {
  if (ranges.length === 0) return <span class="note">none</span>;
  return (
    <span>
      {ranges.map((r) => (
        <div data-range={`${r.from}-${r.to}`}>
          <code class="small">
            <Bound value={r.from} /> – <Bound value={r.to} />
          </code>{' '}
          {r.fenced && <Badge value="fenced" />}
        </div>
      ))}
    </span>
  );
}

/** The ranges a shard owns; an older node's answer has only the first. */
const rangesOf = (s: ShardInfo): OwnedRange[] =>
  s.ranges ?? (s.from === '' ? [] : [{ from: s.from, to: s.to, fenced: false }]);

/** A split's phases, the ones passed and the current one marked. */
function Steps({ job }: { job: SplitJob }) {
  const at = STEPS.indexOf(job.phase);
  return (
    <span class="small">
      {STEPS.map((s, i) => (
        <span key={s} class={i === at ? 'step current' : i < at ? 'step passed' : 'step'}>
          {i > 0 && ' › '}
          {s}
        </span>
      ))}
    </span>
  );
}

/** Shards with their owned hash ranges, epochs and sizes; split jobs with their progress; a form that starts a split. */
export function Shards(_: PageProps) {
  const [fast, setFast] = useState(false);
  // Every half second while a split runs (its progress moves), every 5 s otherwise.
  const shards = useLoad(() => api<ShardsAnswer>('/v1/shards'), [], fast ? 500 : 5000);
  const splits = shards.data?.splits ?? [];
  const anyRunning = splits.some(running);
  useEffect(() => setFast(anyRunning), [anyRunning]);
  const list = shards.data?.shards ?? [];
  return (
    <section>
      <h1>Shards</h1>
      <ErrorBanner error={shards.error} />
      <Table
        testid="shard-ranges"
        head={['shard', 'owned hash ranges', 'epoch', 'events', 'head position', '']}
        rows={list.map((s) => [
          <code data-shard={s.name}>{s.name}</code>,
          <Ranges ranges={rangesOf(s)} />,
          s.epoch ?? '—',
          s.events ?? '—',
          s.head,
          s.spare ? <Badge value="spare" /> : '',
        ])}
      />
      <h2>Splits</h2>
      <Table
        testid="splits"
        empty="no split yet"
        head={[
          'split',
          'source → target',
          'moved range',
          'phase',
          'progress',
          'events copied',
          'rows moved',
          'updated',
        ]}
        rows={[...splits].reverse().map((j) => [
          <code class="small" data-split={j.id}>
            {j.id.slice(0, 8)}
          </code>,
          <span>
            <code>{j.source}</code> → <code>{j.target}</code>
          </span>,
          <code class="small">
            <Bound value={j.from} /> – <Bound value={j.to} />
          </code>,
          <span>
            <Badge value={j.phase} />{' '}
            {j.phase === 'aborted' ? <span class="reason">{j.aborted}</span> : <Steps job={j} />}
          </span>,
          j.phase === 'aborted' ? '' : <ProgressBar value={splitProgress(j)} testid={`split-progress-${j.id}`} />,
          j.copied_events,
          j.rows_moved,
          when(j.updated_at),
        ])}
      />
      <h2>Start a split</h2>
      <p class="note">
        Moves the upper part of a shard's hash range, from the hex prefix on, to an empty spare shard, while it serves.
      </p>
      <SplitForm shards={list} onStarted={() => (setFast(true), shards.reload())} />
    </section>
  );
}

function SplitForm({ shards, onStarted }: { shards: ShardInfo[]; onStarted: () => void }) {
  const act = useAction();
  const owners = shards.filter((s) => rangesOf(s).length > 0).map((s) => s.name);
  const spares = shards.filter((s) => s.spare === true).map((s) => s.name);
  const [source, setSource] = useState('');
  const [at, setAt] = useState('');
  const [target, setTarget] = useState('');
  const src = source || owners[0] || '';
  return (
    <ActionForm
      act={act}
      submit="Split"
      disabled={!can('log:admin') || src === '' || at.trim() === '' || (target.trim() || spares[0] || '') === ''}
      onSubmit={() =>
        void act.run('', async () => {
          const job = await api<SplitJob>(`/v1/shards/${enc(src)}/split`, {
            method: 'POST',
            body: { at: at.trim(), to: target.trim() || spares[0] || '' },
          });
          onStarted();
          return `split ${job.id} of ${job.source} started (to ${job.target})`;
        })
      }
    >
      <label>
        source{' '}
        <select name="source" value={src} onChange={(e) => setSource((e.target as HTMLSelectElement).value)}>
          {shards.map((s) => (
            <option value={s.name}>{s.name}</option>
          ))}
        </select>
      </label>
      <Field name="at" label="at (hex)" value={at} set={setAt} placeholder="8" />
      <label>
        target (a spare: name, URL or file){' '}
        <input
          name="target"
          list="spare-shards"
          value={target}
          placeholder={spares[0] ?? ''}
          onInput={(e) => setTarget((e.target as HTMLInputElement).value)}
        />
        <datalist id="spare-shards">
          {spares.map((n) => (
            <option value={n} />
          ))}
        </datalist>
      </label>
      {!can('log:admin') && <span class="note">your token lacks log:admin</span>}
    </ActionForm>
  );
}
