import { type CodesOf, defineErrorCodes, GrpcStatus } from '../core/errors.js';

export const OPS_ERRORS = defineErrorCodes({
  schedule_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No schedule with this name.' },
  schedule_defined_in_config: {
    http: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    description: 'The schedule is defined in the configuration file, which wins over runtime definitions; change it there.',
  },
  bulk_job_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No bulk job with this id.' },
  bulk_job_finished: { http: 409, grpc: GrpcStatus.FAILED_PRECONDITION, description: 'The bulk job has already finished; it cannot be cancelled.' },
});

declare module '../core/errors.js' {
  interface ErrorCodeRegistry extends CodesOf<typeof OPS_ERRORS> {}
}
