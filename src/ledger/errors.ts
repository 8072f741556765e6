import { defineErrorCodes, GrpcStatus as G } from '../core/error-codes.js';

export const LEDGER_ERRORS = defineErrorCodes({
  account_type_not_found: {
    http: 404,
    grpc: G.NOT_FOUND,
    description: 'No account type with this name in the ledger config.',
  },
  lock_type_not_found: {
    http: 404,
    grpc: G.NOT_FOUND,
    description: 'No lock type with this name in the ledger config.',
  },
  state_type_not_found: {
    http: 404,
    grpc: G.NOT_FOUND,
    description: 'No state type with this name in the ledger config.',
  },
  invalid_attributes: {
    http: 400,
    grpc: G.INVALID_ARGUMENT,
    description: 'Attributes miss a key attribute or name one the type does not have.',
  },
  invalid_amount: {
    http: 400,
    grpc: G.INVALID_ARGUMENT,
    description: 'An amount is not a positive decimal string within the type scale.',
  },
  invalid_date: {
    http: 400,
    grpc: G.INVALID_ARGUMENT,
    description: 'A date is not an ISO 8601 date-time, or a period is empty.',
  },
  grouping_not_allowed: {
    http: 400,
    grpc: G.INVALID_ARGUMENT,
    description: 'The group_by is not one of the account type groupings.',
  },
  lock_held: {
    http: 409,
    grpc: G.ABORTED,
    retryable: true,
    description: 'The lock is held by someone else in a conflicting mode.',
  },
  lock_not_held: {
    http: 409,
    grpc: G.FAILED_PRECONDITION,
    description: 'The lock is not held by this uid (never taken, released or expired).',
  },
  state_version_conflict: { http: 409, grpc: G.ABORTED, description: 'The state is not at the expected version.' },
  idempotency_key_reused: {
    http: 409,
    grpc: G.ALREADY_EXISTS,
    description: 'The idempotency key was used with a different request.',
  },
  retention_exceeded: {
    http: 422,
    grpc: G.FAILED_PRECONDITION,
    description:
      'The date is before the retention horizon (ledger.retention_months): events of those months may have been dropped, so it cannot be answered exactly.',
  },
  invalid_cursor: { http: 400, grpc: G.INVALID_ARGUMENT, description: 'The page cursor is malformed.' },
});
