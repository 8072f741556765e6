import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import './style.css';
import { can, refreshSession, signIn, signOut, useSession } from './auth';
import { Activity } from './pages/activity';
import { Audit } from './pages/audit';
import { Bulk } from './pages/bulk';
import { Bus } from './pages/bus';
import { Definitions } from './pages/definitions';
import { Ledger } from './pages/ledger';
import { Machines } from './pages/machines';
import { Overview } from './pages/overview';
import { Pauses } from './pages/pauses';
import { Pipe } from './pages/pipe';
import { Schedules } from './pages/schedules';
import { Shards } from './pages/shards';
import { Sinks } from './pages/sinks';
import { Topics } from './pages/topics';
import { useRoute } from './ui';

const PAGES = [
  { id: 'overview', label: 'Overview', C: Overview },
  { id: 'activity', label: 'Activity', C: Activity },
  { id: 'machines', label: 'Machines', C: Machines },
  { id: 'sinks', label: 'Sink tail', C: Sinks },
  { id: 'bus', label: 'Bus', C: Bus },
  { id: 'topics', label: 'Topic events', C: Topics },
  { id: 'pipe', label: 'Pipe', C: Pipe },
  { id: 'ledger', label: 'Ledger', C: Ledger },
  { id: 'schedules', label: 'Schedules', C: Schedules },
  { id: 'bulk', label: 'Bulk jobs', C: Bulk },
  { id: 'pauses', label: 'Paused', C: Pauses },
  { id: 'shards', label: 'Shards', C: Shards },
  { id: 'definitions', label: 'Definitions', C: Definitions },
  { id: 'audit', label: 'Audit', C: Audit },
] as const;

/** Asks for a token when the node wants one; it is kept in sessionStorage for this tab (never in a URL). */
function Login({ error }: { error?: string | undefined }) {
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  return (
    <div class="shell">
      <main>
        <section class="panel" data-testid="login">
          <h1>Sign in to millrace</h1>
          <p class="note">
            This node requires a bearer token (an API token, a JWT or the admin token). It is kept for this browser tab
            only.
          </p>
          {error && (
            <div class="banner error" role="alert">
              <code class="code">unauthenticated</code> {error}
            </div>
          )}
          <form
            class="define"
            onSubmit={(e) => {
              e.preventDefault();
              setBusy(true);
              void signIn(token).finally(() => setBusy(false));
            }}
          >
            <label>
              token{' '}
              <input
                name="token"
                type="password"
                autocomplete="off"
                value={token}
                onInput={(e) => setToken((e.target as HTMLInputElement).value)}
              />
            </label>
            <button type="submit" disabled={busy || token.trim() === ''}>
              Sign in
            </button>
          </form>
        </section>
      </main>
    </div>
  );
}

function App() {
  const session = useSession();
  const { page, params } = useRoute();
  useEffect(() => void refreshSession(), []);
  if (session.state === 'loading') return <div class="shell" />;
  if (session.state === 'login') return <Login error={session.error} />;
  const me = session.me;
  const current = PAGES.find((p) => p.id === page) ?? PAGES[0];
  const C = current.C;
  return (
    <div class="shell">
      <nav>
        <div class="brand">millrace</div>
        {PAGES.filter((p) => p.id !== 'audit' || can('audit:read')).map((p) => (
          <a href={`#/${p.id}`} class={p.id === current.id ? 'active' : ''}>
            {p.label}
          </a>
        ))}
        {me?.authentication && (
          <div class="whoami" data-testid="whoami">
            <code>{me.principal.id}</code>
            <button onClick={signOut}>Sign out</button>
          </div>
        )}
      </nav>
      <main>
        <C params={params} />
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
