import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { startNode, type Node } from '../../src/serve.js';
import { machinesFace, machinesFaceWith } from '../../src/machines/face.js';
import { MachinesClient } from '../../src/machines/client.js';
import type { SinkEvent } from '../../src/machines/sink.js';
import { ProcessorUnavailable, type ProcessorRequest } from '../../src/machines/processor.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { machinesConfig, TestProcessor } from './support.js';

const codeOf = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: unknown) => (isMillraceError(e) ? e.code : Promise.reject(e)),
  );

/** Reads server-sent events from a fetch body, frame by frame. */
class SseReader {
  private buf = '';
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  readonly events: Array<{ id: string; event: string; data: SinkEvent }> = [];
  comments = 0;

  constructor(body: ReadableStream<Uint8Array>) {
    this.reader = body.getReader();
  }

  /** Reads until `pred` holds for the events seen so far. */
  async until(pred: (evs: SseReader['events']) => boolean): Promise<SseReader['events']> {
    while (!pred(this.events)) {
      const { value, done } = await this.reader.read();
      if (done) throw new Error('the stream ended early');
      this.buf += this.decoder.decode(value, { stream: true });
      let at: number;
      while ((at = this.buf.indexOf('\n\n')) >= 0) {
        const frame = this.buf.slice(0, at);
        this.buf = this.buf.slice(at + 2);
        if (frame.startsWith(':')) {
          this.comments++;
          continue;
        }
        const f: Record<string, string> = {};
        for (const line of frame.split('\n')) {
          const i = line.indexOf(': ');
          f[line.slice(0, i)] = line.slice(i + 2);
        }
        this.events.push({ id: f.id!, event: f.event!, data: JSON.parse(f.data!) as SinkEvent });
      }
    }
    return this.events;
  }

  async cancel(): Promise<void> {
    // Cancelling a stream that has already ended or failed is a no-op.
    await this.reader.cancel().catch(() => {});
  }
}

