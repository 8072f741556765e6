import { useEffect, useRef, useState } from 'preact/hooks';
import { api, enc, noRoute } from '../api';
import type { AccountsAnswer, BalancesAnswer, LedgerEventsAnswer, LedgerTypes, TurnoversAnswer } from '../types';
import {
  ErrorBanner,
  Notice,
  Pager,
  Table,
  go,
  short,
  useAction,
  useLoad,
  usePages,
  when,
  type PageProps,
} from '../ui';

const groupLabel = (g: Record<string, unknown>): string => {
  const e = Object.entries(g);
  return e.length === 0
    ? 'total'
    : e
        .map(([k, v]) => `${k}=${v === null || v === undefined ? '∅' : typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(', ');
};

export function Ledger({ params }: PageProps) {
  const types = useLoad(
    () => api<LedgerTypes>('/v1/ledger/types').catch((e: unknown) => (noRoute(e) ? null : Promise.reject(e))),
    [],
  );
  const accountTypes = types.data?.accounts ?? {};
  return (
    <section>
      <h1>Ledger</h1>
      <ErrorBanner error={types.error} />
      <AccountBrowser types={Object.keys(accountTypes)} params={params} />
      <Explorer accountTypes={accountTypes} loaded={types.data !== undefined} />
    </section>
  );
}

/**
 * The accounts of a type with their balances (`GET /v1/ledger/accounts`),
 * a page at a time; choosing one shows its events (`POST /v1/ledger/events`).
 */
function AccountBrowser({ types, params }: { types: string[]; params: URLSearchParams }) {
  const type = params.get('type') ?? '';
  const account = params.get('account') ?? '';
  const pages = usePages(type);
  const list = useLoad(
    () =>
      type
        ? api<AccountsAnswer>(
            `/v1/ledger/accounts?type=${enc(type)}&limit=50${pages.cursor ? `&cursor=${enc(pages.cursor)}` : ''}`,
          )
        : Promise.resolve(null),
    [type, pages.cursor],
    5000,
  );
  return (
    <div class="panel" data-testid="accounts">
      <h2>Accounts</h2>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          account type
          <select
            name="browse_type"
            value={type}
            onChange={(e) => go('ledger', { type: (e.target as HTMLSelectElement).value })}
          >
            <option value="">—</option>
            {types.map((t) => (
              <option value={t}>{t}</option>
            ))}
          </select>
        </label>
      </form>
      <ErrorBanner error={list.error} />
      {!type && <Notice>Choose an account type to list its accounts.</Notice>}
      {type && list.data && (
        <>
          <p class="hint">balances at {when(list.data.dt)}</p>
          <Table
            testid="account-list"
            empty="no account of this type has events"
            head={['account', 'debit', 'credit']}
            rows={list.data.items.map((a) => {
              const key = JSON.stringify(a.key);
              return [
                <a href={`#/ledger?type=${enc(type)}&account=${enc(key)}`} class={key === account ? 'active' : ''}>
                  {groupLabel(a.key)}
                </a>,
                <span class="num">{a.debit}</span>,
                <span class="num">{a.credit}</span>,
              ];
            })}
          />
          <Pager pages={pages} next={list.data.next_cursor} />
        </>
      )}
      {type && account && <AccountEvents type={type} account={account} />}
    </div>
  );
}

function AccountEvents({ type, account }: { type: string; account: string }) {
  const pages = usePages(`${type}\u0000${account}`);
  const events = useLoad(() => {
    const key = JSON.parse(account) as Record<string, string>;
    return api<LedgerEventsAnswer>('/v1/ledger/events', {
      method: 'POST',
      body: {
        dt_from: '1970-01-01T00:00:00Z',
        dt_to: new Date(Date.now() + 366 * 86400_000).toISOString(),
        accounts: [{ type, key }],
        limit: 50,
        ...(pages.cursor ? { cursor: pages.cursor } : {}),
      },
    });
  }, [type, account, pages.cursor]);
  return (
    <>
      <h3>Events of {groupLabel(JSON.parse(account) as Record<string, string>)}</h3>
      <ErrorBanner error={events.error} />
      <Table
        testid="account-events"
        empty="no events"
        head={['dt', 'side', 'amount', 'aux', 'batch', 'info']}
        rows={(events.data?.events ?? []).map((e) => [
          when(e.dt),
          e.side,
          <span class="num">{e.amount}</span>,
          groupLabel(e.aux),
          <code class="small">{e.batch_id}</code>,
          <code>{short(e.info ?? '')}</code>,
        ])}
      />
      <Pager pages={pages} next={events.data?.next_cursor ?? null} />
    </>
  );
}

