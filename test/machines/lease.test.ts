import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { startNode, type Node } from '../../src/serve.js';
import { machinesFace } from '../../src/machines/face.js';
import { MachinesClient } from '../../src/machines/client.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { spawnReady } from '../support/proc.js';
import { machinesConfig, TestProcessor } from './support.js';

/**
 * Nodes sharing a PostgreSQL shard keep a machine's lease for lease_keep_ms
 * after a committed step (its next step here needs no lease round trip) and
 * give it up when another node asks for the machine.
 */
describe.runIf(DIALECTS.includes('postgres'))('machine leases kept between steps (postgres)', () => {
  let env: TestEnv | undefined;
  let proc: TestProcessor | undefined;
  const nodes: Node[] = [];
  let child: ChildProcess | undefined;

  afterEach(async () => {
    child?.kill('SIGCONT');
    child?.kill('SIGKILL');
    child = undefined;
    for (const n of nodes.splice(0)) await n.close();
    await proc?.close();
    await env?.cleanup();
    env = undefined;
  });

  async function cluster(
    lease: { lease_keep_ms: number; lease_margin_ms?: number },
    roleLeaseMs?: number,
  ): Promise<{ a: Node; b: Node; ca: MachinesClient; cb: MachinesClient }> {
    proc = await new TestProcessor().listen();
    const clusterCfg = roleLeaseMs === undefined ? {} : { cluster: { role_lease_ms: roleLeaseMs } };
    env = await createTestEnv('postgres', {
      extra: { machines: machinesConfig(proc.url, lease), ...clusterCfg } as never,
    });
    const a = await startNode(env.config, { faces: [machinesFace] });
    nodes.push(a);
    const b = await startNode(buildConfig({ ...env.input, node_id: `${env.input.node_id}-b` } as ConfigInput), {
      faces: [machinesFace],
    });
    nodes.push(b);
    return { a, b, ca: new MachinesClient(a.url), cb: new MachinesClient(b.url) };
  }

  const holder = async (n: Node, id: string): Promise<string | null> => {
    const rows = await n.runtime.storage
      .shard('s0')
      .reader.all<{ h: string | null }>("SELECT lease_holder AS h FROM machines WHERE ns = 't' AND id = ?", [id]);
    return rows[0]!.h;
  };

  it('keeps the lease after a step, and hands it to a node that asks, well before it would run out', async () => {
    // Kept for a minute: a peer that had to wait for it to run out would miss its 3 s deadline.
    const { a, b, ca, cb } = await cluster({ lease_keep_ms: 60_000 });
    await ca.start('t', 'm1', {});
    await ca.call('t', { id: 'm1' }, { events: [{ i: 1 }] });
    expect(await holder(a, 'm1')).toBe(a.runtime.config.node_id);
    await cb.call('t', { id: 'm1' }, { events: [{ i: 2 }] }, { timeoutMs: 3000 });
    expect(await holder(b, 'm1')).toBe(b.runtime.config.node_id);
    await ca.call('t', { id: 'm1' }, { events: [{ i: 3 }] }, { timeoutMs: 3000 });
    expect(await holder(a, 'm1')).toBe(a.runtime.config.node_id);
    const h = await cb.get('t', { id: 'm1' });
    expect(h.history.map((e) => (e.data as { i: number }).i)).toEqual([1, 2, 3]);
    // A ran its second step (the first call) on the lease kept from the start, and gave it up once to B; B asked for it.
    const metric = async (n: Node, name: string) =>
      Number(new RegExp(`^${name} (\\d+)`, 'm').exec(await (await fetch(`${n.url}/metrics`)).text())?.[1] ?? NaN);
    expect(await metric(a, 'millrace_machine_steps_on_kept_lease_total')).toBeGreaterThanOrEqual(1);
    expect(await metric(a, 'millrace_machine_leases_given_up_total')).toBeGreaterThanOrEqual(1);
    expect(await metric(b, 'millrace_machine_lease_asks_total')).toBeGreaterThanOrEqual(1);
  });

  it('callers of one machine on both nodes at once: every call is answered well before a kept lease would run out', async () => {
    // Kept for a minute, deadlines of 5 s: a node that stopped answering asks (its first and the repeats) would fail a call.
    const { ca, cb } = await cluster({ lease_keep_ms: 60_000 });
    await ca.start('t', 'pp', {});
    const calls = Array.from({ length: 40 }, (_, i) =>
      (i % 2 ? ca : cb).call('t', { id: 'pp' }, { events: [{ i }] }, { timeoutMs: 5000 }),
    );
    const results = await Promise.allSettled(calls);
    expect(
      results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)),
    ).toEqual([]);
    expect(proc!.maxConcurrentPerMachine).toBe(1);
    const h = await ca.get('t', { id: 'pp' });
    expect(h.history.map((e) => (e.data as { i: number }).i).sort((x, y) => x - y)).toEqual(
      Array.from({ length: 40 }, (_, i) => i),
    );
  });

  it('a step that outlives the lease kept from the last commit extends it, so a peer never runs the machine at the same time', async () => {
    // Kept 1 s (+100 ms margin); the second step starts on that kept lease and sleeps 2 s while the peer asks for the machine.
    const { ca, cb } = await cluster({ lease_keep_ms: 1000, lease_margin_ms: 100 });
    await ca.start('t', 'm2', {});
    await ca.call('t', { id: 'm2' }, { events: [{ i: 1 }] });
    const long = ca.call('t', { id: 'm2' }, { events: [{ i: 2 }], sleep_ms: 2000 }, { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 50));
    const peer = cb.call('t', { id: 'm2' }, { events: [{ i: 3 }] }, { timeoutMs: 10_000 });
    await Promise.all([long, peer]);
    expect(proc!.maxConcurrentPerMachine).toBe(1);
    const h = await cb.get('t', { id: 'm2' });
    expect(h.history.map((e) => (e.data as { i: number }).i)).toEqual([1, 2, 3]);
  });

  it('a node that stops gives up the leases it keeps', async () => {
    const { a, b, ca, cb } = await cluster({ lease_keep_ms: 60_000 });
    await ca.start('t', 'm3', {});
    await ca.call('t', { id: 'm3' }, { events: [{ i: 1 }] });
    expect(await holder(a, 'm3')).toBe(a.runtime.config.node_id);
    await a.close();
    nodes.splice(nodes.indexOf(a), 1);
    expect(await holder(b, 'm3')).toBeNull();
    await cb.call('t', { id: 'm3' }, { events: [{ i: 2 }] }, { timeoutMs: 2000 });
  });

  it('after kill -9 of the node keeping a lease, a peer gets the machine, and nothing acknowledged is lost', async () => {
    // The peers run in this process; the node to kill in a child (same database, its own node id).
    const { b, cb } = await cluster({ lease_keep_ms: 1000, lease_margin_ms: 500 });
    const cfgPath = join(env!.dataDir, 'killed.json');
    writeFileSync(cfgPath, JSON.stringify({ ...env!.input, node_id: `${env!.input.node_id}-killed` }));
    let url: string;
    ({ child, found: url } = await spawnReady('test/machines/timer-node.ts', [cfgPath], /URL (\S+)/));
    const ck = new MachinesClient(url);
    await ck.start('t', 'm4', {});
    for (let i = 1; i <= 5; i++) await ck.call('t', { id: 'm4' }, { events: [{ i }] });
    expect(await holder(b, 'm4')).toBe(`${env!.input.node_id}-killed`);
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    child = undefined;
    // Nobody answers the ask; the lease runs out (1.5 s at most) within the call's deadline.
    await cb.call('t', { id: 'm4' }, { events: [{ i: 6 }] }, { timeoutMs: 10_000 });
    const h = await cb.get('t', { id: 'm4' });
    expect(h.history.map((e) => (e.data as { i: number }).i)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await holder(b, 'm4')).toBe(b.runtime.config.node_id);
  });

  it('a node frozen (SIGSTOP) while it keeps a lease loses it once keep and margin have passed: a peer runs the machine; after SIGCONT the frozen node commits nothing stale and serves again', async () => {
    const { b, cb } = await cluster({ lease_keep_ms: 1000, lease_margin_ms: 500 });
    const cfgPath = join(env!.dataDir, 'frozen.json');
    writeFileSync(cfgPath, JSON.stringify({ ...env!.input, node_id: `${env!.input.node_id}-frozen` }));
    let url: string;
    ({ child, found: url } = await spawnReady('test/machines/timer-node.ts', [cfgPath], /URL (\S+)/));
    const cf = new MachinesClient(url);
    await cf.start('t', 'm5', {});
    for (let i = 1; i <= 3; i++) await cf.call('t', { id: 'm5' }, { events: [{ i }] });
    expect(await holder(b, 'm5')).toBe(`${env!.input.node_id}-frozen`);
    child.kill('SIGSTOP');
    // The frozen node cannot answer the ask; its kept lease runs out (1.5 s) within the call's deadline.
    await cb.call('t', { id: 'm5' }, { events: [{ i: 4 }] }, { timeoutMs: 10_000 });
    await cb.call('t', { id: 'm5' }, { events: [{ i: 5 }] }, { timeoutMs: 10_000 });
    expect(await holder(b, 'm5')).toBe(b.runtime.config.node_id);
    child.kill('SIGCONT');
    // Back, it asks for the machine like any peer and goes on from what the others committed.
    await cf.call('t', { id: 'm5' }, { events: [{ i: 6 }] }, { timeoutMs: 10_000 });
    const h = await cb.get('t', { id: 'm5' });
    expect(h.history.map((e) => (e.data as { i: number }).i)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('after kill -9 of the node keeping a lease, a peer takes the machine at once (the node has ended), not after keep and margin', async () => {
    // A margin far longer than the call's deadline: only the ended node's check can let the call through in time.
    const { b, cb } = await cluster({ lease_keep_ms: 1000, lease_margin_ms: 60_000 });
    const cfgPath = join(env!.dataDir, 'ended.json');
    writeFileSync(cfgPath, JSON.stringify({ ...env!.input, node_id: `${env!.input.node_id}-ended` }));
    let url: string;
    ({ child, found: url } = await spawnReady('test/machines/timer-node.ts', [cfgPath], /URL (\S+)/));
    const ck = new MachinesClient(url);
    await ck.start('t', 'm6', {});
    for (let i = 1; i <= 3; i++) await ck.call('t', { id: 'm6' }, { events: [{ i }] });
    expect(await holder(b, 'm6')).toBe(`${env!.input.node_id}-ended`);
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    child = undefined;
    await cb.call('t', { id: 'm6' }, { events: [{ i: 4 }] }, { timeoutMs: 10_000 });
    const h = await cb.get('t', { id: 'm6' });
    expect(h.history.map((e) => (e.data as { i: number }).i)).toEqual([1, 2, 3, 4]);
    expect(await holder(b, 'm6')).toBe(b.runtime.config.node_id);
    const face = b.faces.find((f) => f.name === 'machines') as unknown as {
      machines: { leaseStats: { fromDead: number } };
    };
    expect(face.machines.leaseStats.fromDead).toBe(1);
  });

  it('a node frozen (SIGSTOP) in the middle of a call with a long deadline holds the machine one role lease and the margin, not until the deadline; its late commit is refused', async () => {
    const { b, cb } = await cluster({ lease_keep_ms: 1000, lease_margin_ms: 500 }, 2000);
    const cfgPath = join(env!.dataDir, 'midcall.json');
    writeFileSync(cfgPath, JSON.stringify({ ...env!.input, node_id: `${env!.input.node_id}-midcall` }));
    let url: string;
    ({ child, found: url } = await spawnReady('test/machines/timer-node.ts', [cfgPath], /URL (\S+)/));
    const cf = new MachinesClient(url);
    await cf.start('t', 'm7', {});
    await cf.call('t', { id: 'm7' }, { events: [{ i: 1 }] });
    // Past keep + margin: the next step takes a fresh lease instead of running on the one kept from this commit.
    await new Promise((r) => setTimeout(r, 2000));
    // A slow step through the node to freeze, with a deadline far beyond the test's patience.
    const seen = proc!.count(() => true);
    const slow = cf.call('t', { id: 'm7' }, { events: [{ i: 2 }], sleep_ms: 1500 }, { timeoutMs: 120_000 }).then(
      () => 'committed',
      (err: unknown) => (err as { code?: string }).code ?? String(err),
    );
    await waitFor(() => proc!.count(() => true) > seen, 10_000, 'the slow step to reach the processor');
    child.kill('SIGSTOP');
    // Through the other node: answered once the frozen node's step lease (2 s + 0.5 s) has run out.
    await cb.call('t', { id: 'm7' }, { events: [{ i: 3 }] }, { timeoutMs: 15_000 });
    child.kill('SIGCONT');
    // The frozen step's commit checks the version it read: refused, nothing of it stored.
    expect(await slow).not.toBe('committed');
    const h = await cb.get('t', { id: 'm7' });
    expect(h.history.map((e) => (e.data as { i: number }).i)).toEqual([1, 3]);
    expect(await holder(b, 'm7')).not.toBe(`${env!.input.node_id}-midcall`);
  });
});
