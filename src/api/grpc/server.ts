import { readFileSync } from 'node:fs';
import { MillraceError } from '../../core/errors.js';
import {
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
  type Metadata,
} from '@grpc/grpc-js';
import { Access, OPEN_SETTINGS } from '../../auth/access.js';
import { guardedServer } from './access.js';
export { toGrpcError } from './errors.js';
import { endSpan, SpanKind, startSpan, telemetryEnabled } from '../../core/telemetry.js';
import type { Face } from '../../face.js';
import { registerFaceServices } from './face-services.js';

/** One gRPC server for every face that has services; null when none has. */
export interface GrpcTls {
  cert_file: string;
  key_file: string;
  client_ca_file?: string | undefined;
}

/** Server credentials: TLS when configured (with a client CA, client certificates signed by it are required), else plaintext. */
export function grpcCredentials(tls: GrpcTls | undefined): ServerCredentials {
  if (tls === undefined) return ServerCredentials.createInsecure();
  const read = (what: string, f: string) => {
    try {
      return readFileSync(f);
    } catch (err) {
      throw new MillraceError('config_invalid', `grpc.tls.${what}: cannot read ${f}: ${(err as Error).message}`);
    }
  };
  const ca = tls.client_ca_file === undefined ? null : read('client_ca_file', tls.client_ca_file);
  return ServerCredentials.createSsl(
    ca,
    [{ cert_chain: read('cert_file', tls.cert_file), private_key: read('key_file', tls.key_file) }],
    ca !== null,
  );
}

export async function startGrpcServer(
  faces: Face[],
  host: string,
  port: number,
  access: Access = new Access(OPEN_SETTINGS, null),
  tls?: GrpcTls,
  /** Re-reads shard routing: given, a unary call refused `shard_moved` runs again (src/core/moved-retry.ts). */
  refreshRouting?: () => Promise<void>,
): Promise<{ server: Server; port: number } | null> {
  const credentials = grpcCredentials(tls);
  const server = new Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  // Every call passes the access check first; traced: each call gets a server span under
  // the traceparent metadata of the call (wrapped only when telemetry is on).
  const guarded = guardedServer(server, access, refreshRouting);
  const target = telemetryEnabled() ? tracedServer(guarded) : guarded;
  let services = 0;
  for (const f of faces) if (registerFaceServices(target, f)) services++;
  if (services === 0) {
    server.forceShutdown();
    return null;
  }
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port: bound };
}

export function stopGrpcServer(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}

type Handler = (
  call: { metadata: Metadata; once(ev: string, fn: (...a: unknown[]) => void): unknown },
  cb?: (err: unknown, ...rest: unknown[]) => void,
) => void;

/** A view of the server whose addService wraps every handler in a span. */
function tracedServer(server: Server): Server {
  const view = Object.create(server) as Server;
  view.addService = (def: ServiceDefinition, impl: UntypedServiceImplementation) => {
    const wrapped: UntypedServiceImplementation = {};
    for (const [name, fn] of Object.entries(impl)) {
      const m = def[name];
      if (m === undefined) {
        wrapped[name] = fn;
        continue;
      }
      const handler = fn as unknown as Handler;
      const unaryAnswer = !m.responseStream;
      wrapped[name] = ((call: Parameters<Handler>[0], cb?: Parameters<Handler>[1]) => {
        const tp = call.metadata.get('traceparent')[0];
        const span = startSpan(`gRPC ${m.path}`, typeof tp === 'string' ? tp : undefined, SpanKind.SERVER, {
          'rpc.system': 'grpc',
          'rpc.method': m.path,
        });
        if (unaryAnswer && cb) {
          return handler(call, (err, ...rest) => {
            endSpan(span, err ?? undefined);
            cb(err, ...rest);
          });
        }
        let ended = false;
        const end = (err?: unknown) => {
          if (ended) return;
          ended = true;
          endSpan(span, err);
        };
        for (const ev of ['finish', 'cancelled', 'close']) call.once(ev, () => end());
        call.once('error', (err: unknown) => end(err));
        return handler(call, cb);
      }) as unknown as UntypedServiceImplementation[string];
    }
    server.addService(def, wrapped);
  };
  return view;
}
