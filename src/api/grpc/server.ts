import { Server, ServerCredentials, status, type ServiceError, Metadata } from '@grpc/grpc-js';
import { toMillraceError } from '../../core/errors.js';
import type { Face } from '../../face.js';

/** One gRPC server for every face that has services. */
export async function startGrpcServer(faces: Face[], host: string, port: number): Promise<{ server: Server; port: number } | null> {
  const withGrpc = faces.filter((f) => f.grpc);
  if (withGrpc.length === 0) return null;
  const server = new Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  for (const f of withGrpc) f.grpc!(server);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port: bound };
}

/** A MillraceError as a gRPC status, with the stable code in the `error-code` trailer. */
export function toGrpcError(err: unknown): Partial<ServiceError> {
  const e = toMillraceError(err);
  const metadata = new Metadata();
  metadata.set('error-code', e.code);
  return { code: e.grpcStatus as status, details: `${e.code}: ${e.message}`, metadata };
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
