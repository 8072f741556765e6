import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
// Nothing else is imported: every face's table is in the one mapping without a face module loaded.
import { allErrorCodes, GrpcStatus, isErrorCode, MillraceError } from '../../src/core/errors.js';

const grpcName = new Map<number, string>(Object.entries(GrpcStatus).map(([k, v]) => [v, k]));

/** Rows of the error table in docs/errors.md: code -> [http, grpc, retry]. */
function readmeTable(): Map<string, [number, string, string]> {
  const readme = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const rows = new Map<string, [number, string, string]>();
  for (const m of readme.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \| ([A-Z_]+) \| (yes|no) \|/gm)) {
    rows.set(m[1]!, [Number(m[2]), m[3]!, m[4]!]);
  }
  return rows;
}

describe('error codes', () => {
  it('every registered code is in the docs/errors.md table with its statuses', () => {
    const table = readmeTable();
    const missing: string[] = [];
    const wrong: string[] = [];
    for (const [code, s] of Object.entries(allErrorCodes())) {
      const row = table.get(code);
      if (!row) missing.push(code);
      else if (row[0] !== s.http || row[1] !== grpcName.get(s.grpc) || row[2] !== (s.retryable ? 'yes' : 'no'))
        wrong.push(code);
    }
    expect(missing).toEqual([]);
    expect(wrong).toEqual([]);
  });

  it('the docs/errors.md table names no code that is not registered', () => {
    const unknown = [...readmeTable().keys()].filter((c) => !isErrorCode(c));
    expect(unknown).toEqual([]);
  });

  it('a face code maps to its own status, an unknown one is not a code', () => {
    expect(new MillraceError('topic_not_found', 'x').httpStatus).toBe(404);
    expect(new MillraceError('lock_held', 'x').retryable).toBe(true);
    expect(isErrorCode('no_such_code')).toBe(false);
  });
});
