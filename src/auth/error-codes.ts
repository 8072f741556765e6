import { defineErrorCodes, GrpcStatus } from '../core/error-codes.js';

/** The error codes of API tokens. */
export const TOKEN_ERRORS = defineErrorCodes({
  token_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No API token with this id.' },
});