describe.each(DIALECTS)('machines: sink stream, timer retries, memory limit (%s)', (dialect) => {
  let env: TestEnv;
  let node: Node;
  let proc: TestProcessor;
  let c: MachinesClient;
  /** Timeout signals the in-process processor refuses while true. */
  let timersDown = true;
  const timeoutsSeen = new Map<string, number>();
  const processorName = `edges-${dialect}`;

  beforeAll(async () => {
    const flaky = (req: ProcessorRequest): unknown => {
      const id = (req.machine as { id: string }).id;
      if (req.kind === 'signal' && req.signal.type === 'timeout') {
        timeoutsSeen.set(id, (timeoutsSeen.get(id) ?? 0) + 1);
        if (timersDown) throw new ProcessorUnavailable('timeouts are down');
        return { events: [{ fired: true }] };
      }
      const a = (
        req.kind === 'call' ? req.args : req.kind === 'signal' && req.signal.type === 'init' ? req.signal.args : null
      ) as { timer?: unknown } | null;
      return { response: 'ok', ...(a && typeof a === 'object' && 'timer' in a ? { action: { timer: a.timer } } : {}) };
    };
    proc = await new TestProcessor().listen();
    const m = machinesConfig(proc.url) as { namespaces: Record<string, unknown> };
    m.namespaces.flaky = {
      processor: { in_process: processorName },
      // Each timer attempt retries transient failures only briefly; three attempts, then the machine fails.
      default_timeout_ms: 150,
      retry: { base_ms: 10, max_ms: 40, timer_max_attempts: 3 },
    };
    env = await createTestEnv(dialect, { extra: { machines: m } as never });
    node = await startNode(env.config, {
      faces: [machinesFaceWith({ processors: new Map([[processorName, flaky]]) })],
    });
    c = new MachinesClient(node.url);
  });
  afterAll(async () => {
    await node?.close();
    await proc?.close();
    await env?.cleanup();
  });

  it('the SSE stream sends the backlog, then live events, of its namespaces only', async () => {
    await c.start('t', 'sse', { events: [{ s: 1 }, { s: 2 }] });
    await c.start('other', 'sse', { events: [{ o: 1 }] });
    const ctl = new AbortController();
    const res = await fetch(`${node.url}/v1/sinks/main/stream?after=0`, { signal: ctl.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const sse = new SseReader(res.body!);
    try {
      const mine = (evs: SseReader['events']) => evs.filter((e) => e.data.machine_id === 'sse');
      await sse.until((evs) => mine(evs).length >= 2);
      // live: an event committed after the stream caught up arrives on the open stream
      await c.call('t', { id: 'sse' }, { events: [{ s: 3 }] });
      const evs = await sse.until((e) => mine(e).length >= 3);
      expect(evs.every((e) => e.event === 'event' && e.data.ns === 't')).toBe(true);
      expect(mine(evs).map((e) => [e.data.event_id, e.data.data])).toEqual([
        [1, { s: 1 }],
        [2, { s: 2 }],
        [3, { s: 3 }],
      ]);
      const pos = evs.map((e) => e.data.pos);
      expect([...pos].sort((a, b) => a - b)).toEqual(pos);
      expect(evs.map((e) => Number(e.id))).toEqual(pos);
      expect(evs.every((e) => /^[0-9a-f]{64}$/.test(String(e.data.hash)))).toBe(true);

      // resuming after a position skips what came before it
      const from = mine(evs)[1]!.data.pos;
      const res2 = await fetch(`${node.url}/v1/sinks/main/stream?after=${from}`, { signal: ctl.signal });
      const sse2 = new SseReader(res2.body!);
      const rest = await sse2.until((e) => e.some((x) => x.data.machine_id === 'sse'));
      expect(rest.every((e) => e.data.pos > from)).toBe(true);
      expect(rest.find((e) => e.data.machine_id === 'sse')!.data.data).toEqual({ s: 3 });
      await sse2.cancel();
    } finally {
      await sse.cancel();
      ctl.abort();
    }
    const unknown = await fetch(`${node.url}/v1/sinks/nope/stream`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('sink_not_found');
    const bad = await fetch(`${node.url}/v1/sinks/main/stream?after=-1`);
    expect(bad.status).toBe(400);
    await bad.body?.cancel();
  });

  it('a timer that fails transiently until its retries are exhausted fails the machine; simple-repair resumes it', async () => {
    timersDown = true;
    await c.start('flaky', 'tr', { timer: { set: { timeout: 0.01 } } });
    const g = await waitFor(
      async () => {
        const v = await c.get('flaky', { id: 'tr' });
        return v.status === 'failed' ? v : null;
      },
      30_000,
      'the machine to fail',
    );
    expect(g.reason).toMatchObject({ code: 'timer_retries_exhausted' });
    expect(g.history).toEqual([]);
    expect(timeoutsSeen.get('tr')!).toBeGreaterThanOrEqual(3);
    expect(await codeOf(c.call('flaky', { id: 'tr' }, {}))).toBe('machine_failed');

    // once the processor is back, simple-repair resumes the timer, which fires once
    timersDown = false;
    await c.simpleRepair('flaky', { id: 'tr' });
    const after = await waitFor(
      async () => {
        const v = await c.get('flaky', { id: 'tr' });
        return v.history.length >= 1 ? v : null;
      },
      15_000,
      'the resumed timer',
    );
    expect(after.status).toBe('working');
    expect(after.history.map((e) => e.data)).toEqual([{ fired: true }]);
    expect(after.timer).toBeNull();
  });

  it('above the memory limit every request gets 503 with Retry-After and nothing is written', async () => {
    await c.start('t', 'mem', { events: [{ before: true }] });
    const head = await node.runtime.log.headPos('s0');
    // A second node on the same storage whose limit (1 MB) any process is above.
    const input = {
      ...env.input,
      node_id: `${env.input.node_id}-limited`,
      machines: { ...(env.input as { machines: object }).machines, memory_limit_mb: 1 },
    } as ConfigInput;
    const limited = await startNode(buildConfig(input), { faces: [machinesFace] });
    try {
      const post = (path: string, body: unknown) =>
        fetch(`${limited.url}/v1/namespaces/t/machines/${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      for (const [path, body] of [
        ['mem/call', { args: { events: [{ during: true }] } }],
        ['mem2/start', { args: { events: [{ during: true }] } }],
        // Not a repair here: an audited action writes its audit events even when the face refuses it
        // (docs/security.md), and two nodes must not write to one SQLite file.
      ] as const) {
        const res = await post(path, body);
        expect(res.status).toBe(503);
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unavailable');
      }
      const lc = new MachinesClient(limited.url);
      expect(await codeOf(lc.call('t', { id: 'mem' }, { events: [{ during: true }] }))).toBe('unavailable');
      // reads still work, and show nothing changed
      expect((await lc.get('t', { id: 'mem' })).history.map((e) => e.data)).toEqual([{ before: true }]);
    } finally {
      await limited.close();
    }
    expect(await codeOf(c.get('t', { id: 'mem2' }))).toBe('machine_not_found');
    expect(await node.runtime.log.headPos('s0')).toBe(head);
    // the node without the limit still serves the machine
    await c.call('t', { id: 'mem' }, { events: [{ after: true }] });
    expect((await c.get('t', { id: 'mem' })).history.map((e) => e.data)).toEqual([{ before: true }, { after: true }]);
  });
});
