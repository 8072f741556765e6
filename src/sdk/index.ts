/**
 * millrace/sdk: what a service needs to work with millrace without loading
 * the server — processors and pipe handlers as HTTP handlers, and clients of
 * the four faces over HTTP and gRPC. Every name is listed here (no
 * `export *`), and every type a public signature uses is among them.
 */

// Processors (machines face).
export { defineProcessor, ProcessorUnavailable, RepairFailed } from './processor.js';
export type {
  ArgsOf,
  AuxOf,
  EventOf,
  HistoryEvent,
  HistoryRange,
  Machine,
  Processor,
  ProcessorDefinition,
  ProcessorTypes,
  ResponseOf,
  StepContext,
  StepName,
  StepResult,
  StepReturn,
  StepTypes,
  TypesOf,
} from './processor.js';
export type { ResolvedHistoryRange } from './machine.js';
// The processor protocol as sent on the wire (snake_case), for a processor written without `defineProcessor`.
export type {
  MachineEvent as WireMachineEvent,
  MachineView as WireMachine,
  ProcessorAction,
  ProcessorRequest,
  ProcessorResult,
  TimerSet,
} from '../machines/wire.js';

// Pipe handlers.
export { definePipeHandler, verdict } from './pipe-handler.js';
export type { PipeHandlerFn, PushContext, PushedSession, Verdict } from './pipe-handler.js';
export type { Handlers, SignatureOptions } from './http-handlers.js';
export { requestSigner, signatureVerifier, SIGNATURE_HEADER } from '../core/request-signing.js';
export type { RequestSigner, SignatureVerifier, SignatureProblem } from '../core/request-signing.js';

// HTTP clients.
export { BusClient, MachinesClient, NamespaceClient, PipeClient } from './clients.js';
export { LedgerClient } from './ledger.js';
export type {
  ArgsAndOptions,
  BusDelivery,
  BusEvent,
  BusPosition,
  CallOptions,
  ClientOptions,
  MachineRef,
  PipeSessionView,
  DeadLetterPage,
  DeadLetterQuery,
  DeadLetterSummary,
  SinkEvent,
  SinkPage,
  SinkQuery,
  SubscriptionFilter,
  SubscriptionSettings,
  SubscriptionConfig,
  SubscriptionInfo,
} from './clients.js';
export type {
  AccountQuery,
  Attrs,
  BalancesAnswer,
  BalancesQuery,
  BatchAnswer,
  BatchEventInput,
  BatchRequest,
  GroupSums,
  LedgerEvent,
  LedgerEventsAnswer,
  LedgerEventsQuery,
  LockAcquire,
  LockAnswer,
  LockHolders,
  LockMode,
  LockPing,
  LockRef,
  LockRelease,
  Side,
  StateAnswer,
  StateRef,
  TurnoverSums,
  TurnoversAnswer,
  TurnoversQuery,
} from './ledger.js';

// gRPC clients.
export { BusGrpcClient, BusPublisher, BusSubscription, PipeGrpcClient, PipeStreamSession } from './grpc.js';
export type { GrpcDelivery, GrpcOptions } from './grpc.js';

// Errors.
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
export type { ErrorInit } from './errors.js';
// The node's error class the SDK's extends (`instanceof` either holds), and the codes' types.
export type { ErrorCode, MillraceError as NodeMillraceError } from '../core/errors.js';
