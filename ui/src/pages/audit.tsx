import { api, enc } from '../api';
import { useSession } from '../auth';
import type { AuditEntry, Paged } from '../types';
import { ErrorBanner, Notice, Pager, Table, useLoad, usePages, when, type PageProps } from '../ui';

/** The audit trail of sensitive actions (`GET /v1/audit`, permission audit:read), oldest first, a page at a time. */
export function Audit(_: PageProps) {
  useSession();
  const pages = usePages('audit');
  const page = useLoad(
    () => api<Paged<AuditEntry>>(`/v1/audit?limit=100${pages.cursor ? `&cursor=${enc(pages.cursor)}` : ''}`),
    [pages.cursor],
    5000,
  );
  const d = page.data;
  return (
    <section>
      <h1>Audit</h1>
      <Notice>
        Definition changes, tokens, repairs, removals, redrives and deletions, written to the log stream{' '}
        <code>millrace.audit</code>: hash-chained like every event, so <code>millrace verify</code> detects an edited or
        removed entry. Each action has a <em>requested</em> entry (before it ran) and a <em>completed</em> one with the
        answer's status.
      </Notice>
      <ErrorBanner error={page.error} />
      <Table
        testid="audit"
        empty="no audited action yet"
        head={['seq', 'at', 'phase', 'principal', 'action', 'resource', 'status', 'request id']}
        rows={(d?.items ?? []).map((a) => [
          a.seq,
          when(a.at),
          a.phase,
          <code>{a.principal}</code>,
          <code>{a.action}</code>,
          <code class="small">{a.resource}</code>,
          a.status ?? '—',
          <code class="small">{a.request_id}</code>,
        ])}
      />
      <Pager pages={pages} next={d?.next_cursor ?? null} />
    </section>
  );
}
