/**
 * THE table: every HTTP route and every gRPC method, mapped to the
 * permission it needs. A route or method missing here is refused to
 * everyone (deny by default), and test/auth/coverage.test.ts fails on it.
 *
 * Permissions are `<face>:<action>:<resource>` (or `<face>:<action>` where
 * there is no resource). The resource is taken from the request in the same
 * way on every transport: from the path parameters where the route names it,
 * else from the body (or, on gRPC, from the message, which is the body).
 */

/** What a rule reads a resource from: path parameters, query string and body (gRPC: the request message as body). */
export interface AccessInput {
  params: Record<string, unknown>;
  query: Record<string, unknown>;
  body: unknown;
}

/** Look-ups some resources need (the kind of a pipe session is not in its id). Bound by the transport from the faces. */
export interface ResourceLookup {
  /** The kind of a pipe session (any state), or null when there is no such session. */
  pipeSessionKind(id: string): Promise<string | null>;
  /** The name of a pipe kind given by name or code, or null when unknown. */
  pipeKindName(kind: string): string | null;
}

export const noLookup: ResourceLookup = { pipeSessionKind: async () => null, pipeKindName: () => null };

/** Open routes: served without credentials (`metrics` and `openapi` only when configured open). */
export type OpenRule = { open: 'always' | 'metrics' | 'openapi' };

export interface PermissionRule {
  /** `<face>:<action>`. */
  permission: string;
  /**
   * The resources the request touches; each must be granted. Omitted: the
   * permission has no resource (`log:read`, `auth:admin`). An empty answer
   * means "every resource" (`*`), except for a stream's message, where it
   * means the message names no resource (an ack, or a malformed message the
   * handler refuses) and needs nothing more than the call did.
   */
  resources?: (input: AccessInput, lookup: ResourceLookup) => string[] | Promise<string[]>;
  /** Further permissions some requests need (e.g. defining a subscription while subscribing). */
  also?: (input: AccessInput) => string[];
  /**
   * gRPC streams: the call needs the permission on some resource when it
   * opens, and each message is checked for its own resources (`resources`
   * and `also` then read one message).
   */
  perMessage?: true;
  /**
   * A sensitive action written to the audit trail in the log (src/auth/audit.ts):
   * its name there, e.g. `machine.repair`.
   */
  audit?: string;
  /** Any authenticated principal may (no permission is checked): `GET /v1/auth/whoami`. */
  anyPrincipal?: true;
}

export type Rule = OpenRule | PermissionRule;

export const isOpenRule = (r: Rule): r is OpenRule => 'open' in r;

// ---- resource readers, shared by HTTP and gRPC ----

const str = (v: unknown): string => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '');
const param =
  (name: string) =>
  (i: AccessInput): string[] => [str(i.params[name])];
const all = (): string[] => ['*'];
const obj = (v: unknown): Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const uniq = (xs: string[]): string[] => [...new Set(xs)];

/** Ledger types a body names: `type` at the top, in `accounts[]`, `events[].account`, `locks[]` and `states[]`. */
export function ledgerTypes(i: AccessInput): string[] {
  const b = obj(i.body);
  const out: string[] = [];
  if (b.type !== undefined) out.push(str(b.type));
  for (const a of list(b.accounts)) out.push(str(obj(a).type));
  for (const e of list(b.events)) out.push(str(obj(obj(e).account).type));
  for (const l of list(b.locks)) out.push(str(obj(l).type));
  for (const s of list(b.states)) out.push(str(obj(s).type));
  return uniq(out);
}

/** Topics a publish names: the path's `topic` (HTTP) or each event's `topic` (gRPC). */
export function publishTopics(i: AccessInput): string[] {
  if (i.params.topic !== undefined) return [str(i.params.topic)];
  return uniq(list(obj(i.body).events).map((e) => str(obj(e).topic)));
}

const kindName = (k: unknown, l: ResourceLookup): string => l.pipeKindName(str(k)) ?? str(k);

/** The kind of the session named by the path's `id`; `*` (every kind) for an unknown session. */
async function sessionKind(id: unknown, l: ResourceLookup): Promise<string[]> {
  return [(await l.pipeSessionKind(str(id))) ?? '*'];
}

/** The kind of a pipe stream request: `new` names it, the other operations name a session. */
async function pipeRequestKind(req: unknown, l: ResourceLookup): Promise<string[]> {
  const r = obj(req);
  if (r.new !== undefined && r.new !== null) return [kindName(obj(r.new).kind, l)];
  for (const op of ['append', 'replace', 'store', 'delete']) {
    if (r[op] !== undefined && r[op] !== null) return sessionKind(obj(r[op]).session, l);
  }
  return [];
}

