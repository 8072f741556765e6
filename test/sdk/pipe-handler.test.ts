import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { definePipeHandler, PipeClient, verdict, type Verdict } from '../../src/sdk/index.js';
import { waitFor } from '../support/env.js';
import { startSdkNode, type SdkNode } from './support.js';

describe('definePipeHandler answers pushes with verdicts', () => {
  let n: SdkNode;
  let pipe: PipeClient;
  const pushes: Array<{ id: string; repeats: number; records: string[]; traceparent: string | undefined }> = [];
  /** What the handler answers, by the session's first record. */
  const plan = new Map<string, (repeats: number, id: string) => Promise<Verdict | void> | Verdict | void>();

  beforeAll(async () => {
    n = await startSdkNode({ kinds: ['jobs', 'other'] });
    pipe = new PipeClient(n.url);
    const handler = definePipeHandler('jobs', async (s, records, ctx) => {
      const texts = records.map((r) => r.toString('utf8'));
      pushes.push({ id: s.id, repeats: s.repeats, records: texts, traceparent: ctx.traceparent });
      return plan.get(texts[0]!)?.(s.repeats, s.id);
    });
    n.router.routes.set('/pipe/jobs', handler.handler);
    // A handler of another kind mounted where "other" pushes: every push is refused, so it fails and is retried.
    n.router.routes.set('/pipe/other', handler.handler);
  });
  afterAll(async () => n?.close());

  const stored = async (kind: string, first: string): Promise<string> => {
    const id = await pipe.open(kind);
    await pipe.append(id, first, 1);
    await pipe.append(id, 'second', 2);
    await pipe.store(id, 0);
    return id;
  };
  const gone = async (id: string): Promise<boolean> =>
    pipe.get(id).then(
      () => false,
      (e: { code?: string }) => e.code === 'session_not_found',
    );

  it('delete: the session is finished in the answer', async () => {
    plan.set('del', () => verdict.delete());
    const id = await stored('jobs', 'del');
    await waitFor(() => gone(id), 10_000, 'the delete');
    expect(pushes.filter((p) => p.id === id)).toEqual([
      { id, repeats: 1, records: ['del', 'second'], traceparent: undefined },
    ]);
  });

  it('store: the session comes back after the timeout', async () => {
    plan.set('again', (repeats) => (repeats < 3 ? verdict.store(0.02) : verdict.delete()));
    const id = await stored('jobs', 'again');
    await waitFor(() => gone(id), 10_000, 'the third push');
    expect(pushes.filter((p) => p.id === id).map((p) => p.repeats)).toEqual([1, 2, 3]);
  });

  it('done (or nothing): the handler finishes the session through the API itself', async () => {
    plan.set('api', async (_r, id) => {
      await pipe.replace(id, 'rewritten');
      await pipe.store(id, 3600);
      return verdict.done();
    });
    const id = await stored('jobs', 'api');
    await waitFor(
      async () => (await pipe.get(id)).state === 'stored' && pushes.some((p) => p.id === id),
      10_000,
      'the handler',
    );
    expect((await pipe.records(id)).map((r) => r.toString())).toEqual(['rewritten']);
    expect(pushes.filter((p) => p.id === id)).toHaveLength(1);
  });

  it('a throw or a push of another kind is a failed push, retried with backoff', async () => {
    plan.set('throws', (repeats) => {
      if (repeats < 2) throw new Error('not now');
      return verdict.delete();
    });
    const id = await stored('jobs', 'throws');
    await waitFor(() => gone(id), 10_000, 'the retry');
    expect(pushes.filter((p) => p.id === id).map((p) => p.repeats)).toEqual([1, 2]);

    const other = await stored('other', 'never');
    await waitFor(async () => (await pipe.get(other)).lastError !== null, 10_000, 'a failed push');
    expect((await pipe.get(other)).lastError).toContain('kind_not_found');
    expect(pushes.some((p) => p.id === other)).toBe(false);
  });

  it('refuses a malformed push and an invalid store verdict', async () => {
    const h = definePipeHandler('jobs', () => verdict.store(-1));
    const post = (body: string): Promise<Response> => h.fetch(new Request('http://h/', { method: 'POST', body }));
    expect((await post('{')).status).toBe(400);
    expect((await post(JSON.stringify({ session: { id: 'x' }, records: [] }))).status).toBe(400);
    const bad = await post(JSON.stringify({ session: { id: 'x', kind: 'jobs', repeats: 1 }, records: ['YQ=='] }));
    expect(bad.status).toBe(500);
    const ok = definePipeHandler('jobs', (_s, records) =>
      records[0]!.toString() === 'a' ? verdict.store(5) : undefined,
    );
    const r = await ok.fetch(
      new Request('http://h/', {
        method: 'POST',
        body: JSON.stringify({ session: { id: 'x', kind: 'jobs', repeats: 1 }, records: ['YQ=='] }),
      }),
    );
    expect(await r.json()).toEqual({ action: 'store', timeout_s: 5 });
    const none = await ok.fetch(
      new Request('http://h/', {
        method: 'POST',
        body: JSON.stringify({ session: { id: 'x', kind: 'jobs', repeats: 1 }, records: ['Yg=='] }),
      }),
    );
    expect(none.status).toBe(204);
  });
});
