import { useState } from 'preact/hooks';
import { api, enc, items } from '../api';
import { allowed } from '../auth';
import type { Definition } from '../types';
import {
  ActionForm,
  Badge,
  ErrorBanner,
  Field,
  Notice,
  Table,
  parseJsonInput,
  short,
  useAction,
  useLoad,
  type PageProps,
} from '../ui';

/** What can be defined at runtime: machine namespaces, pipe kinds, bus topics. */
const DEFINABLE = [
  {
    id: 'namespaces',
    title: 'Machine namespaces',
    path: '/v1/namespaces',
    admin: 'machines:admin',
    example: '{"processor": {"in_process": "example.counter"}}',
  },
  {
    id: 'kinds',
    title: 'Pipe kinds',
    path: '/v1/pipe/kinds',
    admin: 'pipe:admin',
    example: '{"handler": "http://127.0.0.1:8080/sessions", "max_repeats": 5}',
  },
  {
    id: 'topics',
    title: 'Bus topics',
    path: '/v1/bus/topics',
    admin: 'bus:admin',
    example: '{"description": "orders of the shop"}',
  },
] as const;

export function Definitions(_: PageProps) {
  return (
    <section>
      <h1>Definitions</h1>
      <Notice>
        Namespaces, kinds and topics defined here are stored in the shard database and seen by every node without a
        restart. Those of the config file are shown too; they win on a name conflict and cannot be changed here.
      </Notice>
      {DEFINABLE.map((d) => (
        <DefinitionSection key={d.id} {...d} />
      ))}
    </section>
  );
}

function DefinitionSection({
  id,
  title,
  path,
  example,
  admin,
}: {
  id: string;
  title: string;
  path: string;
  example: string;
  admin: string;
}) {
  const list = useLoad(() => items<Definition>(path), [path], 5000);
  const act = useAction();
  const [name, setName] = useState('');
  const [body, setBody] = useState(example);
  const save = () =>
    act.run(`saved ${name.trim()}`, async () => {
      const parsed = parseJsonInput(body, 'the definition');
      if (!name.trim()) throw new Error('give it a name');
      await api(`${path}/${enc(name.trim())}`, { method: 'PUT', body: parsed });
      list.reload();
    });
  return (
    <div class="panel" data-testid={`defs-${id}`}>
      <h2>{title}</h2>
      <ErrorBanner error={list.error} />
      <Table
        testid={`defs-${id}-list`}
        head={['name', 'source', 'definition', '']}
        rows={(list.data ?? []).map((d) => [
          <code>{d.name}</code>,
          <Badge value={d.source} />,
          <code>{short(d.definition)}</code>,
          d.source === 'runtime' ? (
            <span class="actions">
              <button
                onClick={() => {
                  setName(d.name);
                  setBody(JSON.stringify(d.definition, null, 2));
                }}
              >
                Edit
              </button>
              <button
                class="danger"
                {...allowed(`${admin}:${d.name}`)}
                onClick={() =>
                  confirm(`Delete ${d.name}?`) &&
                  act.run(
                    `deleted ${d.name}`,
                    async () => (await api(`${path}/${enc(d.name)}`, { method: 'DELETE' }), list.reload()),
                  )
                }
              >
                Delete
              </button>
            </span>
          ) : (
            <span class="note">config file</span>
          ),
        ])}
      />
      <ActionForm
        act={act}
        onSubmit={() => void save()}
        submit="Save"
        {...(name.trim() && allowed(`${admin}:${name.trim()}`).disabled ? { disabled: true } : {})}
      >
        <Field name="name" label="name" value={name} set={setName} placeholder="name" />
        <Field name="definition" label="definition (JSON)" value={body} set={setBody} rows={3} grow />
      </ActionForm>
    </div>
  );
}
