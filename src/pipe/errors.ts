import { type CodesOf, defineErrorCodes, GrpcStatus, MillraceError } from '../core/errors.js';

export const PIPE_ERRORS = defineErrorCodes({
  session_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No pipe session with this id (never created, or deleted).' },
  session_closed: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION, description: 'The pipe session is stored or dead: writing to it is closed.' },
  kind_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No pipe session kind with this name or code is configured.' },
  dead_letter_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No dead-lettered pipe session with this id.' },
});

declare module '../core/errors.js' {
  interface ErrorCodeRegistry extends CodesOf<typeof PIPE_ERRORS> {}
}

export const sessionNotFound = (id: string): MillraceError =>
  new MillraceError('session_not_found', `no pipe session ${JSON.stringify(id)}`, { details: { session: id } });

export const sessionClosed = (id: string, state: string): MillraceError =>
  new MillraceError('session_closed', `pipe session ${id} is ${state}: writing is closed`, { details: { session: id, state } });

export const kindNotFound = (kind: unknown): MillraceError =>
  new MillraceError('kind_not_found', `no pipe kind ${JSON.stringify(kind)} is configured`, { details: { kind } });

export const deadLetterNotFound = (id: string): MillraceError =>
  new MillraceError('dead_letter_not_found', `no dead-lettered pipe session ${JSON.stringify(id)}`, { details: { session: id } });
