import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwtVerifier } from '../../src/auth/jwt.js';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { createTestEnv, type TestEnv } from '../support/env.js';
import { AUDIENCE, bearer, ISSUER, jwtIssuer } from './support.js';

describe('JWT authentication (sqlite)', () => {
  let env: TestEnv;
  let node: Node;
  let issuer: Awaited<ReturnType<typeof jwtIssuer>>;

  beforeAll(async () => {
    env = await createTestEnv('sqlite');
    issuer = await jwtIssuer(env.dataDir);
    const input = {
      ...env.input,
      http: { port: 0, drain_timeout_ms: 300 },
      auth: { jwt: { key_file: issuer.keyFile, issuer: ISSUER, audience: AUDIENCE, clock_tolerance_s: 0 } },
    } as ConfigInput;
    node = await startNode(buildConfig(input), { env: {} });
  });
  afterAll(async () => {
    await node?.close();
    await env?.cleanup();
  });
  const shards = (token: string) => fetch(`${node.url}/v1/shards`, { headers: bearer(token) }).then((r) => r.status);

  it('accepts a token signed by the key for the issuer and audience, and grants its permissions claim', async () => {
    expect(await shards(await issuer.mint(['log:read']))).toBe(200);
    expect(await shards(await issuer.mint(['bus:*']))).toBe(403);
  });

  it('refuses a wrong issuer, a wrong audience, an expired token and another key', async () => {
    expect(await shards(await issuer.mint(['log:read'], { iss: 'https://elsewhere' }))).toBe(401);
    expect(await shards(await issuer.mint(['log:read'], { aud: 'someone-else' }))).toBe(401);
    expect(await shards(await issuer.mint(['log:read'], { expS: -60 }))).toBe(401);
    const other = await jwtIssuer(mkdtempSync(join(tmpdir(), 'mr-jwt-')));
    expect(await shards(await other.mint(['log:read']))).toBe(401);
    // No expiry at all.
    const noExp = await new SignJWT({ permissions: ['log:read'] })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .sign(issuer.privateKey);
    expect(await shards(noExp)).toBe(401);
    // A malformed permission makes the whole token invalid.
    expect(await shards(await issuer.mint(['log:read', 'nonsense']))).toBe(401);
  });

  it('verifies against a JWKS file by key id, with permissions as a space-separated string', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mr-jwks-'));
    try {
      const { publicKey, privateKey } = await generateKeyPair('ES256');
      const jwk = { ...(await exportJWK(publicKey)), kid: 'k-1', alg: 'ES256' };
      const file = join(dir, 'jwks.json');
      writeFileSync(file, JSON.stringify({ keys: [jwk] }));
      const v = new JwtVerifier({
        jwks_file: file,
        issuer: ISSUER,
        audience: AUDIENCE,
        permissions_claim: 'scope',
        clock_tolerance_s: 0,
      });
      const sign = (kid: string) =>
        new SignJWT({ scope: 'log:read bus:publish:orders' })
          .setProtectedHeader({ alg: 'ES256', kid })
          .setIssuer(ISSUER)
          .setAudience(AUDIENCE)
          .setSubject('svc')
          .setExpirationTime('5m')
          .sign(privateKey);
      expect(await v.verify(await sign('k-1'))).toEqual({
        id: 'jwt:svc',
        source: 'jwt',
        name: 'svc',
        permissions: ['log:read', 'bus:publish:orders'],
      });
      expect(await v.verify(await sign('unknown'))).toBeNull();
      expect(
        () =>
          new JwtVerifier({
            jwks_file: join(dir, 'missing.json'),
            issuer: ISSUER,
            audience: AUDIENCE,
            permissions_claim: 'p',
            clock_tolerance_s: 0,
          }),
      ).toThrow(/cannot read/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
