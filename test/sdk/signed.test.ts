import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { Runtime } from '../../src/runtime.js';
import {
  definePipeHandler,
  defineProcessor,
  MachinesClient,
  PipeClient,
  requestSigner,
  SIGNATURE_HEADER,
  signatureVerifier,
  verdict,
} from '../../src/sdk/index.js';
import { createTestEnv, waitFor } from '../support/env.js';
import { startSdkNode, type SdkNode } from './support.js';

const ed25519 = () =>
  generateKeyPairSync('ed25519', {
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });

describe('request signatures (core/request-signing)', () => {
  const { publicKey, privateKey } = ed25519();
  const other = ed25519();

  it('accepts its own signature and refuses a changed method, path, body, time or key', () => {
    const t = 1_700_000_000_000;
    const h = requestSigner(privateKey, () => t).header('POST', '/machines/p?x=1', '{"a":1}');
    const v = signatureVerifier([other.publicKey, publicKey], { now: () => t + 1000 });
    expect(v.check(h, 'POST', '/machines/p?x=1', '{"a":1}')).toBeNull();
    expect(v.check(h, 'PUT', '/machines/p?x=1', '{"a":1}')).toBe('forged');
    expect(v.check(h, 'POST', '/machines/q?x=1', '{"a":1}')).toBe('forged');
    expect(v.check(h, 'POST', '/machines/p?x=1', '{"a":2}')).toBe('forged');
    expect(v.check(h.replace(`t=${t}`, `t=${t + 1}`), 'POST', '/machines/p?x=1', '{"a":1}')).toBe('forged');
    expect(signatureVerifier([other.publicKey], { now: () => t }).check(h, 'POST', '/machines/p?x=1', '{"a":1}')).toBe(
      'forged',
    );
    expect(
      signatureVerifier([publicKey], { now: () => t + 61_000 }).check(h, 'POST', '/machines/p?x=1', '{"a":1}'),
    ).toBe('stale');
    expect(
      signatureVerifier([publicKey], { now: () => t - 61_000 }).check(h, 'POST', '/machines/p?x=1', '{"a":1}'),
    ).toBe('stale');
    expect(v.check(undefined, 'POST', '/', '')).toBe('missing');
    expect(v.check('v1;t=1;sig=abc', 'POST', '/', '')).toBe('malformed');
  });

  it('refuses keys that are not ed25519', () => {
    const rsa = generateKeyPairSync('rsa', {
      modulusLength: 1024,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    expect(() => requestSigner(rsa.privateKey)).toThrow(/ed25519/);
    expect(() => signatureVerifier([rsa.publicKey])).toThrow(/ed25519/);
    expect(() => signatureVerifier([])).toThrow();
  });
});

describe('signed calls to processors and pipe handlers', () => {
  let n: SdkNode;
  let dir: string;
  const keys = ed25519();
  const steps: string[] = [];
  const pushes: string[] = [];
  const processor = defineProcessor<{
    event: { n: number };
    aux: null;
    init: { args: { n: number }; response: { ok: true } };
  }>({
    publicKeys: [keys.publicKey],
    init: (args) => {
      steps.push(`init ${args.n}`);
      return { events: [{ n: args.n }], response: { ok: true } };
    },
  });
  const handler = definePipeHandler(
    'jobs',
    (s) => {
      pushes.push(s.id);
      return verdict.delete();
    },
    { publicKeys: [keys.publicKey] },
  );

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mr-sign-'));
    const keyFile = join(dir, 'signing.pem');
    writeFileSync(keyFile, keys.privateKey);
    n = await startSdkNode({ namespaces: ['p'], kinds: ['jobs'], auth: { signing_key_file: keyFile } });
    n.router.routes.set('/machines/p', processor.handler);
    n.router.routes.set('/pipe/jobs', handler.handler);
  });
  afterAll(async () => {
    await n?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the node signs its calls: the processor and the pipe handler accept them', async () => {
    const m = new MachinesClient(n.url);
    expect((await m.start('p', 'a', { n: 1 })).response).toEqual({ ok: true });
    expect(steps).toContain('init 1');
    const pipe = new PipeClient(n.url);
    const id = await pipe.open('jobs');
    await pipe.append(id, 'x');
    await waitFor(async () => pushes.includes(id), 10_000, 'the signed push');
  });

  it('refuses unsigned, forged and stale requests with 401 before any callback runs', async () => {
    const before = { steps: steps.length, pushes: pushes.length };
    const body = JSON.stringify({
      kind: 'signal',
      signal: { type: 'init', args: { n: 99 } },
      machine: {
        ns: 'p',
        id: 'forged',
        status: 'working',
        aux_state: null,
        timer: null,
        tags: [],
        history: [],
        history_range: {},
      },
    });
    const post = async (h: typeof processor, path: string, b: string, header?: string) => {
      const r = await h.fetch(
        new Request(`http://proc${path}`, {
          method: 'POST',
          body: b,
          headers: header === undefined ? {} : { [SIGNATURE_HEADER]: header },
        }),
      );
      return { status: r.status, body: (await r.json()) as { error: { code: string; message: string } } };
    };
    const unsigned = await post(processor, '/machines/p', body);
    expect(unsigned.status).toBe(401);
    expect(unsigned.body.error.code).toBe('unauthenticated');
    // Signed by a key the processor does not trust.
    const intruder = requestSigner(ed25519().privateKey);
    expect((await post(processor, '/machines/p', body, intruder.header('POST', '/machines/p', body))).status).toBe(401);
    // A genuine signature of another body (a captured request with its body replaced).
    const genuine = requestSigner(keys.privateKey);
    expect((await post(processor, '/machines/p', body, genuine.header('POST', '/machines/p', '{}'))).status).toBe(401);
    // A genuine signature made two minutes ago.
    const old = requestSigner(keys.privateKey, () => Date.now() - 120_000);
    const stale = await post(processor, '/machines/p', body, old.header('POST', '/machines/p', body));
    expect(stale.status).toBe(401);
    expect(stale.body.error.message).toMatch(/too old/);
    const push = JSON.stringify({ session: { id: 'forged', kind: 'jobs', repeats: 0 }, records: [] });
    expect((await post(handler as typeof processor, '/pipe/jobs', push)).status).toBe(401);
    expect(
      (await post(handler as typeof processor, '/pipe/jobs', push, intruder.header('POST', '/pipe/jobs', push))).status,
    ).toBe(401);
    expect({ steps: steps.length, pushes: pushes.length }).toEqual(before);
    // The same request, signed with the trusted key, passes.
    expect((await post(processor, '/machines/p', body, genuine.header('POST', '/machines/p', body))).status).toBe(200);
  });

  it('a node without signing key sends unsigned requests, which a verifying processor refuses', async () => {
    const plain = await startSdkNode({ namespaces: ['p'] });
    try {
      plain.router.routes.set('/machines/p', processor.handler);
      await expect(new MachinesClient(plain.url).start('p', 'b', { n: 2 })).rejects.toThrow(/failed/);
      expect(steps).not.toContain('init 2');
    } finally {
      await plain.close();
    }
  });
});

describe('auth.signing_key_file', () => {
  it('is config_invalid when missing or not an ed25519 private key', async () => {
    const env = await createTestEnv('sqlite');
    const dir = mkdtempSync(join(tmpdir(), 'mr-sign-'));
    try {
      const rsa = generateKeyPairSync('rsa', {
        modulusLength: 1024,
        privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
        publicKeyEncoding: { type: 'spki', format: 'pem' },
      });
      writeFileSync(join(dir, 'rsa.pem'), rsa.privateKey);
      for (const f of [join(dir, 'rsa.pem'), join(dir, 'missing.pem')]) {
        await expect(Runtime.open(buildConfig({ ...env.input, auth: { signing_key_file: f } }))).rejects.toMatchObject({
          code: 'config_invalid',
        });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await env.cleanup();
    }
  });
});
