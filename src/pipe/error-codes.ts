import { defineErrorCodes, GrpcStatus } from '../core/error-codes.js';

/** The pipe's error codes (their errors are made in errors.ts). */
export const PIPE_ERRORS = defineErrorCodes({
  session_not_found: {
    http: 404,
    grpc: GrpcStatus.NOT_FOUND,
    description: 'No pipe session with this id (never created, or deleted).',
  },
  session_closed: {
    http: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    description: 'The pipe session is stored or dead: writing to it is closed.',
  },
  kind_not_found: {
    http: 404,
    grpc: GrpcStatus.NOT_FOUND,
    description: 'No pipe session kind with this name or code is configured.',
  },
  dead_letter_not_found: {
    http: 404,
    grpc: GrpcStatus.NOT_FOUND,
    description: 'No dead-lettered pipe session with this id.',
  },
});
