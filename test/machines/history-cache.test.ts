import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  frozenEvent,
  MachineCache,
  rangeSpan,
  RANGE_MAX,
  type MachineEvent,
} from '../../src/machines/history-cache.js';
import type { HistoryRange } from '../../src/machines/config.js';
import type { MachineState } from '../../src/machines/planner.js';
import { buildConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { requestJson } from '../../src/machines/processor.js';

const rangeArb: fc.Arbitrary<HistoryRange> = fc.record(
  {
    after: fc.integer({ min: 1, max: 40 }),
    limit: fc.integer({ min: 1, max: 40 }),
    direction: fc.constantFrom('forward' as const, 'backward' as const),
  },
  { requiredKeys: ['direction'] },
);

/** What the log answers for a range: seq > after ascending, or seq < after descending, limited. */
function logIds(last: number, r: HistoryRange): number[] {
  const all = Array.from({ length: last }, (_, i) => i + 1);
  const limit = Math.min(r.limit ?? RANGE_MAX, RANGE_MAX);
  if (r.direction === 'backward')
    return all
      .filter((i) => i < (r.after ?? Infinity))
      .reverse()
      .slice(0, limit);
  return all.filter((i) => i > (r.after ?? 0)).slice(0, limit);
}

describe('rangeSpan', () => {
  it('selects the ids the log reads for the range', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 50 }), rangeArb, (last, r) => {
        const ids = logIds(last, r);
        const span = rangeSpan(last, r);
        if (ids.length === 0) expect(span).toBeNull();
        else expect(span).toEqual({ lo: Math.min(...ids), hi: Math.max(...ids) });
      }),
      { numRuns: 2000 },
    );
  });
});

const state = (gen: number, lastEvent: number, status: MachineState['status'] = 'working'): MachineState => ({
  ns: 'n',
  id: 'm',
  gen,
  status,
  reason: null,
  auxState: null,
  lastEvent,
  timer: null,
  tags: [],
  version: 0,
});

/** The events of generation `gen`, as a log holds them: the same id always has the same data. */
function truth(gen: number, id: number): MachineEvent {
  return {
    id,
    created_at: new Date(gen * 1000 + id).toISOString(),
    data: { gen, id, pad: 'x'.repeat((gen * 7 + id * 13) % 50) },
  };
}

function made(gen: number, from: number, to: number): { events: MachineEvent[]; sizes: number[] } {
  const events: MachineEvent[] = [];
  const sizes: number[] = [];
  for (let id = from; id <= to; id++) {
    const t = truth(gen, id);
    const f = frozenEvent(id, t.created_at, JSON.stringify(t.data));
    events.push(f.event);
    sizes.push(f.bytes);
  }
  return { events, sizes };
}

type Cmd =
  | { op: 'commit'; m: number; n: number }
  | { op: 'restart'; m: number }
  | { op: 'remove'; m: number }
  | { op: 'read'; m: number; range: HistoryRange }
  | { op: 'moved'; m: number; n: number }
  | { op: 'forget'; m: number };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ op: fc.constant('commit' as const), m: fc.nat(2), n: fc.integer({ min: 0, max: 4 }) }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('restart' as const), m: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('remove' as const), m: fc.nat(2) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('read' as const), m: fc.nat(2), range: rangeArb }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('moved' as const), m: fc.nat(2), n: fc.integer({ min: 1, max: 5 }) }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('forget' as const), m: fc.nat(2) }) },
);

