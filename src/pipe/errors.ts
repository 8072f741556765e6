import { MillraceError } from '../core/errors.js';

export { PIPE_ERRORS } from './error-codes.js';

export const sessionNotFound = (id: string): MillraceError =>
  new MillraceError('session_not_found', `no pipe session ${JSON.stringify(id)}`, { details: { session: id } });

export const sessionClosed = (id: string, state: string): MillraceError =>
  new MillraceError('session_closed', `pipe session ${id} is ${state}: writing is closed`, {
    details: { session: id, state },
  });

export const kindNotFound = (kind: unknown): MillraceError =>
  new MillraceError('kind_not_found', `no pipe kind ${JSON.stringify(kind)} is configured`, { details: { kind } });

export const deadLetterNotFound = (id: string): MillraceError =>
  new MillraceError('dead_letter_not_found', `no dead-lettered pipe session ${JSON.stringify(id)}`, {
    details: { session: id },
  });
