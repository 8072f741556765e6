import { describe, expect, it } from 'vitest';
import { isMillraceError } from '../../src/core/errors.js';
import { MachineQueues } from '../../src/machines/queues.js';

describe('machine queues', () => {
  it('a queued request whose wait runs out leaves the queue, freeing its slot', async () => {
    const q = new MachineQueues({ queueLimit: 1, maxActive: 10, memoryLimitMb: 0 });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const running = q.run('m', () => held);
    const timedOut = await q.run('m', async () => 'ran', 20).catch((e: unknown) => e);
    expect(isMillraceError(timedOut, 'deadline_exceeded')).toBe(true);
    // the slot is free again: another request may queue (it would be refused as unavailable otherwise)
    const next = q.run('m', async () => 'next');
    release();
    await running;
    expect(await next).toBe('next');
    expect(q.active).toBe(0);
  });

  it('a full queue is refused with unavailable, and a spent budget at once with deadline_exceeded', async () => {
    const q = new MachineQueues({ queueLimit: 1, maxActive: 10, memoryLimitMb: 0 });
    let release!: () => void;
    const running = q.run('m', () => new Promise<void>((r) => (release = r)));
    const waiting = q.run('m', async () => 'second');
    expect(isMillraceError(await q.run('m', async () => 1).catch((e: unknown) => e), 'unavailable')).toBe(true);
    release();
    await running;
    expect(await waiting).toBe('second');
    const r2 = q.run('m', () => new Promise<void>((r) => (release = r)));
    expect(isMillraceError(await q.run('m', async () => 1, 0).catch((e: unknown) => e), 'deadline_exceeded')).toBe(
      true,
    );
    release();
    await r2;
  });
});
