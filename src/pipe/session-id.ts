import { randomBytes } from 'node:crypto';
import type { MillraceError } from '../core/errors.js';
import type { Timer } from '../scheduler/scheduler.js';
import { sessionNotFound } from './errors.js';

const ID_RE = /^[0-9a-z]{26}$/;
const B32 = '0123456789abcdefghjkmnpqrstvwxyz';

/** 16 bytes: 48-bit millisecond time, then 80 random bits; Crockford base32, 26 characters, sortable by creation time. */
export function newSessionId(now: number): string {
  const b = randomBytes(16);
  b.writeUIntBE(Math.max(0, Math.floor(now)) % 2 ** 48, 0, 6);
  let bits = 0n;
  for (const x of b) bits = (bits << 8n) | BigInt(x);
  let out = '';
  for (let i = 0; i < 26; i++) {
    out = B32[Number(bits & 31n)]! + out;
    bits >>= 5n;
  }
  return out;
}

export function checkId(id: string, notFound: (id: string) => MillraceError = sessionNotFound): void {
  if (typeof id !== 'string' || !ID_RE.test(id)) throw notFound(String(id));
}

export const TIMER_REDELIVER = 'pipe.redeliver';
export const TIMER_LEASE = 'pipe.lease';

/** A session's single timer: its lease or its redelivery. */
export const timerKey = (id: string): string => `pipe/${id}`;
export const idOfTimer = (t: Timer): string => t.owner.slice(5);
