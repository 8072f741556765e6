import type { FastifyInstance } from 'fastify';
import type { ManualClock } from '../../src/core/clock.js';
import { buildHttpServer } from '../../src/api/http/server.js';
import { faceRoutes } from '../../src/api/http/face-routes.js';
import { createLedgerFace, type LedgerFace } from '../../src/ledger/ledger-face.js';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv, type Dialect, type TestEnv } from '../support/env.js';

export const LEDGER_CONFIG = {
  accounts: {
    commission: {
      key: ['client_id', 'currency'],
      aux: ['product', 'region'],
      groupings: [['product'], ['region'], ['product', 'region']],
      shard_key: ['client_id'],
      scale: 2,
    },
    units: { key: ['contract_id'], aux: ['kind'], groupings: [['kind']], scale: 0 },
    micro: { key: ['wallet'], scale: 6 },
  },
  locks: { client: { key: ['client_id'] } },
  states: { contract: { key: ['contract_id'] } },
  aggregation: { period: 'day', timezone: 'UTC', enabled: false },
};

export interface LedgerHarness {
  env: TestEnv;
  rt: Runtime;
  face: LedgerFace;
  app: FastifyInstance;
  post(url: string, body: unknown): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

export async function openLedger(
  dialect: Dialect,
  opts: { shards?: number; clock?: ManualClock; ledger?: Record<string, unknown> } = {},
): Promise<LedgerHarness> {
  const env = await createTestEnv(dialect, {
    shards: opts.shards ?? 1,
    extra: { ledger: (opts.ledger ?? LEDGER_CONFIG) as never },
  });
  const rt = await Runtime.open(env.config, opts.clock ? { clock: opts.clock } : {});
  const face = createLedgerFace(rt);
  const app = await buildHttpServer(rt, [faceRoutes(face)!]);
  await face.start();
  return {
    env,
    rt,
    face,
    app,
    async post(url, body) {
      const r = await app.inject({ method: 'POST', url, payload: body as object });
      return { status: r.statusCode, body: r.json() };
    },
    async close() {
      await app.close();
      await face.stop();
      await rt.close();
      await env.cleanup();
    },
  };
}