/** What a schedule's action does, as permissions: a machine operation on its namespace, or a publish on its topic. */
function scheduleActionPermissions(i: AccessInput): string[] {
  const a = obj(obj(i.body).action);
  if (a.machine !== undefined) return [`machines:write:${str(obj(a.machine).namespace)}`];
  if (a.publish !== undefined) return [`bus:publish:${str(obj(a.publish).topic)}`];
  return [];
}

// ---- the table ----

const catalog = (path: string, face: string, read: string, write: string, what: string): Record<string, Rule> => ({
  [`GET ${path}`]: { permission: `${face}:${read}`, resources: all },
  [`GET ${path}/:name`]: { permission: `${face}:${read}`, resources: param('name') },
  [`PUT ${path}/:name`]: { permission: `${face}:${write}`, resources: param('name'), audit: `${what}.put` },
  [`DELETE ${path}/:name`]: { permission: `${face}:${write}`, resources: param('name'), audit: `${what}.delete` },
});

const machineRoutes = (p: string, withStart: boolean): Record<string, Rule> => {
  const ns = param('ns');
  return {
    ...(withStart ? { [`POST ${p}/start`]: { permission: 'machines:write', resources: ns } } : {}),
    [`POST ${p}/call`]: { permission: 'machines:write', resources: ns },
    [`POST ${p}/notify`]: { permission: 'machines:write', resources: ns },
    [`POST ${p}/repair`]: { permission: 'machines:repair', resources: ns, audit: 'machine.repair' },
    [`POST ${p}/simple-repair`]: { permission: 'machines:repair', resources: ns, audit: 'machine.simple_repair' },
    [`DELETE ${p}`]: { permission: 'machines:repair', resources: ns, audit: 'machine.remove' },
    [`GET ${p}`]: { permission: 'machines:read', resources: ns },
  };
};

