import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SeenRequest {
  body: {
    kind: string;
    signal?: { type: string; args?: unknown };
    args?: unknown;
    machine: { id: string; aux_state: unknown; history: Array<{ id: number; data: unknown }> };
  };
  headers: IncomingHttpHeaders;
}

/**
 * A real HTTP processor driven by the request itself. A call's (or init's)
 * args say what to answer: {events, aux, timer, tag, remove, response, fail, sleep_ms}.
 * A timeout appends {fired: n} and re-arms while aux.rearm says so; a
 * notification appends {notified: args}; a repair answers repair_failed when
 * args.refuse is set.
 */
export class TestProcessor {
  readonly seen: SeenRequest[] = [];
  /** 'up' answers; 'down' answers 503; 'refuse' closes the server (connection refused is simulated by 502 here). */
  mode: 'up' | 'down' = 'up';
  private server!: Server;
  url = '';
  private inFlight = new Map<string, number>();
  maxConcurrentPerMachine = 0;

  async listen(): Promise<this> {
    this.server = createServer((req, res) => {
      let data = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (data += d));
      req.on('end', () => {
        void this.handle(data, req.headers).then(
          ([status, body]) => {
            res.writeHead(status, { 'content-type': 'application/json' });
            res.end(typeof body === 'string' ? body : JSON.stringify(body));
          },
          () => {
            res.writeHead(500);
            res.end('{}');
          },
        );
      });
    });
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/process`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private async handle(text: string, headers: IncomingHttpHeaders): Promise<[number, unknown]> {
    const body = JSON.parse(text) as SeenRequest['body'];
    this.seen.push({ body, headers });
    if (this.mode === 'down') return [503, { down: true }];
    const id = body.machine.id;
    const n = (this.inFlight.get(id) ?? 0) + 1;
    this.inFlight.set(id, n);
    this.maxConcurrentPerMachine = Math.max(this.maxConcurrentPerMachine, n);
    try {
      return await respond(body);
    } finally {
      this.inFlight.set(id, this.inFlight.get(id)! - 1);
    }
  }

  count(pred: (r: SeenRequest) => boolean): number {
    return this.seen.filter(pred).length;
  }
}

type Script = {
  events?: unknown[];
  aux?: unknown;
  timer?: unknown;
  tag?: string;
  remove?: boolean;
  response?: unknown;
  fail?: 'http500' | 'http400' | 'bad_shape' | 'not_json';
  sleep_ms?: number;
};

async function respond(body: SeenRequest['body']): Promise<[number, unknown]> {
  const m = body.machine;
  if (body.kind === 'signal' && body.signal!.type === 'timeout') {
    const aux = (m.aux_state ?? {}) as { fired?: number; rearm?: number };
    const fired = (aux.fired ?? 0) + 1;
    const again = (aux.rearm ?? 0) > fired;
    return [
      200,
      {
        events: [{ fired }],
        aux_state: { ...aux, fired },
        ...(again ? { action: { timer: { set: { timeout: 0.05 } } } } : {}),
      },
    ];
  }
  if (body.kind === 'signal' && body.signal!.type === 'notification') {
    const s = (body.signal!.args ?? {}) as Script;
    if (s.fail) return fail(s);
    return [200, { events: [{ notified: body.signal!.args }] }];
  }
  if (body.kind === 'repair') {
    const a = (body.args ?? {}) as { refuse?: boolean };
    if (a.refuse) return [200, { repair_failed: { reason: 'refused by test' } }];
    return [200, { response: 'repaired', events: [{ repaired: true }] }];
  }
  const s = ((body.kind === 'call' ? body.args : body.signal?.args) ?? {}) as Script;
  if (s.sleep_ms) await new Promise((r) => setTimeout(r, s.sleep_ms));
  if (s.fail) return fail(s);
  const action: Record<string, unknown> = {};
  if (s.timer !== undefined) action.timer = s.timer;
  if (s.tag !== undefined) action.tag = s.tag;
  if (s.remove) action.remove = true;
  return [
    200,
    {
      response: s.response ?? { history: m.history.map((e) => e.id) },
      ...(s.events ? { events: s.events } : {}),
      ...(s.aux !== undefined ? { aux_state: s.aux } : {}),
      ...(Object.keys(action).length ? { action } : {}),
    },
  ];
}

function fail(s: Script): [number, unknown] {
  switch (s.fail) {
    case 'http500':
      return [500, { boom: true }];
    case 'http400':
      return [400, { bad: true }];
    case 'bad_shape':
      return [200, { events: 'not an array' }];
    default:
      return [200, 'not json{'];
  }
}

/** Config section for the machines face with the test processor in namespace `t` (sink `main`). */
export function machinesConfig(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    namespaces: {
      t: {
        processor: { url },
        retry: { base_ms: 10, max_ms: 100, timer_max_attempts: 1000 },
        sink: 'main',
        default_timeout_ms: 10_000,
      },
      other: { processor: { url }, retry: { base_ms: 10, max_ms: 100 } },
    },
    notification_retry_base_ms: 20,
    notification_retry_max_ms: 200,
    ...extra,
  };
}
