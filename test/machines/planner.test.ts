import { describe, expect, it } from 'vitest';
import { admission, applyPlan, parseRange, planStep, rangeIds, type MachineState } from '../../src/machines/planner.js';

const state = (over: Partial<MachineState> = {}): MachineState => ({
  ns: 'n',
  id: 'm',
  gen: 1,
  status: 'working',
  reason: null,
  auxState: { a: 1 },
  lastEvent: 3,
  timer: null,
  tags: ['held'],
  version: 5,
  ...over,
});
const NOW = Date.parse('2026-01-01T00:00:00Z');
const call = { kind: 'call', args: null } as const;

describe('machine step planner', () => {
  it('admits by status', () => {
    expect(admission(state({ status: 'none' }), { kind: 'signal', signal: { type: 'init', args: 1 } })).toBeNull();
    expect(admission(state(), { kind: 'signal', signal: { type: 'init', args: 1 } })).toBe('machine_already_exists');
    expect(admission(state({ status: 'none' }), call)).toBe('machine_not_found');
    expect(admission(state({ status: 'failed' }), call)).toBe('machine_failed');
    expect(admission(state(), { kind: 'repair', args: null })).toBe('machine_already_working');
    expect(admission(state({ status: 'failed' }), { kind: 'repair', args: null })).toBeNull();
    expect(admission(state({ status: 'failed' }), { kind: 'signal', signal: { type: 'timeout' } })).toBe('skip');
  });

  it('plans a full result', () => {
    const p = planStep(
      state(),
      call,
      {
        response: 7,
        events: [{ x: 1 }],
        aux_state: null,
        action: { timer: { set: { timeout: 1.5 }, range: { limit: 2, direction: 'backward' } }, tag: 'new' },
      },
      NOW,
    );
    expect(p).toEqual({
      kind: 'commit',
      events: [{ x: 1 }],
      auxState: null,
      timer: { dueAt: NOW + 1500, range: { limit: 2, direction: 'backward' } },
      tag: 'new',
      remove: false,
      response: 7,
    });
    const next = applyPlan(state(), p as Extract<typeof p, { kind: 'commit' }>, { starting: false });
    expect(next).toMatchObject({ lastEvent: 4, auxState: null, tags: ['held', 'new'], version: 6 });
    expect(planStep(state(), call, { action: { tag: 'held' } }, NOW)).toMatchObject({ kind: 'commit', tag: undefined });
    expect(
      planStep(state(), call, { action: { timer: { set: { deadline: '2026-01-02T00:00:00Z' } } } }, NOW),
    ).toMatchObject({ timer: { dueAt: NOW + 86_400_000 } });
    expect(planStep(state(), call, { action: { timer: 'unset', remove: true } }, NOW)).toMatchObject({
      timer: 'unset',
      remove: true,
    });
    expect(planStep(state(), call, {}, NOW)).toMatchObject({
      kind: 'commit',
      events: [],
      auxState: undefined,
      timer: 'keep',
      response: null,
    });
  });

  it('fails the machine on results of the wrong shape', () => {
    const bad: unknown[] = [
      null,
      [],
      'x',
      { events: {} },
      { extra: 1 },
      { action: [] },
      { action: { timer: { set: { timeout: -1 } } } },
      { action: { timer: { set: { deadline: 'tomorrow' } } } },
      { action: { timer: { set: {} } } },
      { action: { tag: '' } },
      { action: { remove: false } },
      { action: { timer: { set: { timeout: 1 }, range: { limit: 0 } } } },
      { repair_failed: { reason: 1 } },
    ];
    for (const r of bad) expect(planStep(state(), call, r, NOW).kind).toBe('fail');
    expect(
      planStep(state({ status: 'failed' }), { kind: 'repair', args: null }, { repair_failed: { reason: 'no' } }, NOW),
    ).toEqual({ kind: 'repair_failed', reason: 'no' });
  });

  it('selects history ranges in both directions', () => {
    expect(rangeIds(5, { direction: 'forward' })).toEqual([1, 2, 3, 4, 5]);
    expect(rangeIds(5, { direction: 'forward', after: 2, limit: 2 })).toEqual([3, 4]);
    expect(rangeIds(5, { direction: 'backward', limit: 2 })).toEqual([5, 4]);
    expect(rangeIds(5, { direction: 'backward', after: 2 })).toEqual([1]);
    expect(rangeIds(0, { direction: 'backward' })).toEqual([]);
    expect(parseRange({ after: 0 })).toMatch(/after/);
    expect(parseRange({ direction: 'up' })).toMatch(/direction/);
    expect(parseRange({ limit: 2 })).toEqual({ direction: 'forward', limit: 2 });
  });

  it('restarts a removed machine under a new incarnation with a clean slate', () => {
    const removed = state({ status: 'none', lastEvent: 9, tags: [], auxState: null });
    const p = planStep(removed, { kind: 'signal', signal: { type: 'init', args: null } }, { events: [1] }, NOW);
    const next = applyPlan(removed, p as Extract<typeof p, { kind: 'commit' }>, { starting: true });
    expect(next).toMatchObject({ gen: 2, lastEvent: 1, status: 'working', version: 6 });
  });
});
