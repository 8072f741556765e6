import { render } from 'preact';
import './style.css';
import { Bus, Definitions, Ledger, Machines, Overview, Pipe, Sinks } from './pages';
import { useRoute } from './ui';

const PAGES = [
  { id: 'overview', label: 'Overview', C: Overview },
  { id: 'machines', label: 'Machines', C: Machines },
  { id: 'sinks', label: 'Sink tail', C: Sinks },
  { id: 'bus', label: 'Bus', C: Bus },
  { id: 'pipe', label: 'Pipe', C: Pipe },
  { id: 'ledger', label: 'Ledger', C: Ledger },
  { id: 'definitions', label: 'Definitions', C: Definitions },
] as const;

function App() {
  const { page, params } = useRoute();
  const current = PAGES.find((p) => p.id === page) ?? PAGES[0];
  const C = current.C;
  return (
    <div class="shell">
      <nav>
        <div class="brand">millrace</div>
        {PAGES.map((p) => (
          <a href={`#/${p.id}`} class={p.id === current.id ? 'active' : ''}>
            {p.label}
          </a>
        ))}
      </nav>
      <main>
        <C params={params} />
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
