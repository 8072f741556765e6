/**
 * The cost of the access check on HTTP, beside the same node with
 * authentication off, measured in the same run:
 *
 * - open: authentication off (the peer baseline);
 * - admin: the bootstrap admin token (a constant-time digest compare);
 * - api token: a runtime API token (one primary-key read of its row per
 *   request, so that a revocation is in force at once; scrypt ran once);
 * - jwt: an Ed25519 JWT (signature, issuer, audience, expiry per request).
 *
 * Two routes: `GET /v1/shards` (a cheap read, so the check dominates) and
 * `POST /v1/bus/topics/t/events` (one event; a durable write). Requests go
 * over keep-alive connections, BENCH_AUTH_CONCURRENCY (32) in flight,
 * BENCH_AUTH_REQUESTS (2000) per case and round, BENCH_AUTH_ROUNDS (3; the
 * cases rotate order each round, medians shown), BENCH_AUTH_DIALECTS
 * ("sqlite,postgres"). No assertions: the box may be shared, so compare the
 * ratios, not the absolute rates.
 */
import { exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildConfig, type ConfigInput } from '../src/core/config.js';
import { startNode, type Node } from '../src/serve.js';
import { createPgDatabase, dropPgDatabase, fmtRate, pgUrlFor, pool, printTable, rate, scratchDir } from './support.js';

const REQUESTS = Number(process.env.BENCH_AUTH_REQUESTS ?? 2000);
const ROUNDS = Number(process.env.BENCH_AUTH_ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_AUTH_CONCURRENCY ?? 32);
const DIALECTS = (process.env.BENCH_AUTH_DIALECTS ?? 'sqlite,postgres').split(',').map((s) => s.trim());
const ADMIN = 'bench-admin-token-0123456789abcdef';

async function measure(url: string, route: 'read' | 'publish', token: string | null): Promise<number> {
  const headers: Record<string, string> = token === null ? {} : { authorization: `Bearer ${token}` };
  const one = async (): Promise<void> => {
    const r =
      route === 'read'
        ? await fetch(`${url}/v1/shards`, { headers })
        : await fetch(`${url}/v1/bus/topics/t/events`, {
            method: 'POST',
            headers: { ...headers, 'content-type': 'application/json' },
            body: '{"events":[{"type":"e","data":1}]}',
          });
    await r.arrayBuffer();
    if (r.status !== 200) throw new Error(`${route}: ${r.status}`);
  };
  await pool(200, CONCURRENCY, one); // warm-up (and the API token's one scrypt)
  const t0 = performance.now();
  await pool(REQUESTS, CONCURRENCY, one);
  return rate(REQUESTS, performance.now() - t0);
}

export async function run(): Promise<void> {
  for (const dialect of DIALECTS) {
    const scratch = scratchDir();
    const dbs: string[] = [];
    const nodes: Node[] = [];
    try {
      const storage = async (): Promise<Record<string, unknown>> => {
        if (dialect === 'sqlite') return { dialect };
        const db = await createPgDatabase();
        dbs.push(db);
        return { dialect, shards: [{ name: 's0', url: pgUrlFor(db) }] };
      };
      const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
      const keyFile = join(scratch.dir, 'jwt.pem');
      writeFileSync(keyFile, await exportSPKI(publicKey));
      const base = {
        http: { port: 0 },
        grpc: { enabled: false },
        logging: { level: 'silent' },
        bus: { topics: ['t'] },
      };
      const open = await startNode(
        buildConfig({
          ...base,
          node_id: 'bench-open',
          data_dir: join(scratch.dir, 'open'),
          storage: await storage(),
        } as ConfigInput),
        { env: {} },
      );
      nodes.push(open);
      const guarded = await startNode(
        buildConfig({
          ...base,
          node_id: 'bench-auth',
          data_dir: join(scratch.dir, 'auth'),
          storage: await storage(),
          auth: { jwt: { key_file: keyFile, issuer: 'bench', audience: 'millrace' } },
        } as ConfigInput),
        { env: { MILLRACE_ADMIN_TOKEN: ADMIN } },
      );
      nodes.push(guarded);
      const made = await fetch(`${guarded.url}/v1/auth/tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'bench', permissions: ['log:read', 'bus:publish:t'] }),
      });
      const apiToken = ((await made.json()) as { token: string }).token;
      const jwt = await new SignJWT({ permissions: ['log:read', 'bus:publish:t'] })
        .setProtectedHeader({ alg: 'EdDSA' })
        .setIssuer('bench')
        .setAudience('millrace')
        .setExpirationTime('1h')
        .sign(privateKey);

      const cases: Array<[string, string, string | null]> = [
        ['open (auth off)', open.url, null],
        ['admin token', guarded.url, ADMIN],
        ['api token', guarded.url, apiToken],
        ['jwt (EdDSA)', guarded.url, jwt],
      ];
      const rows: string[][] = [];
      for (const route of ['read', 'publish'] as const) {
        // Rounds in rotating order, medians: the box is shared, so one case must not get all the quiet moments.
        const results = new Map<string, number[]>(cases.map(([n]) => [n, []]));
        for (let round = 0; round < ROUNDS; round++) {
          for (let k = 0; k < cases.length; k++) {
            const [name, url, token] = cases[(k + round) % cases.length]!;
            results.get(name)!.push(await measure(url, route, token));
          }
        }
        const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
        const baseline = median(results.get('open (auth off)')!);
        for (const [name] of cases) {
          const m = median(results.get(name)!);
          rows.push([route, name, fmtRate(m), (m / baseline).toFixed(2)]);
        }
      }
      process.stdout.write(
        `\n${dialect}: ${REQUESTS} requests per case and round, ${ROUNDS} rounds (medians), ${CONCURRENCY} in flight; ratio = rate / open rate, same run\n`,
      );
      printTable(['route', 'credentials', 'req/s', 'ratio'], rows);
    } finally {
      for (const n of nodes.reverse()) await n.close();
      for (const db of dbs) await dropPgDatabase(db);
      scratch.cleanup();
    }
  }
}
