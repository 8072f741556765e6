/**
 * Typed errors with stable codes. Every error that leaves millrace through any
 * transport is a MillraceError; the table below is the one place where a code
 * is mapped to an HTTP status and a gRPC status.
 */

import { classifyDbError } from './db-errors.js';

/** gRPC status codes (numeric values from the gRPC spec). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

interface CodeSpec {
  http: number;
  grpc: number;
  /** Retrying the same request later may succeed. */
  retryable: boolean;
  description: string;
}

const spec = (http: number, grpc: number, retryable: boolean, description: string): CodeSpec => ({
  http,
  grpc,
  retryable,
  description,
});

/** Every stable error code millrace can return. Add new codes here only. */
export const ERROR_CODES = {
  // generic input errors
  bad_request: spec(400, GrpcStatus.INVALID_ARGUMENT, false, 'The request is malformed or fails validation.'),
  bad_json: spec(400, GrpcStatus.INVALID_ARGUMENT, false, 'The request body is not valid JSON.'),
  not_found: spec(404, GrpcStatus.NOT_FOUND, false, 'No such route or resource.'),
  method_not_allowed: spec(405, GrpcStatus.UNIMPLEMENTED, false, 'The route does not accept this method.'),
  payload_too_large: spec(413, GrpcStatus.RESOURCE_EXHAUSTED, false, 'The request body is larger than allowed.'),
  unsupported_media_type: spec(415, GrpcStatus.INVALID_ARGUMENT, false, 'The request body has an unsupported content type.'),
  // access control
  unauthenticated: spec(401, GrpcStatus.UNAUTHENTICATED, false, 'No valid credentials: send `Authorization: Bearer <token>` (gRPC: `authorization` metadata).'),
  permission_denied: spec(403, GrpcStatus.PERMISSION_DENIED, false, 'The credentials lack the permission named in details.permission; nothing was done.'),
  rate_limited: spec(429, GrpcStatus.RESOURCE_EXHAUSTED, true, 'The principal sent more requests than its rate limit allows; retry after Retry-After seconds. Nothing was done.'),
  // storage and log
  shard_not_found: spec(404, GrpcStatus.NOT_FOUND, false, 'No shard with this name.'),
  stream_conflict: spec(409, GrpcStatus.ABORTED, false, 'The stream is not at the expected sequence number.'),
  conflict: spec(409, GrpcStatus.ABORTED, false, 'The write conflicts with stored data (a uniqueness or integrity rule); nothing of it was written.'),
  position_expired: spec(410, GrpcStatus.OUT_OF_RANGE, false, 'Retention removed events after the reader\'s position (details: per shard, the events lost and the horizon); reconnect with on_expired "resume" to continue with a gap notice, or read from the horizon.'),
  // growing: splitting a shard
  shard_moved: spec(503, GrpcStatus.UNAVAILABLE, true, 'The key\'s hash range is moving to another shard (a split is cutting over) or has moved since this node routed the request; nothing was written. Retry: the node routes by the new table.'),
  split_invalid: spec(400, GrpcStatus.INVALID_ARGUMENT, false, 'The split request names no shard, a target that is not an empty spare shard of the configuration, or a bound outside the shard\'s range; nothing was written.'),
  split_in_progress: spec(409, GrpcStatus.FAILED_PRECONDITION, false, 'A split of this shard (or into this target) is already under way; nothing was written.'),
  // backup and restore
  backup_invalid: spec(400, GrpcStatus.INVALID_ARGUMENT, false, 'The backup directory holds no complete backup (no manifest: it was interrupted), a file does not match its manifest checksum, or its shards do not match the configuration.'),
  backup_target_not_empty: spec(409, GrpcStatus.FAILED_PRECONDITION, false, 'A backup goes into a new or empty directory; nothing was written.'),
  restore_target_not_empty: spec(409, GrpcStatus.FAILED_PRECONDITION, false, 'A restore goes into a new data dir or empty databases; nothing was written.'),
  overflow: spec(422, GrpcStatus.OUT_OF_RANGE, false, 'A value is larger than the storage can hold.'),
  // availability
  unavailable: spec(503, GrpcStatus.UNAVAILABLE, true, 'Temporarily unavailable; retry later.'),
  deadline_exceeded: spec(504, GrpcStatus.DEADLINE_EXCEEDED, true, 'The request deadline passed.'),
  shutting_down: spec(503, GrpcStatus.UNAVAILABLE, true, 'The node is shutting down.'),
  // configuration
  config_invalid: spec(500, GrpcStatus.FAILED_PRECONDITION, false, 'The configuration is invalid.'),
  internal: spec(500, GrpcStatus.INTERNAL, false, 'An unexpected internal error.'),
} satisfies Record<string, CodeSpec>;