describe('MachineCache', () => {
  // A model of three machines whose steps read through the cache the way the
  // face does (slice, read the missing ids, add them, commit, retain); the
  // cache must only ever answer events equal to the log's, and keep its byte
  // count exact and within budget.
  it('answers only what the log holds, within its bounds', () => {
    fc.assert(
      fc.property(
        fc.array(cmdArb, { minLength: 1, maxLength: 80 }),
        fc.oneof(fc.integer({ min: 0, max: 3 }), fc.constant(100)),
        fc.oneof(fc.integer({ min: 0, max: 6000 }), fc.constant(1 << 20)),
        fc.constantFrom<HistoryRange | null>(
          null,
          { direction: 'backward', limit: 3 },
          { direction: 'forward', after: 2, limit: 4 },
          { direction: 'forward', limit: 5 },
        ),
        (cmds, maxEntries, maxBytes, nsRange) => {
          const cache = new MachineCache(maxEntries, maxBytes);
          const machines = Array.from({ length: 3 }, () => state(1, 0));
          const key = (m: number) => `k${m}`;
          const read = (m: number, range: HistoryRange): MachineEvent[] => {
            const s = machines[m]!;
            const span = rangeSpan(s.lastEvent, range);
            if (span === null) return [];
            const hit = cache.slice(key(m), s, span.lo, span.hi);
            const fetch = (lo: number, hi: number): MachineEvent[] => {
              const got = made(s.gen, lo, hi);
              cache.add(key(m), s, lo, got.events, got.sizes);
              return got.events;
            };
            let events: MachineEvent[];
            if (hit === undefined) events = fetch(span.lo, span.hi);
            else {
              const to = hit.from + hit.events.length - 1;
              events = [
                ...(hit.from > span.lo ? fetch(span.lo, hit.from - 1) : []),
                ...hit.events,
                ...(to < span.hi ? fetch(to + 1, span.hi) : []),
              ];
            }
            return range.direction === 'backward' ? events.reverse() : events;
          };
          const full: HistoryRange = nsRange ?? { direction: 'forward' };
          for (const c of cmds) {
            const s = machines[c.m]!;
            const k = key(c.m);
            // A step starts from the cached state or the stored one.
            if (c.op !== 'moved' && c.op !== 'forget') {
              const cached = cache.state(k);
              if (cached === undefined) cache.put(k, s);
              else expect(cached).toBe(s);
            }
            switch (c.op) {
              case 'read': {
                const got = read(c.m, c.range);
                expect(got).toEqual(logIds(s.lastEvent, c.range).map((id) => truth(s.gen, id)));
                break;
              }
              case 'commit': {
                if (s.status === 'none') break;
                expect(read(c.m, full)).toEqual(logIds(s.lastEvent, full).map((id) => truth(s.gen, id)));
                const next = { ...s, lastEvent: s.lastEvent + c.n, version: s.version + 1 };
                machines[c.m] = next;
                cache.put(k, next);
                if (c.n > 0) {
                  const got = made(next.gen, s.lastEvent + 1, next.lastEvent);
                  cache.add(k, next, s.lastEvent + 1, got.events, got.sizes);
                }
                cache.retain(k, rangeSpan(next.lastEvent, full));
                break;
              }
              case 'restart': {
                const next = state(s.gen + 1, 0);
                machines[c.m] = next;
                cache.put(k, next);
                break;
              }
              case 'remove': {
                const next = { ...s, status: 'none' as const, lastEvent: 0, version: s.version + 1 };
                machines[c.m] = next;
                cache.put(k, next);
                break;
              }
              case 'moved': {
                // Another node committed events; this node learns it from the lease's row.
                if (s.status === 'none') break;
                const next = { ...s, lastEvent: s.lastEvent + c.n, version: s.version + 1 };
                machines[c.m] = next;
                if (cache.state(k) !== undefined) cache.put(k, next);
                break;
              }
              case 'forget':
                cache.delete(k);
                break;
            }
            expect(cache.size).toBeLessThanOrEqual(maxEntries);
            expect(cache.bytes).toBeLessThanOrEqual(maxBytes);
            expect(cache.bytes).toBeGreaterThanOrEqual(0);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('drops the least recently used machines beyond its byte budget, and keeps a machine to a quarter of it', () => {
    const per = frozenEvent(1, new Date(0).toISOString(), JSON.stringify({ pad: 'y'.repeat(100) })).bytes;
    const cache = new MachineCache(100, per * 40);
    const add = (m: string, n: number) => {
      const s = state(1, n);
      cache.put(m, s);
      const events: MachineEvent[] = [];
      const sizes: number[] = [];
      for (let id = 1; id <= n; id++) {
        const f = frozenEvent(id, new Date(0).toISOString(), JSON.stringify({ pad: 'y'.repeat(100) }));
        events.push(f.event);
        sizes.push(f.bytes);
      }
      cache.add(m, s, 1, events, sizes);
      return s;
    };
    const a = add('a', 10);
    add('b', 10);
    add('c', 10);
    expect(cache.bytes).toBe(30 * per);
    cache.state('a'); // a is now the most recently used
    add('d', 10);
    expect(cache.size).toBe(4);
    add('e', 10); // 50 events > 40: b (least recently used) goes
    expect(cache.state('b')).toBeUndefined();
    expect(cache.slice('a', a, 1, 10)?.events.length).toBe(10);
    expect(cache.bytes).toBe(40 * per);
    const big = add('f', 25); // a quarter of the budget is 10 events: ids 16..25 stay
    expect(cache.slice('f', big, 1, 25)?.from).toBe(16);
    expect(cache.bytes).toBeLessThanOrEqual(40 * per);
  });

  it('never serves the events of another generation, nor past the last event of the state it is asked for', () => {
    const cache = new MachineCache(10, 1 << 20);
    const g1 = state(1, 3);
    cache.put('k', g1);
    const a = made(1, 1, 3);
    cache.add('k', g1, 1, a.events, a.sizes);
    expect(cache.slice('k', g1, 1, 3)?.events).toEqual([truth(1, 1), truth(1, 2), truth(1, 3)]);
    // Removed and started again (here or on another node): a new generation with events 1..2.
    const g2 = state(2, 2);
    cache.put('k', g2);
    expect(cache.slice('k', g2, 1, 2)).toBeUndefined();
    const b = made(2, 1, 2);
    cache.add('k', g2, 1, b.events, b.sizes);
    expect(cache.slice('k', g2, 1, 2)?.events).toEqual([truth(2, 1), truth(2, 2)]);
    // Another node committed events 3..5 of generation 2: the window stays, and ends where it ended.
    const moved = state(2, 5);
    cache.put('k', moved);
    expect(cache.slice('k', moved, 1, 5)).toEqual({ from: 1, events: [truth(2, 1), truth(2, 2)] });
    // A removed machine keeps nothing.
    cache.put('k', { ...moved, status: 'none', lastEvent: 0 });
    expect(cache.bytes).toBe(0);
  });

  it('keeps nothing with a zero budget or zero entries', () => {
    const none = new MachineCache(0, 1 << 20);
    none.put('a', state(1, 0));
    expect(none.state('a')).toBeUndefined();
    const noEvents = new MachineCache(10, 0);
    expect(noEvents.keepsEvents).toBe(false);
    const s = state(1, 3);
    noEvents.put('a', s);
    const got = made(1, 1, 3);
    noEvents.add('a', s, 1, got.events, got.sizes);
    expect(noEvents.slice('a', s, 1, 3)).toBeUndefined();
    expect(noEvents.bytes).toBe(0);
  });

  it('hands out frozen events', () => {
    const f = frozenEvent(1, new Date(0).toISOString(), '{"a":{"b":[1]}}');
    expect(Object.isFrozen(f.event)).toBe(true);
    expect(Object.isFrozen((f.event.data as { a: { b: number[] } }).a.b)).toBe(true);
  });
});

describe('machines.history_cache_mb', () => {
  const build = (machines: Record<string, unknown>) =>
    buildConfig({ storage: { dialect: 'sqlite', shards: [{ name: 's0' }] }, machines });

  it('defaults to 128 MiB and takes 0 (no events kept)', () => {
    expect(build({}).machines.history_cache_mb).toBe(128);
    expect(build({ history_cache_mb: 0 }).machines.history_cache_mb).toBe(0);
  });

  it('refuses a negative, fractional or non-numeric budget, and the retired cache_history_tail, with config_invalid', () => {
    for (const bad of [
      { history_cache_mb: -1 },
      { history_cache_mb: 1.5 },
      { history_cache_mb: '64' },
      { cache_history_tail: 100 },
    ]) {
      let err: unknown;
      try {
        build(bad);
      } catch (e) {
        err = e;
      }
      expect(isMillraceError(err, 'config_invalid'), `${JSON.stringify(bad)}: ${String(err)}`).toBe(true);
      expect((err as Error).message).toMatch(/history_cache_mb|cache_history_tail/);
    }
  });
});

describe('requestJson (a processor request with a cached history, as JSON)', () => {
  it('is exactly JSON.stringify of the request, whatever the events and the other fields hold', () => {
    fc.assert(
      fc.property(
        fc.array(fc.jsonValue(), { minLength: 0, maxLength: 30 }),
        fc.jsonValue(),
        fc.jsonValue(),
        (datas, args, aux) => {
          const history = datas.map(
            (d, i) =>
              frozenEvent(i + 1, new Date(1_700_000_000_000 + i).toISOString(), JSON.stringify(d) ?? 'null').event,
          );
          const req = {
            kind: 'call' as const,
            args,
            machine: {
              ns: 'n',
              id: 'm"\u2028',
              status: 'working',
              aux_state: aux,
              timer: null,
              tags: [],
              history,
              history_range: { direction: 'forward' },
            },
          };
          expect(requestJson(req)).toBe(JSON.stringify(req));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('falls back to JSON.stringify when an event is not a cached one, or a value spells the placeholder', () => {
    const cached = Array.from({ length: 10 }, (_, i) => frozenEvent(i + 1, new Date(0).toISOString(), '{"a":1}').event);
    const mixed = [...cached, { id: 11, created_at: new Date(0).toISOString(), data: { b: 2 } }];
    const req = { kind: 'call' as const, args: null, machine: { history: mixed } };
    expect(requestJson(req)).toBe(JSON.stringify(req));
    // A caller's value that contains a history-like placeholder of its own changes nothing.
    const sneaky = { kind: 'call' as const, args: '\u0000history-00', machine: { history: cached } };
    expect(requestJson(sneaky)).toBe(JSON.stringify(sneaky));
  });
});
