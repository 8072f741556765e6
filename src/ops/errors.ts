import { defineErrorCodes, GrpcStatus } from '../core/error-codes.js';

export const OPS_ERRORS = defineErrorCodes({
  schedule_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No schedule with this name.' },
  schedule_defined_in_config: {
    http: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    description:
      'The schedule is defined in the configuration file, which wins over runtime definitions; change it there.',
  },
  bulk_job_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No bulk job with this id.' },
  bulk_job_finished: {
    http: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    description: 'The bulk job has already finished; it cannot be cancelled.',
  },
  paused: {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    retryable: true,
    description:
      'The target (a namespace or machine) is paused; retry after it is resumed. details.kind and details.name say what is paused.',
  },
  paused_queue_full: {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    retryable: true,
    description:
      "The target is paused and the namespace's queue of calls waiting for the resume is full; retry after it is resumed.",
  },
});
