import { defineErrorCodes, GrpcStatus } from '../core/error-codes.js';

export const BUS_ERRORS = defineErrorCodes({
  topic_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No topic with this name is configured.' },
  subscription_not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, description: 'No subscription with this name.' },
  subscription_busy: {
    http: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    retryable: true,
    description: 'The subscription already has a live connection (on this or another node).',
  },
  subscription_not_connected: {
    http: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    description: 'The subscription has no live connection on this node to acknowledge to.',
  },
  exporter_not_found: {
    http: 404,
    grpc: GrpcStatus.NOT_FOUND,
    description: 'No exporter with this name is configured.',
  },
});
