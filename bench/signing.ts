/**
 * The cost of signed calls outward: requests to a processor over node:http
 * (the client the node uses, core/http-post.ts), answered by an SDK
 * `defineProcessor` handler, in three cases measured in the same run:
 *
 * - plain: no signing key, a processor without public keys (the baseline);
 * - signed: the node signs (ed25519 over method, path, body digest, time),
 *   the processor ignores it;
 * - signed+verified: the node signs and the processor verifies.
 *
 * A processor request carries the machine's history; BENCH_SIGN_BYTES (2000)
 * sets the body size. BENCH_SIGN_REQUESTS (3000) per case and round,
 * BENCH_SIGN_ROUNDS (3; order rotates, medians shown), 32 in flight. No
 * assertions: the box may be shared, so compare the ratios.
 */
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { jsonPost } from '../src/core/http-post.js';
import { requestSigner } from '../src/core/request-signing.js';
import { defineProcessor } from '../src/sdk/index.js';
import { fmtRate, pool, printTable, rate } from './support.js';

const REQUESTS = Number(process.env.BENCH_SIGN_REQUESTS ?? 3000);
const ROUNDS = Number(process.env.BENCH_SIGN_ROUNDS ?? 3);
const BYTES = Number(process.env.BENCH_SIGN_BYTES ?? 2000);
const CONCURRENCY = 32;

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/machines/p` };
}

export async function run(): Promise<void> {
  const keys = generateKeyPairSync('ed25519', {
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const step = { init: () => ({ events: [{ n: 1 }] }) };
  const open = await listen(defineProcessor(step).handler);
  const verifying = await listen(defineProcessor({ ...step, publicKeys: [keys.publicKey] }).handler);
  const signer = requestSigner(keys.privateKey);
  const body = JSON.stringify({
    kind: 'signal',
    signal: { type: 'init', args: { pad: 'x'.repeat(Math.max(0, BYTES - 200)) } },
    machine: {
      ns: 'p',
      id: 'm',
      status: 'working',
      aux_state: null,
      timer: null,
      tags: [],
      history: [],
      history_range: {},
    },
  });
  const cases = {
    plain: jsonPost(open.url),
    signed: jsonPost(open.url, signer),
    'signed+verified': jsonPost(verifying.url, signer),
  };
  const results: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  try {
    for (const [, post] of Object.entries(cases)) {
      await pool(300, CONCURRENCY, async () => {
        const r = await post(body, {}, 10_000);
        if (r.status !== 200) throw new Error(`warm-up: ${r.status} ${r.text}`);
      });
    }
    const names = Object.keys(cases) as Array<keyof typeof cases>;
    for (let round = 0; round < ROUNDS; round++) {
      const order = names.map((_, i) => names[(i + round) % names.length]!);
      for (const name of order) {
        const post = cases[name];
        const t0 = performance.now();
        await pool(REQUESTS, CONCURRENCY, async () => {
          const r = await post(body, {}, 10_000);
          if (r.status !== 200) throw new Error(`${name}: ${r.status} ${r.text}`);
        });
        results[name]!.push(rate(REQUESTS, performance.now() - t0));
      }
    }
  } finally {
    for (const s of [open.server, verifying.server]) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const base = median(results.plain!);
  printTable(
    ['case', 'calls/s (median)', 'vs plain', 'rounds'],
    Object.entries(results).map(([k, xs]) => [
      k,
      fmtRate(median(xs)),
      `${(median(xs) / base).toFixed(2)}x`,
      xs.map(fmtRate).join(' / '),
    ]),
  );
  process.stdout.write(
    `(${BYTES}-byte bodies, ${CONCURRENCY} in flight, client and processor in one process; load average ${(await import('node:os')).loadavg()[0]!.toFixed(1)})\n`,
  );
}
