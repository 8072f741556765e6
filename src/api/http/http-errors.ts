import type { FastifyError } from 'fastify';
import { MillraceError, toMillraceError } from '../../core/errors.js';

/** Translates any error into the one response shape, with its status from the code table. */
export function toHttpError(err: unknown): MillraceError {
  if (err instanceof MillraceError) return err;
  const fe = err as FastifyError & { validation?: unknown[]; validationContext?: string };
  if (fe && Array.isArray(fe.validation)) {
    return new MillraceError('bad_request', fe.message, {
      details: { part: fe.validationContext, problems: fe.validation },
    });
  }
  switch (fe?.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new MillraceError('bad_json', fe.message);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new MillraceError('payload_too_large', fe.message);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new MillraceError('unsupported_media_type', fe.message);
    default:
      break;
  }
  if (fe instanceof SyntaxError) return new MillraceError('bad_json', fe.message);
  if (typeof fe?.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500)
    return new MillraceError('bad_request', fe.message);
  return toMillraceError(err);
}