/**
 * Codes a face registers. Each face's errors.ts declares its table with
 * `defineErrorCodes` and adds its keys here by module augmentation:
 *
 *   export const BUS_ERRORS = defineErrorCodes({ topic_not_found: {...} });
 *   declare module '../core/errors.js' { interface ErrorCodeRegistry extends CodesOf<typeof BUS_ERRORS> {} }
 *
 * so `ErrorCode` is the union of every registered table and a typo in a code
 * is a compile error.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface ErrorCodeRegistry {}

export type CodesOf<T> = { [K in keyof T]: true };

export type ErrorCode = keyof typeof ERROR_CODES | keyof ErrorCodeRegistry;

interface CodeInput {
  http: number;
  grpc: number;
  retryable?: boolean;
  description: string;
}

/**
 * Faces register their own codes at import time through `defineErrorCodes`, so
 * the table stays the one mapping while each face owns its vocabulary.
 */
const extraCodes = new Map<string, CodeSpec>();

export function defineErrorCodes<const T extends Record<string, CodeInput>>(codes: T): T {
  for (const [code, s] of Object.entries(codes)) {
    if (code in ERROR_CODES || extraCodes.has(code)) {
      const existing = codeSpec(code);
      if (existing.http === s.http && existing.grpc === s.grpc) continue;
      throw new Error(`error code ${code} defined twice with different statuses`);
    }
    extraCodes.set(code, spec(s.http, s.grpc, s.retryable ?? false, s.description));
  }
  return codes;
}

/** Whether `code` is in one of the registered tables (codes from a wire are checked with this). */
export function isErrorCode(code: string): code is ErrorCode {
  return code in ERROR_CODES || extraCodes.has(code);
}

export function codeSpec(code: string): CodeSpec {
  return (ERROR_CODES as Record<string, CodeSpec>)[code] ?? extraCodes.get(code) ?? ERROR_CODES.internal;
}

export function allErrorCodes(): Record<string, CodeSpec> {
  return { ...ERROR_CODES, ...Object.fromEntries(extraCodes) };
}

export class MillraceError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  /** Seconds after which a retry makes sense (sent as Retry-After). */
  readonly retryAfterS: number | undefined;

  constructor(code: ErrorCode, message: string, opts: { details?: Record<string, unknown>; retryAfterS?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'MillraceError';
    this.code = code;
    this.details = opts.details;
    this.retryAfterS = opts.retryAfterS;
  }

  get httpStatus(): number {
    return codeSpec(this.code).http;
  }

  get grpcStatus(): number {
    return codeSpec(this.code).grpc;
  }

  get retryable(): boolean {
    return codeSpec(this.code).retryable;
  }

  toJSON(): { code: string; message: string; details?: Record<string, unknown> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

export function isMillraceError(err: unknown, code?: string): err is MillraceError {
  return err instanceof MillraceError && (code === undefined || err.code === code);
}

/** Anything thrown becomes a MillraceError at a transport boundary. */
export function toMillraceError(err: unknown): MillraceError {
  if (err instanceof MillraceError) return err;
  const db = classifyDbError(err);
  if (db !== undefined) {
    const { code, message, ...rest } = db;
    return new MillraceError(code, message, { ...rest, cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new MillraceError('internal', message, { cause: err });
}

export const badRequest = (message: string, details?: Record<string, unknown>): MillraceError =>
  new MillraceError('bad_request', message, details === undefined ? {} : { details });
