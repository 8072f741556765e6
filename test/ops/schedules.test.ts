import { afterEach, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/runtime.js';
import { ManualClock } from '../../src/core/clock.js';
import { isMillraceError } from '../../src/core/errors.js';
import { MachinesFace } from '../../src/machines/face.js';
import { BusFace } from '../../src/bus/face.js';
import { OpsFace } from '../../src/ops/face.js';
import { Sequencer } from '../../src/log/sequencer.js';
import type { ProcessorFn } from '../../src/machines/processor.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { countAll, gate } from './support.js';

const T0 = Date.parse('2026-03-01T00:00:00.000Z');

describe.each(DIALECTS)('schedules (%s)', (dialect) => {
  const envs: TestEnv[] = [];
  const rts: Runtime[] = [];
  const gates: Array<() => void> = [];

  afterEach(async () => {
    for (const g of gates.splice(0)) g();
    // Teardown: a runtime that fails to close has failed its test already.
    for (const rt of rts.splice(0)) await rt.close().catch(() => {});
    for (const e of envs.splice(0)) await e.cleanup();
  });

  /** A node without background loops on a manual clock: `tick()` is what fires timers. */
  async function node(
    fn: ProcessorFn = (req) => ({
      response: req.kind,
      events: [{ kind: req.kind, args: 'args' in req ? (req.args ?? null) : null }],
    }),
    schedules: Record<string, unknown> = {},
  ) {
    const env = await createTestEnv(dialect, {
      shards: 2,
      extra: {
        machines: { namespaces: { ns: { processor: { in_process: 'fn' } } } },
        bus: { topics: ['ticks'] },
        schedules,
      } as never,
    });
    envs.push(env);
    const clock = new ManualClock(T0);
    const rt = await Runtime.open(env.config, { background: false, clock });
    rts.push(rt);
    // Sequencers run (PostgreSQL numbers events with them); the scheduler does not: tick() fires.
    for (const shard of rt.storage.shards) {
      if (shard.driver.capabilities.sequencesOnInsert) continue;
      const seq = new Sequencer(rt.log, shard, { batch: 1000, pollMs: 20, logger: rt.logger });
      seq.start();
      rt.sequencers.push(seq);
    }
    const machines = new MachinesFace(rt, { processors: new Map([['fn', fn]]) });
    const bus = new BusFace(rt);
    const ops = new OpsFace(rt, [machines, bus]);
    await ops.start();
    return { rt, clock, ops, m: machines.machines };
  }

  /** Ticks until nothing more is due now (a fire, then its action's own timer). */
  async function drain(rt: Runtime): Promise<void> {
    for (let i = 0; i < 20; i++) if ((await rt.scheduler.tick()) === 0) return;
  }

  const publishEvery = (ms: number, extra: Record<string, unknown> = {}) => ({
    spec: { every_ms: ms },
    action: {
      publish: {
        topic: 'ticks',
        type: 'tick',
        key: 'k-{{schedule}}',
        data: { at: '{{fire_time}}', ms: '{{fire_time_ms}}' },
      },
    },
    ...extra,
  });

  it('fires an interval schedule once per fire time, with the fire time in the template', async () => {
    const { rt, clock, ops } = await node();
    const s = ops.schedules;
    const put = await s.put('every-10s', publishEvery(10_000));
    expect(put.created).toBe(true);
    expect(put.schedule.next_fire_at).toBe('2026-03-01T00:00:10.000Z');
    expect((await s.next('every-10s', 3)).map((f) => f.fire_at)).toEqual([
      '2026-03-01T00:00:10.000Z',
      '2026-03-01T00:00:20.000Z',
      '2026-03-01T00:00:30.000Z',
    ]);
    await drain(rt);
    expect(await countAll(rt, `SELECT count(*) AS n FROM events WHERE type = 'tick'`)).toBe(0);
    clock.advance(10_000);
    await drain(rt);
    clock.advance(10_000);
    await drain(rt);
    const rows = [];
    for (const sh of rt.storage.shards)
      rows.push(
        ...(await sh.reader.all<{ data: string }>(`SELECT data FROM events WHERE type = 'tick' ORDER BY created_at`)),
      );
    expect(rows.map((r) => JSON.parse(r.data))).toEqual([
      { at: '2026-03-01T00:00:10.000Z', ms: T0 + 10_000 },
      { at: '2026-03-01T00:00:20.000Z', ms: T0 + 20_000 },
    ]);
    const fires = await s.fires('every-10s');
    expect(fires.items.map((f) => [f.fire_at, f.status])).toEqual([
      ['2026-03-01T00:00:20.000Z', 'done'],
      ['2026-03-01T00:00:10.000Z', 'done'],
    ]);
    const info = await s.get('every-10s');
    expect(info).toMatchObject({
      last_fire_at: '2026-03-01T00:00:20.000Z',
      next_fire_at: '2026-03-01T00:00:30.000Z',
      running: 0,
    });
    const metric = await rt.metrics.getSingleMetricAsString('millrace_schedule_fires_total');
    expect(metric).toContain('millrace_schedule_fires_total{status="pending"} 2');
    expect(metric).toContain('millrace_schedule_fires_total{status="done"} 2');
  });

  it('refuses bad definitions with a typed error and writes nothing', async () => {
    const { rt, ops } = await node();
    const s = ops.schedules;
    const bad: unknown[] = [
      { spec: { cron: 'not a cron' }, action: publishEvery(1000).action },
      { spec: { cron: '0 * * * * *', timezone: 'Mars/Olympus' }, action: publishEvery(1000).action },
      { spec: { cron: '0 * * * * *', every_ms: 1000 }, action: publishEvery(1000).action },
      { spec: { every_ms: 10 }, action: publishEvery(1000).action },
      { spec: { every_ms: 1000 }, action: { publish: { topic: 'nope', type: 't' } } },
      { spec: { every_ms: 1000 }, action: { machine: { namespace: 'ns', id: 'a', op: 'explode' } } },
      { spec: { every_ms: 1000 }, action: publishEvery(1000).action, overlap: 'sometimes' },
      { spec: { every_ms: 1000 }, action: publishEvery(1000).action, catchup_window_ms: 0 },
    ];
    for (const b of bad) {
      const e = await s.put('x', b).catch((err: unknown) => err);
      expect(isMillraceError(e, 'bad_request') || isMillraceError(e, 'topic_not_found'), JSON.stringify(b)).toBe(true);
    }
    const ns = await s
      .put('x', { spec: { every_ms: 1000 }, action: { machine: { namespace: 'nope', id: 'a', op: 'start' } } })
      .catch((err: unknown) => err);
    expect(isMillraceError(ns, 'namespace_not_found')).toBe(true);
    expect(
      isMillraceError(await s.put('bad name!', publishEvery(1000)).catch((err: unknown) => err), 'bad_request'),
    ).toBe(true);
    expect(isMillraceError(await s.get('x').catch((err: unknown) => err), 'schedule_not_found')).toBe(true);
    expect(await countAll(rt, 'SELECT count(*) AS n FROM schedules')).toBe(0);
    expect(await countAll(rt, "SELECT count(*) AS n FROM timers WHERE kind LIKE 'schedules.%'")).toBe(0);
    await s.put('ok', publishEvery(1000));
    expect(
      isMillraceError(
        await s.backfill('ok', 'yesterday', '2026-03-01T00:00:00Z').catch((err: unknown) => err),
        'bad_request',
      ),
    ).toBe(true);
    expect(
      isMillraceError(
        await s.backfill('ok', '2026-01-01T00:00:00Z', '2026-03-01T00:00:00Z').catch((err: unknown) => err),
        'bad_request',
      ),
    ).toBe(true);
    expect(await countAll(rt, 'SELECT count(*) AS n FROM schedule_fires')).toBe(0);
  });

  it('follows the time zone across a DST change (New York, 09:00 local)', async () => {
    const { rt, clock, ops } = await node();
    const s = ops.schedules;
    clock.set(Date.parse('2026-03-06T15:00:00.000Z'));
    await s.put('nine', {
      spec: { cron: '0 0 9 * * *', timezone: 'America/New_York' },
      action: publishEvery(1000).action,
    });
    // EST (UTC-5) until 8 March 2026 02:00, then EDT (UTC-4).
    expect((await s.next('nine', 3)).map((f) => f.fire_at)).toEqual([
      '2026-03-07T14:00:00.000Z',
      '2026-03-08T13:00:00.000Z',
      '2026-03-09T13:00:00.000Z',
    ]);
    for (const at of ['2026-03-07T14:00:00.000Z', '2026-03-08T13:00:00.000Z', '2026-03-09T13:00:00.000Z']) {
      clock.set(Date.parse(at) - 1);
      await drain(rt);
      clock.set(Date.parse(at));
      await drain(rt);
    }
    const fires = await s.fires('nine');
    expect(fires.items.map((f) => f.fire_at).reverse()).toEqual([
      '2026-03-07T14:00:00.000Z',
      '2026-03-08T13:00:00.000Z',
      '2026-03-09T13:00:00.000Z',
    ]);
    expect(await countAll(rt, `SELECT count(*) AS n FROM events WHERE type = 'tick'`)).toBe(3);
  });

  it('skips, buffers one, or allows fires while a call on the machine still runs', async () => {
    const held: Array<() => void> = [];
    const fn: ProcessorFn = async (req) => {
      if (req.kind === 'call') {
        const g = gate();
        held.push(g.open);
        gates.push(g.open);
        await g.promise;
      }
      return { response: req.kind, events: [{ kind: req.kind }] };
    };
    for (const overlap of ['skip', 'buffer_one', 'allow'] as const) {
      const { rt, clock, ops, m } = await node(fn);
      held.length = 0;
      await m.start('ns', 'busy', null);
      await ops.schedules.put('calls', {
        spec: { every_ms: 1000 },
        action: { machine: { namespace: 'ns', id: 'busy', op: 'call', args: '{{fire_time}}' } },
        overlap,
      });
      clock.advance(1000);
      await rt.scheduler.tick(); // records fire 1 and arms its action
      const ticks: Array<Promise<number>> = [rt.scheduler.tick()]; // fire 1's call, held by the processor
      await waitUntil(async () => held.length === 1);
      for (let i = 0; i < 3; i++) {
        clock.advance(1000);
        ticks.push(rt.scheduler.tick()); // fires 2..4 while fire 1 runs
        await waitUntil(async () => (await ops.schedules.fires('calls')).items.length === i + 2);
      }
      const statuses = (await ops.schedules.fires('calls')).items.map((f) => f.status).reverse();
      if (overlap === 'skip') expect(statuses).toEqual(['running', 'skipped', 'skipped', 'skipped']);
      if (overlap === 'buffer_one') expect(statuses).toEqual(['running', 'buffered', 'skipped', 'skipped']);
      if (overlap === 'allow') expect(statuses.filter((x) => x === 'skipped' || x === 'buffered')).toEqual([]);
      // Let every call through until nothing runs: the buffered fire runs once the first is done.
      await waitUntil(async () => {
        for (const g of held) g();
        ticks.push(rt.scheduler.tick());
        return (await ops.schedules.fires('calls')).items.every((f) => f.status === 'done' || f.status === 'skipped');
      });
      await Promise.all(ticks);
      const after = (await ops.schedules.fires('calls')).items.map((f) => f.status).reverse();
      if (overlap === 'skip') expect(after).toEqual(['done', 'skipped', 'skipped', 'skipped']);
      if (overlap === 'buffer_one') expect(after).toEqual(['done', 'done', 'skipped', 'skipped']);
      if (overlap === 'allow') expect(after).toEqual(['done', 'done', 'done', 'done']);
      expect(held.length).toBe({ skip: 1, buffer_one: 2, allow: 4 }[overlap]);
      for (const g of gates.splice(0)) g();
      await drain(rt);
    }
  });

  it('catches up only within the window after downtime, counting the missed fires', async () => {
    const { rt, clock, ops } = await node();
    const s = ops.schedules;
    await s.put('catchup', publishEvery(1000, { catchup_window_ms: 3000, overlap: 'allow' }));
    clock.advance(60_000); // down for a minute
    await drain(rt);
    const fires = (await s.fires('catchup')).items.map((f) => f.fire_at).reverse();
    // Fires at 57..60 s lie within 3 s of now (60 s); those from 1 to 56 s are missed.
    expect(fires).toEqual([
      '2026-03-01T00:00:57.000Z',
      '2026-03-01T00:00:58.000Z',
      '2026-03-01T00:00:59.000Z',
      '2026-03-01T00:01:00.000Z',
    ]);
    expect((await s.get('catchup')).missed).toBe(56);
    expect(await countAll(rt, `SELECT count(*) AS n FROM events WHERE type = 'tick'`)).toBe(4);
  });

  it('pauses and resumes (no catch-up of the paused time); backfills a range once', async () => {
    const { rt, clock, ops } = await node();
    const s = ops.schedules;
    await s.put('p', publishEvery(1000, { catchup_window_ms: 60_000 }));
    expect((await s.pause('p')).paused).toBe(true);
    expect(await s.next('p', 2)).toEqual([]);
    clock.advance(5000);
    await drain(rt);
    expect(await countAll(rt, 'SELECT count(*) AS n FROM schedule_fires')).toBe(0);
    const resumed = await s.resume('p');
    expect(resumed).toMatchObject({ paused: false, next_fire_at: '2026-03-01T00:00:06.000Z' });
    clock.advance(1000);
    await drain(rt);
    expect((await s.fires('p')).items.map((f) => f.fire_at)).toEqual(['2026-03-01T00:00:06.000Z']);
    // Backfill the paused seconds 1..6: 6 is fired already.
    expect(await s.backfill('p', '2026-03-01T00:00:01.000Z', '2026-03-01T00:00:06.000Z')).toEqual({
      fire_times: 6,
      queued: 5,
      already: 1,
    });
    expect(await s.backfill('p', '2026-03-01T00:00:01.000Z', '2026-03-01T00:00:06.000Z')).toEqual({
      fire_times: 6,
      queued: 0,
      already: 6,
    });
    await drain(rt);
    const fires = (await s.fires('p')).items;
    expect(fires.length).toBe(6);
    expect(fires.every((f) => f.status === 'done')).toBe(true);
    expect(fires.filter((f) => f.backfill).length).toBe(5);
    expect(await countAll(rt, `SELECT count(*) AS n FROM events WHERE type = 'tick'`)).toBe(6);
    // A restart with the same state: the schedule and its pause survive.
    await s.pause('p');
    expect((await s.get('p')).paused).toBe(true);
  });

  it('notifies and starts machines from a template, each fire once even when run again', async () => {
    const { rt, clock, ops, m } = await node();
    await m.start('ns', 'target', null);
    await ops.schedules.put('n', {
      spec: { every_ms: 1000 },
      action: { machine: { namespace: 'ns', id: 'target', op: 'notify', args: { at: '{{fire_time}}' } } },
    });
    await ops.schedules.put('s', {
      spec: { every_ms: 1000 },
      action: { machine: { namespace: 'ns', id: 'job-{{fire_time_ms}}', op: 'start', args: '{{schedule}}' } },
    });
    clock.advance(1000);
    await drain(rt);
    // The same notification key again (a fire run twice): stored once.
    const again = await m.notify('ns', { id: 'target' }, { at: 'x' }, { key: `schedule/n/${T0 + 1000}` });
    expect(again.duplicate).toBe(true);
    await drain(rt);
    const view = await m.get('ns', { id: 'target' });
    // init, then the one notification of the fire at 1 s (not a second one for the repeated key).
    expect(view.history.length).toBe(2);
    expect(await countAll(rt, 'SELECT count(*) AS n FROM machine_notification_keys')).toBe(1);
    expect((await m.get('ns', { id: `job-${T0 + 1000}` })).status).toBe('working');
  });

  it('applies schedules from the config file', async () => {
    const { ops } = await node(undefined, { cfg: publishEvery(5000) });
    const info = await ops.schedules.get('cfg');
    expect(info).toMatchObject({ source: 'config', next_fire_at: '2026-03-01T00:00:05.000Z' });
    const e = await ops.schedules.remove('cfg').catch((err: unknown) => err);
    expect(isMillraceError(e, 'schedule_defined_in_config')).toBe(true);
  });
});

async function waitUntil(cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
