import { MillraceError } from '../core/errors.js';

/** Largest amount of one event, in minor units: what a 64-bit integer column holds. */
export const MAX_EVENT_UNITS = (1n << 63n) - 1n;

const DECIMAL = /^(\d+)(?:\.(\d+))?$/;

/**
 * Parses a positive decimal string into minor units at `scale`. Amounts are
 * never JavaScript numbers: "12.34" at scale 2 is 1234n.
 */
export function parseAmount(text: unknown, scale: number, where: string): bigint {
  if (typeof text !== 'string' || text.length > 64)
    throw invalidAmount(`${where}: amount must be a decimal string such as "12.34"`);
  const m = DECIMAL.exec(text);
  if (m === null) throw invalidAmount(`${where}: amount "${text}" is not a decimal string such as "12.34"`);
  const frac = m[2] ?? '';
  if (frac.length > scale)
    throw invalidAmount(`${where}: amount "${text}" has ${frac.length} decimals; this account type allows ${scale}`);
  const units = BigInt(m[1]! + frac.padEnd(scale, '0'));
  if (units <= 0n) throw invalidAmount(`${where}: amount must be greater than zero`);
  if (units > MAX_EVENT_UNITS) {
    throw new MillraceError(
      'overflow',
      `${where}: amount "${text}" is larger than one event can hold (${formatUnits(MAX_EVENT_UNITS, scale)})`,
    );
  }
  return units;
}

/** Minor units back to a decimal string with exactly `scale` decimals. */
export function formatUnits(units: bigint, scale: number): string {
  const neg = units < 0n;
  const s = (neg ? -units : units).toString().padStart(scale + 1, '0');
  const int = scale === 0 ? s : s.slice(0, s.length - scale);
  const frac = scale === 0 ? '' : `.${s.slice(s.length - scale)}`;
  return `${neg ? '-' : ''}${int}${frac}`;
}

/** Exact integer text from storage (SQLite INTEGER/TEXT, PostgreSQL NUMERIC) to BigInt. */
export function unitsOf(v: unknown): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return BigInt(v);
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
  throw new MillraceError('internal', `not an exact integer from storage: ${String(v)}`);
}

function invalidAmount(message: string): MillraceError {
  return new MillraceError('invalid_amount', message);
}
