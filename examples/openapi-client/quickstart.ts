/**
 * The quick start through a client generated from the node's OpenAPI
 * document, with no hand-written types:
 *
 *   npx openapi-typescript http://127.0.0.1:7070/openapi.json -o examples/openapi-client/api.d.ts
 *   npx tsx examples/openapi-client/quickstart.ts
 *
 * MILLRACE_URL picks another node, MILLRACE_TOKEN sends a bearer token.
 */
import createClient from 'openapi-fetch';
import type { paths } from './api.js';

const baseUrl = process.env.MILLRACE_URL ?? 'http://127.0.0.1:7070';
const token = process.env.MILLRACE_TOKEN;
const client = createClient<paths>({ baseUrl, ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}) });

/** The answer of a call that must succeed; otherwise the error body's stable code. */
function ok<T>(r: { data?: T; error?: { error: { code: string; message: string } }; response: Response }): T {
  if (r.error !== undefined) throw new Error(`${r.response.status} ${r.error.error.code}: ${r.error.error.message}`);
  return r.data as T;
}
const show = (step: string, v: unknown) => console.log(`${step} ${JSON.stringify(v)}`);

// 1. A bus topic, defined at runtime.
const topic = ok(
  await client.PUT('/v1/bus/topics/{name}', {
    params: { path: { name: 'orders' } },
    body: { description: 'quick start' },
  }),
);
show('topic', { name: topic.name, source: topic.source });

// 2. A subscription reading it from the beginning, then publish two events.
ok(
  await client.PUT('/v1/bus/subscriptions/{name}', {
    params: { path: { name: 'billing' } },
    body: { topics: ['orders'], start: 'earliest' },
  }),
);
const published = ok(
  await client.POST('/v1/bus/topics/{topic}/events', {
    params: { path: { topic: 'orders' } },
    body: {
      events: [
        { key: 'o-1', type: 'created', data: { total: 10 } },
        { key: 'o-2', type: 'created', data: { total: 5 } },
      ],
    },
  }),
);
show('published', published.positions?.length);

// 3. The subscription, with its lag (the events are delivered over /stream, server-sent events).
const sub = ok(await client.GET('/v1/bus/subscriptions/{name}', { params: { path: { name: 'billing' } } }));
show('subscription', sub.name);

// 4. A machine namespace with the built-in example processor, a machine, a call.
ok(
  await client.PUT('/v1/namespaces/{name}', {
    params: { path: { name: 'counters' } },
    body: { processor: { in_process: 'example.counter' } },
  }),
);
const started = ok(
  await client.POST('/v1/namespaces/{ns}/machines/{id}/start', {
    params: { path: { ns: 'counters', id: 'c1' } },
    body: { args: 10 },
  }),
);
show('started', started.response);
const called = ok(
  await client.POST('/v1/namespaces/{ns}/machines/{id}/call', {
    params: { path: { ns: 'counters', id: 'c1' } },
    body: { args: 5 },
  }),
);
show('called', called.response);
const machines = ok(
  await client.GET('/v1/namespaces/{ns}/machines', { params: { path: { ns: 'counters' }, query: { limit: 10 } } }),
);
show('machines', machines.items?.length);

// Errors come back typed too: an unknown topic answers 404 with a stable code.
const missing = await client.GET('/v1/bus/topics/{name}', { params: { path: { name: 'no-such-topic' } } });
show('missing', { status: missing.response.status, code: missing.error?.error.code });
