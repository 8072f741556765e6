import { api, enc, itemsOr } from '../api';
import type { DeadLettersAnswer, NamespaceInfo, NodeInfo, Readiness, ShardsAnswer } from '../types';
import { Badge, Card, ErrorBanner, Table, short, useLoad, type PageProps } from '../ui';
import { loadSubscriptions, SubscriptionTable } from './bus';

export function Overview(_: PageProps) {
  const shards = useLoad(() => api<ShardsAnswer>('/v1/shards'), [], 2000);
  const ready = useLoad(
    () => api<Readiness>('/readyz').catch((e: Error): Readiness => ({ ok: false, problems: [String(e.message)] })),
    [],
    2000,
  );
  const subs = useLoad(() => loadSubscriptions(), [], 2000);
  const dead = useLoad(
    () => api<DeadLettersAnswer>('/v1/pipe/dead-letters?limit=500').then((r) => r.dead_letters),
    [],
    5000,
  );
  const ns = useLoad(() => itemsOr<NamespaceInfo, NamespaceInfo[]>('/v1/namespaces', []), [], 5000);
  const nodes = useLoad(() => itemsOr<NodeInfo, null>('/v1/nodes', null), [], 5000);
  const failed = (ns.data ?? []).filter((n) => (n.machines?.failed ?? 0) > 0);
  const r = ready.data;
  return (
    <section>
      <h1>Overview</h1>
      <ErrorBanner error={shards.error ?? subs.error} />
      {r && !r.ok && (
        <div class="banner error" role="alert">
          <code class="code">not_ready</code> {(r.problems ?? []).map((p) => short(p)).join('; ')}
        </div>
      )}
      <div class="cards">
        <Card label="Node" value={r ? (r.ok ? 'ready' : 'not ready') : '…'} tone={r?.ok ? 'ok' : 'bad'} />
        <Card label="Dialect" value={shards.data?.dialect ?? '…'} />
        <Card label="Shards" value={String(shards.data?.shards.length ?? '…')} />
        {nodes.data && <Card label="Nodes" value={String(nodes.data.length)} />}
        <Card label="Subscription lag" value={String((subs.data ?? []).reduce((a, s) => a + s.lag_total, 0))} />
        <Card
          label="Pipe dead letters"
          value={dead.data ? String(dead.data.length) + (dead.data.length >= 500 ? '+' : '') : '…'}
          tone={dead.data?.length ? 'bad' : 'ok'}
        />
        <Card
          label="Failed machines"
          value={String(failed.reduce((a, n) => a + (n.machines?.failed ?? 0), 0))}
          tone={failed.length ? 'bad' : 'ok'}
        />
      </div>
      <h2>Shards</h2>
      <Table
        testid="shards"
        head={['shard', 'hash range', 'head position']}
        rows={(shards.data?.shards ?? []).map((s) => [
          <code>{s.name}</code>,
          <code class="small">
            {s.from.slice(0, 8)}… – {s.to === 'end' ? 'end' : `${s.to.slice(0, 8)}…`}
          </code>,
          s.head,
        ])}
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
                  {Object.entries(n.sessions)
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
          <Table
            head={['namespace', 'failed', 'total']}
            rows={failed.map((n) => [
              <a href={`#/machines?ns=${enc(n.name)}&status=failed`}>{n.name}</a>,
              n.machines?.failed ?? 0,
              n.machines?.total ?? 0,
            ])}
          />
        </>
      )}
    </section>
  );
}