export const PERMISSIONS: Readonly<Record<string, Rule>> = {
  // node
  'GET /healthz': { open: 'always' },
  'GET /readyz': { open: 'always' },
  'GET /metrics': { open: 'metrics' },
  'GET /openapi.json': { open: 'openapi' },
  // the console's static files (its API calls go through the routes below)
  'GET /ui': { open: 'always' },
  'GET /ui/': { open: 'always' },
  'GET /ui/*': { open: 'always' },
  'GET /': { open: 'always' },
  // the API reference page: its static files are open, the document it shows follows auth.open_openapi
  'GET /docs': { open: 'always' },
  'GET /docs/': { open: 'always' },
  'GET /docs/static/*': { open: 'always' },
  'GET /docs/static/index.html': { open: 'always' },
  'GET /docs/static/swagger-initializer.js': { open: 'always' },
  'GET /docs/json': { open: 'openapi' },
  'GET /docs/yaml': { open: 'openapi' },

  // log
  'GET /v1/shards': { permission: 'log:read' },
  'GET /v1/nodes': { permission: 'log:read' },
  'GET /v1/metrics/series': { permission: 'log:read' },
  'GET /v1/shards/:shard/events': { permission: 'log:read' },
  'POST /v1/shards/:shard/split': { permission: 'log:admin', audit: 'shard.split' },
  'GET /v1/sinks': { permission: 'log:read' },
  'GET /v1/sinks/:sink/events': { permission: 'log:read' },
  'GET /v1/sinks/:sink/stream': { permission: 'log:read' },

  // auth
  'GET /v1/auth/whoami': { permission: 'auth:whoami', anyPrincipal: true },
  'POST /v1/auth/tokens': { permission: 'auth:admin', audit: 'token.create' },
  'GET /v1/auth/tokens': { permission: 'auth:admin' },
  'GET /v1/auth/tokens/:id': { permission: 'auth:admin' },
  'DELETE /v1/auth/tokens/:id': { permission: 'auth:admin', audit: 'token.revoke' },
  'GET /v1/audit': { permission: 'audit:read' },

  // machines
  ...catalog('/v1/namespaces', 'machines', 'read', 'admin', 'namespace'),
  'GET /v1/namespaces/:ns/machines': { permission: 'machines:read', resources: param('ns') },
  ...machineRoutes('/v1/namespaces/:ns/machines/:id', true),
  ...machineRoutes('/v1/namespaces/:ns/tags/:tag', false),

  // ledger (types are config-only; reading them needs read on every type)
  'GET /v1/ledger/types': { permission: 'ledger:read', resources: all },
  'POST /v1/ledger/batches': { permission: 'ledger:write', resources: ledgerTypes },
  'POST /v1/ledger/balances': { permission: 'ledger:read', resources: ledgerTypes },
  'POST /v1/ledger/turnovers': { permission: 'ledger:read', resources: ledgerTypes },
  'POST /v1/ledger/events': { permission: 'ledger:read', resources: ledgerTypes },
  'GET /v1/ledger/accounts': { permission: 'ledger:read', resources: (i) => [str(i.query.type)] },
  'POST /v1/ledger/locks/acquire': { permission: 'ledger:write', resources: ledgerTypes },
  'POST /v1/ledger/locks/ping': { permission: 'ledger:write', resources: ledgerTypes },
  'POST /v1/ledger/locks/release': { permission: 'ledger:write', resources: ledgerTypes },
  'POST /v1/ledger/locks/get': { permission: 'ledger:read', resources: ledgerTypes },
  'POST /v1/ledger/states/get': { permission: 'ledger:read', resources: ledgerTypes },

  // pipe
  ...catalog('/v1/pipe/kinds', 'pipe', 'admin', 'admin', 'kind'),
  'POST /v1/pipe/sessions': { permission: 'pipe:write', resources: (i, l) => [kindName(obj(i.body).kind, l)] },
  'POST /v1/pipe/sessions/:id/append': { permission: 'pipe:write', resources: (i, l) => sessionKind(i.params.id, l) },
  'POST /v1/pipe/sessions/:id/replace': { permission: 'pipe:write', resources: (i, l) => sessionKind(i.params.id, l) },
  'POST /v1/pipe/sessions/:id/store': { permission: 'pipe:write', resources: (i, l) => sessionKind(i.params.id, l) },
  'DELETE /v1/pipe/sessions/:id': { permission: 'pipe:write', resources: (i, l) => sessionKind(i.params.id, l) },
  'GET /v1/pipe/sessions': {
    permission: 'pipe:read',
    resources: (i, l) => (i.query.kind === undefined ? ['*'] : [kindName(i.query.kind, l)]),
  },
  'GET /v1/pipe/sessions/:id': { permission: 'pipe:read', resources: (i, l) => sessionKind(i.params.id, l) },
  'GET /v1/pipe/dead-letters': {
    permission: 'pipe:admin',
    resources: (i, l) => (i.query.kind === undefined ? ['*'] : [kindName(i.query.kind, l)]),
  },
  'GET /v1/pipe/dead-letters/:id': { permission: 'pipe:admin', resources: (i, l) => sessionKind(i.params.id, l) },
  'POST /v1/pipe/dead-letters/:id/redrive': {
    permission: 'pipe:admin',
    resources: (i, l) => sessionKind(i.params.id, l),
    audit: 'dead_letter.redrive',
  },
  'DELETE /v1/pipe/dead-letters/:id': {
    permission: 'pipe:admin',
    resources: (i, l) => sessionKind(i.params.id, l),
    audit: 'dead_letter.delete',
  },
  'grpc /millrace.v1.Pipe/Session': {
    permission: 'pipe:write',
    perMessage: true,
    resources: (i, l) => pipeRequestKind(i.body, l),
  },
  'grpc /millrace.v1.Pipe/Batches': {
    permission: 'pipe:write',
    perMessage: true,
    resources: (i, l) => pipeRequestKind(i.body, l),
  },

  // schedules: defining one also needs the right to do what its action does
  'GET /v1/schedules': { permission: 'schedules:read', resources: all },
  'GET /v1/schedules/:name': { permission: 'schedules:read', resources: param('name') },
  'GET /v1/schedules/:name/next': { permission: 'schedules:read', resources: param('name') },
  'GET /v1/schedules/:name/fires': { permission: 'schedules:read', resources: param('name') },
  'PUT /v1/schedules/:name': {
    permission: 'schedules:admin',
    resources: param('name'),
    also: scheduleActionPermissions,
  },
  'DELETE /v1/schedules/:name': { permission: 'schedules:admin', resources: param('name') },
  'POST /v1/schedules/:name/pause': { permission: 'schedules:admin', resources: param('name') },
  'POST /v1/schedules/:name/resume': { permission: 'schedules:admin', resources: param('name') },
  'POST /v1/schedules/:name/backfill': { permission: 'schedules:admin', resources: param('name') },

  // bulk jobs: on machines they need machines:bulk on the namespace, on dead letters pipe:admin on the kind
  'POST /v1/namespaces/:ns/bulk-jobs': { permission: 'machines:bulk', resources: param('ns') },
  'POST /v1/pipe/dead-letters/bulk-jobs': {
    permission: 'pipe:admin',
    resources: (i, l) => {
      const k = obj(obj(i.body).filter).kind;
      return k === undefined ? ['*'] : [kindName(k, l)];
    },
  },
  'GET /v1/bulk-jobs': { permission: 'ops:bulk' },
  'GET /v1/bulk-jobs/:id': { permission: 'ops:bulk' },
  'POST /v1/bulk-jobs/:id/cancel': { permission: 'ops:bulk' },

  // pause and resume: the admin permission of what is paused
  'POST /v1/namespaces/:ns/pause': { permission: 'machines:admin', resources: param('ns') },
  'POST /v1/namespaces/:ns/resume': { permission: 'machines:admin', resources: param('ns') },
  'POST /v1/namespaces/:ns/machines/:id/pause': { permission: 'machines:admin', resources: param('ns') },
  'POST /v1/namespaces/:ns/machines/:id/resume': { permission: 'machines:admin', resources: param('ns') },
  'POST /v1/bus/subscriptions/:name/pause': { permission: 'bus:admin', resources: param('name') },
  'POST /v1/bus/subscriptions/:name/resume': { permission: 'bus:admin', resources: param('name') },
  'POST /v1/pipe/kinds/:name/pause': { permission: 'pipe:admin', resources: (i, l) => [kindName(i.params.name, l)] },
  'POST /v1/pipe/kinds/:name/resume': { permission: 'pipe:admin', resources: (i, l) => [kindName(i.params.name, l)] },
  'POST /v1/bus/exporters/:name/pause': { permission: 'bus:admin', resources: param('name') },
  'POST /v1/bus/exporters/:name/resume': { permission: 'bus:admin', resources: param('name') },
  'GET /v1/pauses': { permission: 'log:read' },

  // bus
  ...catalog('/v1/bus/topics', 'bus', 'admin', 'admin', 'topic'),
  'POST /v1/bus/topics/:topic/events': { permission: 'bus:publish', resources: publishTopics },
  'GET /v1/bus/topics/:topic/events': { permission: 'bus:admin', resources: param('topic') },
  'GET /v1/bus/subscriptions': { permission: 'bus:admin', resources: all },
  'PUT /v1/bus/subscriptions/:name': { permission: 'bus:admin', resources: param('name'), audit: 'subscription.put' },
  'DELETE /v1/bus/subscriptions/:name': {
    permission: 'bus:admin',
    resources: param('name'),
    audit: 'subscription.delete',
  },
  'GET /v1/bus/subscriptions/:name': { permission: 'bus:subscribe', resources: param('name') },
  'POST /v1/bus/subscriptions/:name/ack': { permission: 'bus:subscribe', resources: param('name') },
  'GET /v1/bus/subscriptions/:name/stream': { permission: 'bus:subscribe', resources: param('name') },
  'grpc /millrace.v1.Bus/Publish': { permission: 'bus:publish', resources: publishTopics },
  'grpc /millrace.v1.Bus/PublishStream': { permission: 'bus:publish', perMessage: true, resources: publishTopics },
  'grpc /millrace.v1.Bus/PublishBatches': { permission: 'bus:publish', perMessage: true, resources: publishTopics },
  'grpc /millrace.v1.Bus/Subscribe': {
    permission: 'bus:subscribe',
    perMessage: true,
    // Only the `open` message names a subscription; acks and nacks act on what it opened.
    resources: (i) => {
      const open = obj(obj(i.body).open);
      return open.subscription === undefined ? [] : [str(open.subscription)];
    },
    // Opening with a config defines (or redefines) the subscription.
    also: (i) => {
      const open = obj(obj(i.body).open);
      return open.config !== undefined && open.config !== null ? [`bus:admin:${str(open.subscription)}`] : [];
    },
  },
};

/** The rule of an HTTP route (`HEAD` follows `GET`); undefined when unmapped. */
export function httpRule(method: string, url: string): Rule | undefined {
  return PERMISSIONS[`${method === 'HEAD' ? 'GET' : method} ${url}`];
}

/** The rule of a gRPC method path (`/millrace.v1.Bus/Publish`); undefined when unmapped. */
export function grpcRule(path: string): Rule | undefined {
  return PERMISSIONS[`grpc ${path}`];
}

/** The concrete permissions a request needs under `rule`. */
export async function requiredPermissions(
  rule: PermissionRule,
  input: AccessInput,
  lookup: ResourceLookup,
): Promise<string[]> {
  const out: string[] = [];
  if (rule.anyPrincipal === true) return out;
  if (rule.resources === undefined) out.push(rule.permission);
  else {
    const rs = await rule.resources(input, lookup);
    for (const r of rs.length === 0 && rule.perMessage !== true ? ['*'] : rs) out.push(`${rule.permission}:${r}`);
  }
  if (rule.also) out.push(...rule.also(input));
  return out;
}
