import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { runExcept } from '../../src/pipe/lane.js';

/**
 * A lane job whose shard may no longer write some of its sessions (a split
 * moved them, or is fencing them): those operations are answered `moved`
 * without being applied, and the others are applied as if the moved ones
 * had never been queued.
 */
describe('a lane job with moved sessions', () => {
  const op = fc.record({ id: fc.constantFrom('a', 'b', 'c', 'd', 'e'), n: fc.nat(1000) });

  it('answers moved in place, applies exactly the others in arrival order, each answer to its own operation', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 40 }), fc.subarray(['a', 'b', 'c', 'd', 'e']), async (ops, gone) => {
        const skip = new Set(gone);
        let applied: Array<{ id: string; n: number }> | undefined;
        const out = await runExcept(ops, skip, 'moved', (kept) => {
          applied = [...kept];
          return Promise.resolve(kept.map((o) => `${o.id}:${o.n}`));
        });
        expect(out).toHaveLength(ops.length);
        const kept = ops.filter((o) => !skip.has(o.id));
        // Nothing of a moved session reaches the writes; every other operation does, once, in order.
        expect(applied ?? []).toEqual(kept);
        if (kept.length === 0) expect(applied === undefined || applied.length === 0).toBe(true);
        ops.forEach((o, i) => expect(out[i]).toBe(skip.has(o.id) ? 'moved' : `${o.id}:${o.n}`));
      }),
      { numRuns: 300 },
    );
  });
});
