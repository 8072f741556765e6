import { useEffect, useState } from 'preact/hooks';
import { api, enc, eventStream, itemsOr } from '../api';
import type { ShardsAnswer, SinkEvent, SinkInfo } from '../types';
import { Badge, ErrorBanner, Table, go, short, useLoad, when, type PageProps } from '../ui';

export function Sinks({ params }: PageProps) {
  const sink = params.get('sink') ?? '';
  const shard = params.get('shard') ?? '';
  const known = useLoad(() => itemsOr<SinkInfo, SinkInfo[]>('/v1/sinks', []), []);
  const shards = useLoad(() => api<ShardsAnswer>('/v1/shards').then((r) => r.shards.map((s) => s.name)), []);
  const [name, setName] = useState(sink);
  useEffect(() => setName(sink), [sink]);
  const [events, setEvents] = useState<SinkEvent[]>([]);
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
    api(`/v1/sinks/${enc(sink)}/events?shard=${enc(targets[0] ?? '')}&after=0&limit=1`).catch(
      (e: unknown) => (setError(e), setState('error')),
    );
    const streams = targets.map((sh) =>
      eventStream(
        `/v1/sinks/${enc(sink)}/stream?shard=${enc(sh)}&after=0`,
        {
          open: () => setState((s) => (s === 'error' ? s : 'live')),
          event: (type, data) => {
            if (type === 'event') setEvents((prev) => [JSON.parse(data) as SinkEvent, ...prev].slice(0, 200));
          },
          error: () => setState((s) => (s === 'error' ? s : 'connecting')),
        },
        (lastId) => `/v1/sinks/${enc(sink)}/stream?shard=${enc(sh)}&after=${enc(lastId)}`,
      ),
    );
    return () => streams.forEach((close) => close());
  }, [sink, shard, shardList?.join(',')]);
  const sinkNames = (known.data ?? []).map((k) => k.name);
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
          <input
            name="sink"
            list="sink-names"
            value={name}
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
            placeholder={sinkNames[0] ?? 'main'}
          />
          <datalist id="sink-names">
            {sinkNames.map((n) => (
              <option value={n} />
            ))}
          </datalist>
        </label>
        {shardList !== undefined && shardList.length > 1 && (
          <label>
            shard
            <select
              name="shard"
              value={shard}
              onChange={(e) => go('sinks', { sink, shard: (e.target as HTMLSelectElement).value })}
            >
              <option value="">all</option>
              {shardList.map((s) => (
                <option value={s}>{s}</option>
              ))}
            </select>
          </label>
        )}
        <button type="submit">Tail</button>
        {sink && <Badge value={state} />}
      </form>
      <ErrorBanner error={error ?? known.error ?? shards.error} />
      {!sink && sinkNames.length > 0 && (
        <Table
          head={['sink', 'namespaces']}
          rows={(known.data ?? []).map((k) => [
            <a href={`#/sinks?sink=${enc(k.name)}`}>{k.name}</a>,
            k.namespaces.join(', '),
          ])}
        />
      )}
      <Table
        testid="sink-events"
        head={['pos', 'shard', 'namespace', 'machine', 'event', 'created', 'data']}
        empty={sink ? 'waiting for events…' : 'choose a sink'}
        rows={events.map((e) => [
          e.pos,
          e.shard,
          e.ns,
          <a href={`#/machines?ns=${enc(e.ns)}&id=${enc(e.machine_id)}`}>{e.machine_id}</a>,
          e.event_id,
          when(e.created_at),
          <code>{short(e.data)}</code>,
        ])}
      />
    </section>
  );
}
