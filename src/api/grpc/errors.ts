import { Metadata, type ServiceError, type status } from '@grpc/grpc-js';
import { toMillraceError } from '../../core/errors.js';

/** A MillraceError as a gRPC status, with the stable code in the `error-code` trailer. */
export function toGrpcError(err: unknown): Partial<ServiceError> {
  const e = toMillraceError(err);
  const metadata = new Metadata();
  metadata.set('error-code', e.code);
  if (e.retryAfterS !== undefined) metadata.set('retry-after', String(Math.ceil(e.retryAfterS)));
  return { code: e.grpcStatus as status, details: `${e.code}: ${e.message}`, metadata };
}
