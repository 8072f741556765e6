import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Every module the SDK entry reaches at run time (type-only imports are erased), and the packages they load. */
function runtimeGraph(entry: string): { files: string[]; packages: Set<string> } {
  const files: string[] = [];
  const packages = new Set<string>();
  const todo = [entry];
  const seen = new Set<string>();
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    files.push(f);
    const src = readFileSync(f, 'utf8');
    for (const m of src.matchAll(/^\s*(?:import|export)\s+(type\s+)?(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm)) {
      if (m[1]) continue;
      const spec = m[2]!;
      if (spec.startsWith('.')) todo.push(resolve(dirname(f), spec.replace(/\.js$/, '.ts')));
      else packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  }
  return { files, packages };
}

describe('millrace/sdk stays a client', () => {
  it('loads no server module and no server dependency', () => {
    const { files, packages } = runtimeGraph(join(root, 'src/sdk/index.ts'));
    expect(files.length).toBeGreaterThan(5);
    const server = [
      'fastify',
      '@fastify/swagger',
      'better-sqlite3',
      'pg',
      'kysely',
      'pino',
      'prom-client',
      'amqplib',
      'ajv',
      'zod',
      'yaml',
      'commander',
    ];
    expect([...packages].filter((p) => server.includes(p))).toEqual([]);
    expect([...packages].filter((p) => !p.startsWith('node:')).sort()).toEqual(['@grpc/grpc-js', '@grpc/proto-loader']);
    const outside = files.map((f) => f.slice(root.length + 1)).filter((f) => !f.startsWith('src/sdk/'));
    // Only the pure error tables (and the database error classifier), the processor wire types, the request-signing format, the proto loader, the pipe stream client and its service's call guard are shared with the server.
    expect(outside.sort()).toEqual([
      'src/api/grpc/call-guard.ts',
      'src/api/grpc/pipe-service.ts',
      'src/api/grpc/protos.ts',
      'src/auth/error-codes.ts',
      'src/bus/errors.ts',
      'src/catalog/error-codes.ts',
      'src/core/db-errors.ts',
      'src/core/error-codes.ts',
      'src/core/errors.ts',
      'src/core/request-signing.ts',
      'src/ledger/errors.ts',
      'src/machines/errors.ts',
      'src/machines/wire.ts',
      'src/ops/errors.ts',
      'src/pipe/client.ts',
      'src/pipe/error-codes.ts',
    ]);
  });

  it.runIf(existsSync(join(root, 'dist/sdk/index.js')))('is exported as millrace/sdk from the build', () => {
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const m = await import('millrace/sdk'); console.log(Object.keys(m).sort().join(','))",
      ],
      { cwd: root, encoding: 'utf8' },
    );
    expect(out.trim().split(',')).toEqual(
      expect.arrayContaining([
        'defineProcessor',
        'definePipeHandler',
        'MachinesClient',
        'LedgerClient',
        'PipeClient',
        'BusClient',
        'BusGrpcClient',
        'PipeGrpcClient',
        'MillraceError',
        'ProcessorUnavailable',
      ]),
    );
  });
});
