import { defineErrorCodes, GrpcStatus } from '../core/error-codes.js';

export const MACHINES_ERRORS = defineErrorCodes({
  namespace_not_found: {
    http: 404,
    grpc: GrpcStatus.NOT_FOUND,
    description: 'No machine namespace with this name is configured.',
  },
  machine_not_found: {
    http: 404,
    grpc: GrpcStatus.NOT_FOUND,
    description: 'No machine with this id (or tag) in the namespace.',
  },
  machine_already_exists: {
    http: 409,
    grpc: GrpcStatus.ALREADY_EXISTS,
    description: 'A machine with this id already exists.',
  },
  machine_failed: {
    http: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    description: 'The machine is failed; repair it first.',
  },
  machine_already_working: {
    http: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    description: 'Only a failed machine can be repaired.',
  },
  repair_failed: {
    http: 422,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    description: 'The processor refused the repair; the machine stays failed.',
  },
  event_not_found: {
    http: 404,
    grpc: GrpcStatus.NOT_FOUND,
    description: 'The history range names an event the machine does not have.',
  },
  sink_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No event sink with this name is configured.' },
});
