/**
 * Typed errors with stable codes. Every error that leaves millrace through any
 * transport is a MillraceError; the table below is the one place where a code
 * is mapped to an HTTP status and a gRPC status.
 */

import { classifyDbError } from './db-errors.js';
import { GrpcStatus, type ErrorCodeTable } from './error-codes.js';
import { TOKEN_ERRORS } from '../auth/error-codes.js';
import { CATALOG_ERRORS } from '../catalog/error-codes.js';
import { MACHINES_ERRORS } from '../machines/errors.js';
import { LEDGER_ERRORS } from '../ledger/errors.js';
import { PIPE_ERRORS } from '../pipe/error-codes.js';
import { BUS_ERRORS } from '../bus/errors.js';
import { OPS_ERRORS } from '../ops/errors.js';

export { defineErrorCodes, GrpcStatus, type CodeInput, type ErrorCodeTable } from './error-codes.js';

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

/** The core's codes (storage, log, access, availability, configuration); the faces' are in their tables below. */
export const ERROR_CODES = {
  // generic input errors
  bad_request: spec(400, GrpcStatus.INVALID_ARGUMENT, false, 'The request is malformed or fails validation.'),
  bad_json: spec(400, GrpcStatus.INVALID_ARGUMENT, false, 'The request body is not valid JSON.'),
  not_found: spec(404, GrpcStatus.NOT_FOUND, false, 'No such route or resource.'),
  method_not_allowed: spec(405, GrpcStatus.UNIMPLEMENTED, false, 'The route does not accept this method.'),
  payload_too_large: spec(413, GrpcStatus.RESOURCE_EXHAUSTED, false, 'The request body is larger than allowed.'),
  unsupported_media_type: spec(
    415,
    GrpcStatus.INVALID_ARGUMENT,
    false,
    'The request body has an unsupported content type.',
  ),
  // access control
  unauthenticated: spec(
    401,
    GrpcStatus.UNAUTHENTICATED,
    false,
    'No valid credentials: send `Authorization: Bearer <token>` (gRPC: `authorization` metadata).',
  ),
  permission_denied: spec(
    403,
    GrpcStatus.PERMISSION_DENIED,
    false,
    'The credentials lack the permission named in details.permission; nothing was done.',
  ),
  rate_limited: spec(
    429,
    GrpcStatus.RESOURCE_EXHAUSTED,
    true,
    'The principal sent more requests than its rate limit allows; retry after Retry-After seconds. Nothing was done.',
  ),
  // storage and log
  shard_not_found: spec(404, GrpcStatus.NOT_FOUND, false, 'No shard with this name.'),
  stream_conflict: spec(409, GrpcStatus.ABORTED, false, 'The stream is not at the expected sequence number.'),
  conflict: spec(
    409,
    GrpcStatus.ABORTED,
    false,
    'The write conflicts with stored data (a uniqueness or integrity rule); nothing of it was written.',
  ),
  position_expired: spec(
    410,
    GrpcStatus.OUT_OF_RANGE,
    false,
    'Retention removed events after the reader\'s position (details: per shard, the events lost and the horizon); reconnect with on_expired "resume" to continue with a gap notice, or read from the horizon.',
  ),
  // growing: splitting a shard
  shard_moved: spec(
    503,
    GrpcStatus.UNAVAILABLE,
    true,
    "The key's hash range is moving to another shard (a split is cutting over) or has moved since this node routed the request; nothing was written. Retry: the node routes by the new table.",
  ),
  split_invalid: spec(
    400,
    GrpcStatus.INVALID_ARGUMENT,
    false,
    "The split request names no shard, a target that is not an empty spare shard of the configuration, or a bound outside the shard's range; nothing was written.",
  ),
  split_in_progress: spec(
    409,
    GrpcStatus.FAILED_PRECONDITION,
    false,
    'A split of this shard (or into this target) is already under way; nothing was written.',
  ),
  // backup and restore
  backup_invalid: spec(
    400,
    GrpcStatus.INVALID_ARGUMENT,
    false,
    'The backup directory holds no complete backup (no manifest: it was interrupted), a file does not match its manifest checksum, or its shards do not match the configuration.',
  ),
  backup_target_not_empty: spec(
    409,
    GrpcStatus.FAILED_PRECONDITION,
    false,
    'A backup goes into a new or empty directory; nothing was written.',
  ),
  restore_target_not_empty: spec(
    409,
    GrpcStatus.FAILED_PRECONDITION,
    false,
    'A restore goes into a new data dir or empty databases; nothing was written.',
  ),
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
 * The tables of the faces (and of API tokens and runtime definitions), each
 * the data of its own module (`<face>/errors.ts`, declared to the runtime by
 * its face too). A face with new codes adds its table here: this is the one
 * place that maps codes to statuses.
 */
const TABLES = [
  TOKEN_ERRORS,
  CATALOG_ERRORS,
  MACHINES_ERRORS,
  LEDGER_ERRORS,
  PIPE_ERRORS,
  BUS_ERRORS,
  OPS_ERRORS,
] as const;

/** Every code of the core and of the tables, one union (a code misspelt is a compile error). */
export type ErrorCode =
  | keyof typeof ERROR_CODES
  | keyof typeof TOKEN_ERRORS
  | keyof typeof CATALOG_ERRORS
  | keyof typeof MACHINES_ERRORS
  | keyof typeof LEDGER_ERRORS
  | keyof typeof PIPE_ERRORS
  | keyof typeof BUS_ERRORS
  | keyof typeof OPS_ERRORS;

/** Every code, core ones first; a code in two tables must carry the same statuses. */
const allCodes = new Map<string, CodeSpec>(Object.entries(ERROR_CODES));
for (const table of TABLES as readonly ErrorCodeTable[]) {
  for (const [code, s] of Object.entries(table)) {
    const existing = allCodes.get(code);
    if (existing === undefined) allCodes.set(code, spec(s.http, s.grpc, s.retryable ?? false, s.description));
    else if (existing.http !== s.http || existing.grpc !== s.grpc)
      throw new Error(`error code ${code} defined twice with different statuses`);
  }
}

/** Whether `code` is in one of the tables (codes from a wire are checked with this). */
export function isErrorCode(code: string): code is ErrorCode {
  return allCodes.has(code);
}

export function codeSpec(code: string): CodeSpec {
  return allCodes.get(code) ?? ERROR_CODES.internal;
}

export function allErrorCodes(): Record<string, CodeSpec> {
  return Object.fromEntries(allCodes);
}

export class MillraceError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  /** Seconds after which a retry makes sense (sent as Retry-After). */
  readonly retryAfterS: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { details?: Record<string, unknown>; retryAfterS?: number; cause?: unknown } = {},
  ) {
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
