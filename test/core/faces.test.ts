import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { GrpcStatus } from '../../src/core/errors.js';
import type { FaceSpec } from '../../src/face-spec.js';
import { BUILT_IN_FACE_SPECS } from '../../src/face-specs.js';
import { pipeSpec } from '../../src/pipe/spec.js';
import { nodeMigrations, Runtime } from '../../src/runtime.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';

// The runtime is given its faces explicitly; each declares its migrations, error codes and config section.
describe.each(DIALECTS)('faces declared to the runtime (%s)', (dialect) => {
  let env: TestEnv;
  afterEach(async () => {
    await env?.cleanup();
  });

  it('applies the core migrations and those of the faces it is given, no others', async () => {
    env = await createTestEnv(dialect);
    const rt = await Runtime.open(env.config, { faces: [pipeSpec], background: false });
    try {
      const applied = await rt.storage.shards[0]!.driver.appliedMigrations();
      expect(applied).toEqual(
        expect.arrayContaining([
          'core/0001_log',
          'auth/0001_tokens',
          'catalog/0001_definitions',
          ...pipeSpec.migrations.map((m) => m.id),
        ]),
      );
      expect(applied.filter((id) => /^(machines|ledger|bus|ops)\//.test(id))).toEqual([]);
      expect(await rt.ready()).toEqual({ ok: true, problems: [] });
    } finally {
      await rt.close();
    }
  });

  it('without a list, migrates for every face of this build', async () => {
    env = await createTestEnv(dialect);
    const rt = await Runtime.open(env.config, { background: false });
    try {
      const applied = await rt.storage.shards[0]!.driver.appliedMigrations();
      for (const f of BUILT_IN_FACE_SPECS)
        expect(applied).toEqual(expect.arrayContaining(f.migrations.map((m) => m.id)));
    } finally {
      await rt.close();
    }
  });
});

describe('face declarations the runtime refuses (nothing is opened or written)', () => {
  let env: TestEnv;
  afterEach(async () => {
    await env?.cleanup();
  });

  const refused = async (faces: FaceSpec[], message: RegExp) => {
    env = await createTestEnv('sqlite');
    await expect(Runtime.open(env.config, { faces })).rejects.toMatchObject({
      code: 'config_invalid',
      message: expect.stringMatching(message),
    });
    expect(existsSync(env.config.storage.shards[0]!.location)).toBe(false);
  };

  it('a face whose error codes core/errors.ts does not map', async () => {
    const stray: FaceSpec = {
      ...pipeSpec,
      name: 'stray',
      migrations: [],
      errors: { stray_code: { http: 418, grpc: GrpcStatus.UNKNOWN, description: 'not mapped' } },
    };
    await refused([stray], /face stray declares error codes .*: stray_code/);
  });

  it('a face that maps a known code to other statuses', async () => {
    const clash: FaceSpec = {
      ...pipeSpec,
      name: 'clash',
      migrations: [],
      errors: { session_not_found: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT, description: 'clash' } },
    };
    await refused([clash], /face clash declares error codes .*: session_not_found/);
  });

  it('a face given twice, and a migration two faces declare', async () => {
    await refused([pipeSpec, pipeSpec], /face pipe is given twice/);
    await env.cleanup();
    await refused([pipeSpec, { ...pipeSpec, name: 'copy' }], /migration pipe\/0001_\w+ of face copy is declared twice/);
  });

  it('nodeMigrations: the core first, then each face in the order given', () => {
    const ids = nodeMigrations([pipeSpec]).map((m) => m.id);
    expect(ids.slice(0, 1)).toEqual(['core/0001_log']);
    expect(ids.slice(-pipeSpec.migrations.length)).toEqual(pipeSpec.migrations.map((m) => m.id));
  });
});
