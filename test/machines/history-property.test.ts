import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { Machines, streamOf, type MachineEvent, type MachineView } from '../../src/machines/machines.js';
import type { HistoryRange } from '../../src/machines/config.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';

/**
 * The history a step or a GET gets is the log's reading of the range, with
 * or without the machine cache: random calls, failures, failed commits,
 * repairs, removals and GETs on a few machines of namespaces with different
 * history ranges, under a roomy and a tiny cache.
 */

interface Script {
  events?: number;
  pad?: number;
  throw?: boolean;
  unserialisable?: boolean;
  abortCommit?: boolean;
  remove?: boolean;
  refuse?: boolean;
  /** Set a timer (due at once) whose timeout signal asks for this range. */
  timer?: HistoryRange;
}

type Op =
  | { op: 'start' | 'call' | 'repair'; m: number; s: Script }
  | { op: 'simple' | 'remove'; m: number }
  | { op: 'get'; m: number; range: HistoryRange };

const NAMESPACES: Array<[string, HistoryRange | undefined]> = [
  ['all', undefined],
  ['last2', { direction: 'backward', limit: 2 }],
  ['mid', { direction: 'forward', after: 2, limit: 3 }],
];

function rangeArbOf(): fc.Arbitrary<HistoryRange> {
  return fc.record(
    {
      after: fc.integer({ min: 1, max: 12 }),
      limit: fc.integer({ min: 1, max: 12 }),
      direction: fc.constantFrom('forward' as const, 'backward' as const),
    },
    { requiredKeys: ['direction'] },
  );
}
const rangeArb = rangeArbOf();

/** true about once in twelve. */
const rare = fc.integer({ min: 0, max: 11 }).map((x) => x === 0);
const scriptArb: fc.Arbitrary<Script> = fc.record(
  {
    events: fc.integer({ min: 0, max: 3 }),
    pad: fc.constantFrom(0, 10, 40_000),
    throw: rare,
    unserialisable: rare,
    abortCommit: rare,
    remove: rare,
    refuse: rare,
    timer: fc.option(rangeArbOf(), { nil: undefined, freq: 8 }),
  },
  { requiredKeys: ['events'] },
);
// Machine m lives in namespace m % 3 (two machines share the namespace of all events).
const where = { m: fc.nat(3) };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('start' as const), ...where, s: scriptArb }) },
  { weight: 8, arbitrary: fc.record({ op: fc.constant('call' as const), ...where, s: scriptArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('repair' as const), ...where, s: scriptArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('simple' as const), ...where }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('remove' as const), ...where }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('get' as const), ...where, range: rangeArb }) },
);

const CACHES: Array<[string, Record<string, unknown>]> = [
  ['roomy cache', {}],
  ['tiny cache', { cache_size: 2, history_cache_mb: 1 }],
];

