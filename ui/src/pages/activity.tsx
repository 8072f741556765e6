import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import { Chart } from '../chart';
import type { SeriesAnswer } from '../types';
import { ErrorBanner, Notice, type PageProps } from '../ui';

const RATES = ['publish', 'deliver', 'call', 'step', 'push'] as const;
const LATENCIES = ['publish', 'call', 'step', 'push'] as const;
/** At most one hour of samples is kept by the node; the page keeps what it fetched, merged. */
const KEEP_MS = 3_600_000;

/** Appends the samples of `more` to `have` (the node answers only those after `since`), dropping what is older than an hour. */
function merge(have: SeriesAnswer | null, more: SeriesAnswer): SeriesAnswer {
  if (have === null) return more;
  const t = [...have.t, ...more.t];
  const names = new Set([...Object.keys(have.series), ...Object.keys(more.series)]);
  const series: Record<string, Array<number | null>> = {};
  for (const n of names)
    series[n] = [...(have.series[n] ?? have.t.map(() => null)), ...(more.series[n] ?? more.t.map(() => null))];
  const last = t[t.length - 1] ?? 0;
  let from = 0;
  while (from < t.length && t[from]! < last - KEEP_MS) from++;
  for (const n of names) series[n] = series[n]!.slice(from);
  return { ...more, t: t.slice(from), series };
}

/**
 * This node's activity over the last hour (`GET /v1/metrics/series`): rates,
 * subscription lag and p99 latencies, sampled by the node and kept in its
 * memory; the page asks for the new samples every few seconds.
 */
export function Activity(_: PageProps) {
  const [data, setData] = useState<SeriesAnswer | null>(null);
  const [error, setError] = useState<unknown>(undefined);
  useEffect(() => {
    let live = true;
    let have: SeriesAnswer | null = null;
    const load = async () => {
      try {
        const since = have?.t[have.t.length - 1];
        const more = await api<SeriesAnswer>(`/v1/metrics/series${since === undefined ? '' : `?since=${since}`}`);
        if (!live) return;
        have = merge(have, more);
        setData(have);
        setError(undefined);
      } catch (e) {
        if (live) setError(e);
      }
    };
    void load();
    const timer = setInterval(() => void load(), 2000);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, []);
  const col = (name: string) => data?.series[name] ?? (data?.t ?? []).map(() => null);
  return (
    <section>
      <h1>Activity</h1>
      <Notice>
        This node's own counters, sampled every {data ? data.interval_ms / 1000 : '…'} s and kept in its memory for the
        last hour (a restart starts afresh; each node shows its own).
      </Notice>
      <ErrorBanner error={error} />
      {data && data.t.length < 2 && <Notice>Collecting the first samples…</Notice>}
      {data && (
        <div class="charts">
          <Chart
            testid="chart-rates"
            title="Rates (per second)"
            unit=""
            t={data.t}
            lines={RATES.map((k) => ({ label: k, values: col(`${k}_per_s`) }))}
          />
          <Chart
            testid="chart-lag"
            title="Subscription lag (events)"
            unit=""
            t={data.t}
            lines={[{ label: 'lag', values: col('subscription_lag') }]}
          />
          <Chart
            testid="chart-p99"
            title="p99 latency (ms)"
            unit=""
            t={data.t}
            lines={LATENCIES.map((k) => ({ label: k, values: col(`p99_${k}_ms`) }))}
          />
        </div>
      )}
    </section>
  );
}
