import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { startNode } from '../../src/serve.js';
import { pipeFace, type PipeFace } from '../../src/pipe/face.js';
import { createTestEnv, DIALECTS, waitFor } from '../support/env.js';
import { api, b64, HandlerServer } from './support.js';

describe.runIf(DIALECTS.includes('postgres'))('pipe on two nodes (postgres)', () => {
  it('never pushes one session to two handlers at once, and pushes each once', async () => {
    const handler = new HandlerServer();
    const url = await handler.start();
    const env = await createTestEnv('postgres', {
      extra: {
        scheduler: { poll_ms: 20 },
        pipe: { store_jitter_s: 0, kinds: { k: { handler: `${url}/k`, concurrency: 16 } } },
      } as never,
    });
    const a = await startNode(env.config, { faces: [pipeFace] });
    const b = await startNode(buildConfig({ ...env.input, node_id: `${env.input.node_id}-b` }), { faces: [pipeFace] });
    const active = new Set<string>();
    let overlaps = 0;
    try {
      handler.behaviours.set('/k', async (p) => {
        if (active.has(p.id)) overlaps++;
        active.add(p.id);
        await new Promise((r) => setTimeout(r, 5));
        // Finish through either node.
        const r = await api(p.id.charCodeAt(25) % 2 ? a.url : b.url, 'DELETE', `/v1/pipe/sessions/${p.id}`);
        active.delete(p.id);
        return r.status === 204 ? 200 : 500;
      });
      const N = 300;
      const ids: string[] = [];
      for (let i = 0; i < N; i += 50) {
        ids.push(
          ...(await Promise.all(
            Array.from({ length: 50 }, async (_, j) => {
              const base = (i + j) % 2 ? a.url : b.url;
              const id = (await api(base, 'POST', '/v1/pipe/sessions', { kind: 'k' })).body.id as string;
              await api(base, 'POST', `/v1/pipe/sessions/${id}/append`, { record: b64(`r${i + j}`) });
              await api(base, 'POST', `/v1/pipe/sessions/${id}/store`, { timeout_s: 0 });
              return id;
            }),
          )),
        );
      }
      await waitFor(
        async () => {
          const rows = await a.runtime.storage.shards[0]!.reader.all<{ n: number }>(
            'SELECT count(*)::int AS n FROM pipe_sessions',
          );
          return rows[0]!.n === 0;
        },
        150_000,
        'every session to be handled',
      );
      expect(overlaps).toBe(0);
      expect(handler.pushes.length).toBe(N);
      expect(new Set(handler.pushes.map((p) => p.id))).toEqual(new Set(ids));
      // The two nodes' pushes add up to one per session.
      const pushes = [a, b].map((n) => (n.faces[0] as PipeFace).pipe.stats.pushes);
      expect(pushes[0]! + pushes[1]!).toBe(N);
    } finally {
      await a.close();
      await b.close();
      await handler.close();
      await env.cleanup();
    }
    // Longer than the wait for the sessions above, so that a slow box reports what it waited for.
  }, 200_000);
});