describe.each(DIALECTS.flatMap((d) => CACHES.map(([label, c]) => [d, label, c] as const)))(
  'machine history with the cache (%s, %s)',
  (dialect, _label, cacheCfg) => {
    let env: TestEnv;
    let rt: Runtime;
    let m: Machines;
    let abortNext = false;
    const mismatches: unknown[] = [];
    let checked = 0;
    const timeouts: Array<{ id: string; range: HistoryRange; ids: number[] }> = [];
    let nonEmpty = 0;

    /** What the log holds for the range: the reading every step made before the cache. */
    async function reference(ns: string, id: string, range: HistoryRange): Promise<MachineEvent[]> {
      const rows = await rt.storage
        .shardFor([ns, id])
        .reader.all<{ gen: number }>('SELECT gen FROM machines WHERE ns = ? AND id = ?', [ns, id]);
      const gen = Number(rows[0]!.gen);
      const events = await rt.log.read(
        streamOf(ns, id, gen),
        { after: range.after, limit: Math.min(range.limit ?? 100_000, 100_000), direction: range.direction },
        [ns, id],
      );
      return events.map((e) => ({
        id: Number(e.seq),
        created_at: new Date(Number(e.createdAt)).toISOString(),
        data: JSON.parse(e.data) as unknown,
      }));
    }

    const fn: ProcessorFn = async (req) => {
      const machine = req.machine as MachineView;
      if (!(req.kind === 'signal' && (req.signal as { type: string }).type === 'init')) {
        const want = await reference(machine.ns, machine.id, machine.history_range);
        checked++;
        if (want.length > 0) nonEmpty++;
        // A copy: what the processor saw, not what the objects may later become.
        const got = JSON.parse(JSON.stringify(machine.history)) as unknown;
        if (JSON.stringify(got) !== JSON.stringify(want))
          mismatches.push({ step: req.kind, id: machine.id, got, want });
      }
      const s = ((req.kind === 'signal' ? (req.signal as { args?: unknown }).args : req.args) ?? {}) as Script;
      if (s.throw) throw new Error('processor bug');
      if (req.kind === 'repair' && s.refuse) return { repair_failed: { reason: 'refused' } };
      const events: unknown[] = Array.from({ length: s.events ?? 0 }, (_, i) => ({
        i,
        at: checked,
        pad: 'p'.repeat(s.pad ?? 0),
        nested: { list: [i, null, 'x'] },
      }));
      if (s.unserialisable) events.push({ bad: 1n });
      abortNext = s.abortCommit === true;
      if (req.kind === 'signal' && (req.signal as { type: string }).type === 'timeout')
        timeouts.push({ id: machine.id, range: machine.history_range, ids: machine.history.map((e) => e.id) });
      const action: Record<string, unknown> = {};
      if (s.remove) action.remove = true;
      if (s.timer) action.timer = { set: { timeout: 0 }, range: s.timer };
      return { response: null, events, ...(Object.keys(action).length > 0 ? { action } : {}) };
    };

    beforeAll(async () => {
      env = await createTestEnv(dialect, {
        extra: {
          machines: {
            namespaces: Object.fromEntries(
              NAMESPACES.map(([ns, range]) => [
                ns,
                {
                  processor: { in_process: 'fn' },
                  retry: { base_ms: 5, max_ms: 20 },
                  ...(range ? { history_range: range } : {}),
                },
              ]),
            ),
            ...cacheCfg,
          },
        } as never,
      });
      rt = await Runtime.open(env.config);
      // A commit that wrote its rows and then failed (its transaction rolls back).
      const append = rt.log.appendGuarded.bind(rt.log);
      rt.log.appendGuarded = async (...args) => {
        const r = await append(...args);
        if (abortNext) {
          abortNext = false;
          throw new Error('injected failure after the append');
        }
        return r;
      };
      m = new Machines(rt, { processors: new Map([['fn', fn]]) });
      m.registerTimers();
      await rt.start();
    });
    afterAll(async () => {
      await rt?.close();
      await env?.cleanup();
    });

    it('a machine removed and started again sees only its new history', async () => {
      mismatches.length = 0;
      await m.start('all', 'again', { events: 3 });
      await m.call('all', { id: 'again' }, { events: 1 });
      await m.remove('all', { id: 'again' });
      await m.start('all', 'again', { events: 2 });
      await m.call('all', { id: 'again' }, { events: 1 });
      const v = await m.get('all', { id: 'again' });
      expect(v.history.map((e) => e.id)).toEqual([1, 2, 3]);
      expect(mismatches).toEqual([]);
    });

    it('a GET reads what the window lacks on both sides of it', async () => {
      await m.start('mid', 'sides', { events: 2 });
      await m.call('mid', { id: 'sides' }, { events: 3 });
      await m.call('mid', { id: 'sides' }, { events: 3 });
      const v = await m.get('mid', { id: 'sides' }, { after: 1, limit: 10 });
      expect(v.history.map((e) => e.id)).toEqual([2, 3, 4, 5, 6, 7, 8]);
      expect(v.history).toEqual(await reference('mid', 'sides', v.history_range));
    });

    it('a timeout asking for its own range gets it, and the next step gets the namespace range', async () => {
      mismatches.length = 0;
      // The window of a namespace of the last two events; the timer asks for all of them.
      await m.start('last2', 'timed', { events: 4 });
      await m.call('last2', { id: 'timed' }, { events: 1, timer: { direction: 'forward' } });
      await waitFor(() => timeouts.find((t) => t.id === 'timed'), 10_000, 'the timeout');
      expect(timeouts.find((t) => t.id === 'timed')!.ids).toEqual([1, 2, 3, 4, 5]);
      await m.call('last2', { id: 'timed' }, { events: 1 });
      const v = await m.get('last2', { id: 'timed' });
      expect(v.history.map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(mismatches).toEqual([]);
    });

    let run = 0;
    it('gives every step and GET the log reading of its range', async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40 }), async (ops) => {
          run++;
          mismatches.length = 0;
          const id = (i: number) => `r${run}-m${i}`;
          for (let i = 0; i < 4; i++) await m.start(NAMESPACES[i % NAMESPACES.length]![0], id(i), { events: 2 });
          for (const o of ops) {
            const ns = NAMESPACES[o.m % NAMESPACES.length]![0];
            abortNext = false;
            const deadline = Date.now() + 10_000;
            const done = (() => {
              switch (o.op) {
                case 'start':
                  return m.start(ns, id(o.m), o.s, { deadline });
                case 'call':
                  return m.call(ns, { id: id(o.m) }, o.s, { deadline });
                case 'repair':
                  return m.repair(ns, { id: id(o.m) }, o.s, { deadline });
                case 'simple':
                  return m.simpleRepair(ns, { id: id(o.m) }, { deadline });
                case 'remove':
                  return m.remove(ns, { id: id(o.m) }, { deadline });
                case 'get':
                  return m.get(ns, { id: id(o.m) }, o.range).then(async (v) => {
                    checked++;
                    const want = await reference(ns, id(o.m), v.history_range);
                    if (JSON.stringify(v.history) !== JSON.stringify(want))
                      mismatches.push({ step: 'get', id: id(o.m), got: v.history, want });
                  });
              }
            })();
            await Promise.resolve(done).catch((e: unknown) => {
              if (process.env.DBG) console.log(o.op, String(e));
            });
          }
          expect(mismatches).toEqual([]);
        }),
        { numRuns: dialect === 'postgres' ? 10 : 40 },
      );
      // The property looked at real histories, not only empty ones, and at timeouts with their own ranges.
      expect(nonEmpty).toBeGreaterThan(20);
      await waitFor(() => timeouts.length > 3, 10_000, 'some timeouts');
    }, 240_000);
  },
);
