/**
 * The protos pass `buf lint` (buf.yaml: STANDARD rules, exceptions documented
 * there), and the check is live: a proto breaking a rule is refused.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const BUF = join('node_modules', '.bin', 'buf');
const lint = (cwd: string) =>
  promisify(execFile)(join(process.cwd(), BUF), ['lint', '--error-format', 'json'], { cwd }).then(
    () => ({ code: 0, out: '' }),
    (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
  );

it('the protos pass buf lint', async () => {
  expect(await lint(process.cwd())).toEqual({ code: 0, out: '' });
});

it('buf lint refuses a proto that breaks a rule', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mr-buf-'));
  try {
    cpSync('buf.yaml', join(dir, 'buf.yaml'));
    cpSync('proto', join(dir, 'proto'), { recursive: true });
    writeFileSync(
      join(dir, 'proto/millrace/v1/extra.proto'),
      'syntax = "proto3";\npackage millrace.v1;\nmessage Extra { string badName = 1; }\n',
    );
    const r = await lint(dir);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain('FIELD_LOWER_SNAKE_CASE');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
