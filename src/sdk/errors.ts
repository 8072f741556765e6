/**
 * Errors a millrace client raises. Every refusal from a node carries its
 * stable `code` (the server's error table), the HTTP or gRPC status it came
 * with, and `details`. The subclass says what kind of refusal it is, so a
 * caller can catch `NotFoundError` or `UnavailableError` without listing codes.
 */
import { codeSpec, GrpcStatus, MillraceError as CoreError, type ErrorCode } from '../core/errors.js';

export interface ErrorInit {
  details?: Record<string, unknown> | undefined;
  /** HTTP status the error came with (from the code table when it came another way). */
  httpStatus?: number | undefined;
  /** gRPC status the error came with (from the code table when it came another way). */
  grpcStatus?: number | undefined;
  retryAfterS?: number | undefined;
  cause?: unknown;
}

/** A refusal from millrace, or a failure to reach it. `instanceof` the server's MillraceError too. */
export class MillraceError extends CoreError {
  private readonly http: number;
  private readonly grpc: number;

  constructor(code: string, message: string, init: ErrorInit = {}) {
    // A client keeps the code as the node sent it, even one a newer node added
    // that this build's table does not have yet.
    super(code as ErrorCode, message, {
      ...(init.details === undefined ? {} : { details: init.details }),
      ...(init.retryAfterS === undefined ? {} : { retryAfterS: init.retryAfterS }),
      ...(init.cause === undefined ? {} : { cause: init.cause }),
    });
    this.name = new.target.name;
    const s = codeSpec(code);
    this.http = init.httpStatus ?? s.http;
    this.grpc = init.grpcStatus ?? s.grpc;
  }

  override get httpStatus(): number {
    return this.http;
  }

  override get grpcStatus(): number {
    return this.grpc;
  }
}

/** The request was refused as malformed or invalid (400, 413, 415, 422); nothing was written. */
export class InvalidRequestError extends MillraceError {}
/** No such resource (404). */
export class NotFoundError extends MillraceError {}
/** The resource is not in a state that allows this (409: exists, busy, closed, conflict). */
export class ConflictError extends MillraceError {}
/** Temporarily unavailable (503, or no answer from the node); a retry later may succeed. */
export class UnavailableError extends MillraceError {}
/** The request deadline passed (504). */
export class DeadlineExceededError extends UnavailableError {}
/** The node failed unexpectedly (500 and anything else). */
export class InternalError extends MillraceError {}
/** No valid credentials (401, gRPC UNAUTHENTICATED): pass `{ token }` to the client. */
export class UnauthenticatedError extends MillraceError {}
/** The token lacks the permission named in `details.permission` (403, gRPC PERMISSION_DENIED); nothing was written. */
export class PermissionDeniedError extends MillraceError {}

/** The principal is over its request-rate limit (429, gRPC RESOURCE_EXHAUSTED with code rate_limited): retry after `retryAfterS`. */
export class RateLimitedError extends UnavailableError {}

type ErrorClass = new (code: string, message: string, init?: ErrorInit) => MillraceError;

function classForHttp(status: number): ErrorClass {
  if (status === 401) return UnauthenticatedError;
  if (status === 403) return PermissionDeniedError;
  if (status === 404) return NotFoundError;
  if (status === 429) return RateLimitedError;
  if (status === 409) return ConflictError;
  if (status === 504) return DeadlineExceededError;
  if (status === 503 || status === 502) return UnavailableError;
  if (status >= 400 && status < 500) return InvalidRequestError;
  return InternalError;
}

function classForGrpc(status: number): ErrorClass {
  switch (status) {
    case GrpcStatus.NOT_FOUND:
      return NotFoundError;
    case GrpcStatus.UNAUTHENTICATED:
      return UnauthenticatedError;
    case GrpcStatus.PERMISSION_DENIED:
      return PermissionDeniedError;
    case GrpcStatus.ALREADY_EXISTS:
    case GrpcStatus.ABORTED:
    case GrpcStatus.FAILED_PRECONDITION:
      return ConflictError;
    case GrpcStatus.DEADLINE_EXCEEDED:
      return DeadlineExceededError;
    case GrpcStatus.UNAVAILABLE:
    case GrpcStatus.CANCELLED:
      return UnavailableError;
    case GrpcStatus.INVALID_ARGUMENT:
    case GrpcStatus.OUT_OF_RANGE:
    case GrpcStatus.RESOURCE_EXHAUSTED:
    case GrpcStatus.UNIMPLEMENTED:
      return InvalidRequestError;
    default:
      return InternalError;
  }
}

/** The error for an HTTP answer `{error: {code, message, details?}}` with this status. */
export function errorFromHttp(status: number, body: unknown, retryAfter?: string | null): MillraceError {
  const e = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
  const code =
    typeof e?.code === 'string' ? e.code : status === 404 ? 'not_found' : status >= 500 ? 'internal' : 'bad_request';
  const message = typeof e?.message === 'string' ? e.message : `HTTP ${status}`;
  const details =
    e?.details !== null && typeof e?.details === 'object' ? (e.details as Record<string, unknown>) : undefined;
  const retry = retryAfter ? Number(retryAfter) : undefined;
  const Cls = classForHttp(status);
  return new Cls(code, message, {
    details,
    httpStatus: status,
    retryAfterS: retry !== undefined && Number.isFinite(retry) ? retry : undefined,
  });
}

/** The error for a gRPC failure: the code from the `error-code` trailer, the status as given. */
export function errorFromGrpc(err: {
  code?: number;
  details?: string;
  message?: string;
  metadata?: { get(key: string): unknown[] };
}): MillraceError {
  const status = typeof err.code === 'number' ? err.code : GrpcStatus.UNKNOWN;
  const fromTrailer = err.metadata?.get('error-code')?.[0];
  const code =
    typeof fromTrailer === 'string'
      ? fromTrailer
      : status === GrpcStatus.UNAVAILABLE || status === GrpcStatus.CANCELLED
        ? 'unavailable'
        : status === GrpcStatus.DEADLINE_EXCEEDED
          ? 'deadline_exceeded'
          : 'internal';
  let message = err.details ?? err.message ?? 'gRPC error';
  if (message.startsWith(`${code}: `)) message = message.slice(code.length + 2);
  const retry = Number(err.metadata?.get('retry-after')?.[0]);
  const Cls = code === 'rate_limited' ? RateLimitedError : classForGrpc(status);
  return new Cls(code, message, {
    grpcStatus: status,
    cause: err,
    retryAfterS: Number.isFinite(retry) && retry > 0 ? retry : undefined,
  });
}

/** The error for an in-stream refusal `{code, message}` (pipe streams): statuses from the code table. */
export function errorFromCode(code: string, message: string, details?: Record<string, unknown>): MillraceError {
  const s = codeSpec(code);
  return new (classForHttp(s.http))(code, message, { details });
}

/** The node could not be reached or gave no usable answer. */
export function connectionError(err: unknown): MillraceError {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return new UnavailableError(
    'unavailable',
    `could not reach millrace: ${e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err)}`,
    { cause: err },
  );
}
