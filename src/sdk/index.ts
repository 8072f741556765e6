/**
 * millrace/sdk: what a service needs to work with millrace without loading
 * the server — processors and pipe handlers as HTTP handlers, and clients of
 * the four faces over HTTP and gRPC.
 */
export { defineProcessor, ProcessorUnavailable, RepairFailed } from './processor.js';
export type { HistoryEvent, HistoryRange, Machine, Processor, ProcessorDefinition, StepContext, StepResult } from './processor.js';
export { definePipeHandler, verdict } from './pipe-handler.js';
export type { PipeHandlerFn, PushContext, PushedSession, Verdict } from './pipe-handler.js';
export type { Handlers, SignatureOptions } from './http-handlers.js';
export { requestSigner, signatureVerifier, SIGNATURE_HEADER } from '../core/request-signing.js';
export type { RequestSigner, SignatureVerifier, SignatureProblem } from '../core/request-signing.js';
export { BusClient, LedgerClient, MachinesClient, PipeClient } from './clients.js';
export type { BusDelivery, BusEvent, BusPosition, CallOptions, ClientOptions, MachineRef, MachineView, PipeSessionView, SinkPage, SubscriptionConfig } from './clients.js';
export { BusGrpcClient, BusPublisher, BusSubscription, PipeGrpcClient, PipeStreamSession } from './grpc.js';
export type { GrpcDelivery, GrpcOptions } from './grpc.js';
export {
  ConflictError,
  DeadlineExceededError,
  InternalError,
  InvalidRequestError,
  MillraceError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitedError,
  UnauthenticatedError,
  UnavailableError,
} from './errors.js';
