import type { ProcessorFn } from '../../src/machines/processor.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, type TestEnv } from '../support/env.js';

/** A node:http server for one request listener on a free port. */
export async function listen(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * Routes requests by path to handlers registered later (a node's config needs
 * the handler URLs before the handlers exist).
 */
export class Router {
  readonly routes = new Map<string, (req: IncomingMessage, res: ServerResponse) => void>();
  readonly listener = (req: IncomingMessage, res: ServerResponse): void => {
    const h = this.routes.get((req.url ?? '/').split('?')[0]!);
    if (h) h(req, res);
    else res.writeHead(404).end();
  };
}

export interface SdkNode {
  env: TestEnv;
  node: Node;
  /** Base URL of the node's HTTP API. */
  url: string;
  /** host:port of its gRPC server. */
  grpc: string;
  router: Router;
  close(): Promise<void>;
}

export const FAST_RETRY = { base_ms: 10, max_ms: 50, timer_max_attempts: 1000 };

/**
 * A node with every face on a fresh SQLite, whose processors and pipe
 * handlers point at one local server: namespace N → `/machines/N`, pipe kind
 * K → `/pipe/K` (namespaces in `inProcess` use the in-process processor of their name). Add listeners to `router.routes` under those paths.
 */
export async function startSdkNode(
  o: {
    namespaces?: string[];
    /** Namespaces served by in-process processors of the same name. */
    inProcess?: ReadonlyMap<string, ProcessorFn>;
    kinds?: string[];
    auth?: Record<string, unknown>;
  } = {},
): Promise<SdkNode> {
  const router = new Router();
  const server = await listen(router.listener);
  const namespaces = Object.fromEntries([
    ...(o.namespaces ?? []).map((ns) => [
      ns,
      { processor: { url: `${server.url}/machines/${ns}` }, retry: FAST_RETRY, default_timeout_ms: 10_000 },
    ]),
    ...[...(o.inProcess?.keys() ?? [])].map((ns) => [
      ns,
      { processor: { in_process: ns }, retry: FAST_RETRY, default_timeout_ms: 10_000 },
    ]),
  ]);
  const kinds = Object.fromEntries(
    (o.kinds ?? []).map((k) => [
      k,
      {
        handler: `${server.url}/pipe/${k}`,
        default_delay_s: 0.05,
        retry_base_s: 0.02,
        retry_max_s: 0.1,
        max_repeats: 5,
      },
    ]),
  );
  const env = await createTestEnv('sqlite', {
    extra: {
      grpc: { enabled: true, host: '127.0.0.1', port: 0 },
      http: { port: 0, drain_timeout_ms: 300 },
      machines: { namespaces },
      pipe: { session_ttl_s: 2, store_jitter_s: 0, kinds },
      bus: { topics: ['orders', 'payments'], lease_ms: 2000 },
      ...(o.auth === undefined ? {} : { auth: o.auth }),
      ledger: {
        accounts: { cash: { key: ['client_id', 'currency'], scale: 2 } },
        locks: { client: { key: ['client_id'] } },
        states: { contract: { key: ['contract_id'] } },
      },
    } as Partial<ConfigInput>,
  });
  const node = await startNode(buildConfig(env.input), o.inProcess === undefined ? {} : { processors: o.inProcess });
  return {
    env,
    node,
    url: node.url,
    grpc: `127.0.0.1:${node.grpc!.port}`,
    router,
    close: async () => {
      await node.close();
      await server.close();
      await env.cleanup();
    },
  };
}