/** Balance and turnover of one account (or a grouping), at a date and over a period. */
function Explorer({ accountTypes, loaded }: { accountTypes: LedgerTypes['accounts']; loaded: boolean }) {
  const [type, setType] = useState('');
  const [key, setKey] = useState('{}');
  const [groupBy, setGroupBy] = useState('');
  const [dt, setDt] = useState(() => new Date().toISOString());
  const [from, setFrom] = useState(() => new Date(Date.now() - 30 * 86400_000).toISOString());
  const [result, setResult] = useState<{ balances: BalancesAnswer; turnovers: TurnoversAnswer } | null>(null);
  const act = useAction();
  const first = useRef(true);
  useEffect(() => {
    const names = Object.keys(accountTypes);
    if (first.current && names.length > 0 && !type) {
      first.current = false;
      const t = names[0]!;
      setType(t);
      setKey(JSON.stringify(Object.fromEntries((accountTypes[t]?.key ?? []).map((k) => [k, ''])), null, 0));
    }
  }, [loaded]);
  const account = () => {
    let k: unknown;
    try {
      k = JSON.parse(key);
    } catch {
      throw new Error('account key is not valid JSON');
    }
    const g = groupBy
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    return { type, key: k, ...(g.length ? { group_by: g } : {}) };
  };
  const explore = () =>
    act.run('', async () => {
      const a = account();
      const [b, t] = await Promise.all([
        api<BalancesAnswer>('/v1/ledger/balances', { method: 'POST', body: { dt, accounts: [a] } }),
        api<TurnoversAnswer>('/v1/ledger/turnovers', {
          method: 'POST',
          body: { dt_from: from, dt_to: dt, accounts: [a] },
        }),
      ]);
      setResult({ balances: b, turnovers: t });
    });
  const chosen = accountTypes[type];
  return (
    <div class="panel" data-testid="explorer">
      <h2>Balance and turnover</h2>
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
              {Object.keys(accountTypes).map((t) => (
                <option value={t}>{t}</option>
              ))}
            </select>
          ) : (
            <input name="type" value={type} onInput={(e) => setType((e.target as HTMLInputElement).value)} />
          )}
        </label>
        <label>
          key (JSON) <input name="key" value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          group by{' '}
          <input
            name="group_by"
            value={groupBy}
            placeholder={(chosen?.groupings ?? []).map((g) => g.join(',')).join(' or ')}
            onInput={(e) => setGroupBy((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          from <input name="dt_from" value={from} onInput={(e) => setFrom((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          at / to <input name="dt" value={dt} onInput={(e) => setDt((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" disabled={!type || act.busy}>
          Show
        </button>
      </form>
      {chosen && (
        <p class="hint">
          key: {chosen.key.join(', ')}; aux: {chosen.aux.join(', ') || '—'}
        </p>
      )}
      <ErrorBanner error={act.error} />
      {result !== null && (
        <>
          <h3>Balance at {when(dt)}</h3>
          <Table
            testid="balances"
            head={['group', 'debit', 'credit']}
            rows={result.balances.balances.flatMap((b) =>
              b.groups.map((g) => [
                groupLabel(g.group),
                <span class="num">{g.debit}</span>,
                <span class="num">{g.credit}</span>,
              ]),
            )}
          />
          <h3>
            Turnover {when(from)} – {when(dt)}
          </h3>
          <Table
            testid="turnovers"
            head={['group', 'debit at start', 'credit at start', 'debit turnover', 'credit turnover']}
            rows={result.turnovers.turnovers.flatMap((b) =>
              b.groups.map((g) => [
                groupLabel(g.group),
                ...[g.debit_init, g.credit_init, g.debit_turnover, g.credit_turnover].map((v) => (
                  <span class="num">{v}</span>
                )),
              ]),
            )}
          />
        </>
      )}
    </div>
  );
}
