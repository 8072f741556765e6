import { defineErrorCodes, GrpcStatus } from '../core/error-codes.js';

/** The error codes of runtime definitions. */
export const CATALOG_ERRORS = defineErrorCodes({
  defined_in_config: {
    http: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    description: 'The name is defined in the configuration file, which wins over runtime definitions; change it there.',
  },
});
