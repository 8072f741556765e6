/**
 * What an error-code table is made of: the gRPC statuses, and the shape of a
 * code's entry. Tables are plain data (a face's `errors.ts`); the one mapping
 * of every code to its statuses is composed from them in `errors.ts`.
 */

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

/** One code of a table: its HTTP and gRPC statuses, whether a retry may succeed (default no), and what it means. */
export interface CodeInput {
  http: number;
  grpc: number;
  retryable?: boolean;
  description: string;
}

/** A table of codes, by code. */
export type ErrorCodeTable = Readonly<Record<string, CodeInput>>;

/** Types a table (keeping its code names as literal types); it registers nothing. */
export function defineErrorCodes<const T extends Record<string, CodeInput>>(codes: T): T {
  return codes;
}
