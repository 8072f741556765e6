import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNode } from '../../src/serve.js';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { machinesFace } from '../../src/machines/face.js';
import { busFace } from '../../src/bus/face.js';
import { telemetryEnabled } from '../../src/core/telemetry.js';
import { createTestEnv, DIALECTS, type TestEnv } from '../support/env.js';
import { machinesConfig, TestProcessor } from '../machines/support.js';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
}

/** A tiny OTLP/HTTP (JSON) traces receiver. */
class OtlpReceiver {
  readonly spans: OtlpSpan[] = [];
  readonly services: string[] = [];
  private server!: Server;
  url = '';
  async listen(): Promise<this> {
    this.server = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString('utf8')));
      req.on('end', () => {
        const msg = JSON.parse(body) as {
          resourceSpans: Array<{
            resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> };
            scopeSpans: Array<{ spans: OtlpSpan[] }>;
          }>;
        };
        for (const rs of msg.resourceSpans) {
          this.services.push(rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '');
          for (const ss of rs.scopeSpans) this.spans.push(...ss.spans);
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/traces`;
    return this;
  }
  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

describe('OpenTelemetry', () => {
  let env: TestEnv;
  let proc: TestProcessor;
  let otlp: OtlpReceiver;
  beforeAll(async () => {
    proc = await new TestProcessor().listen();
    otlp = await new OtlpReceiver().listen();
    env = await createTestEnv(DIALECTS[0]!, { extra: { machines: machinesConfig(proc.url) } as never });
  });
  afterAll(async () => {
    await proc?.close();
    await otlp?.close();
    await env?.cleanup();
  });

  it('is off by default: the processor gets a child of the caller trace and no exporter runs', async () => {
    const node = await startNode(env.config, { faces: [machinesFace] });
    try {
      expect(telemetryEnabled()).toBe(false);
      const trace = 'a'.repeat(32);
      const r = await fetch(`${node.url}/v1/namespaces/t/machines/off/start`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', traceparent: `00-${trace}-${'b'.repeat(16)}-01` },
        body: '{}',
      });
      expect(r.status).toBe(200);
      expect(String(proc.seen.at(-1)!.headers.traceparent)).toMatch(new RegExp(`^00-${trace}-[0-9a-f]{16}-01$`));
    } finally {
      await node.close();
    }
    expect(otlp.spans).toEqual([]);
  });

  it('a machine call over HTTP exports a request span and a processor-call span; the processor gets the same trace', async () => {
    const input = { ...env.input, telemetry: { otlp_url: otlp.url, service_name: 'millrace-test' } } as ConfigInput;
    const node = await startNode(buildConfig(input), { faces: [machinesFace] });
    const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const caller = '00f067aa0ba902b7';
    try {
      expect(telemetryEnabled()).toBe(true);
      const r = await fetch(`${node.url}/v1/namespaces/t/machines/traced/start`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', traceparent: `00-${trace}-${caller}-01` },
        body: JSON.stringify({ args: { events: [1] } }),
      });
      expect(r.status).toBe(200);
    } finally {
      await node.close(); // flushes the exporter
    }
    expect(telemetryEnabled()).toBe(false);
    const got = proc.seen.at(-1)!.headers.traceparent as string;
    const [, gotTrace, gotParent] = got.split('-');
    expect(gotTrace).toBe(trace);
    const http = otlp.spans.find((s) => s.name.startsWith('HTTP POST'));
    const call = otlp.spans.find((s) => s.name === 'millrace.processor.call');
    expect(http).toMatchObject({
      traceId: trace,
      parentSpanId: caller,
      name: 'HTTP POST /v1/namespaces/:ns/machines/:id/start',
    });
    expect(call).toMatchObject({ traceId: trace, parentSpanId: http!.spanId });
    // the processor's parent is the processor-call span
    expect(gotParent).toBe(call!.spanId);
    expect(otlp.services).toContain('millrace-test');
  });

  it('a bus event published over HTTP keeps the request trace in its traceparent header; commits are traced', async () => {
    const input = {
      ...env.input,
      bus: { topics: ['orders'] },
      telemetry: { otlp_url: otlp.url, service_name: 'millrace-test' },
    } as ConfigInput;
    const node = await startNode(buildConfig(input), { faces: [busFace] });
    const trace = '0af7651916cd43dd8448eb211c80319c';
    try {
      const r = await fetch(`${node.url}/v1/bus/topics/orders/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', traceparent: `00-${trace}-b7ad6b7169203331-01` },
        body: JSON.stringify({
          events: [
            { key: 'k', type: 'created' },
            { key: 'k', type: 'kept', headers: { traceparent: `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01` } },
          ],
        }),
      });
      expect(r.status).toBe(200);
      const rows = await node.runtime.storage.shards[0]!.reader.all<{ type: string; meta: string }>(
        "SELECT type, meta FROM events WHERE stream = 't/orders/k' ORDER BY seq",
      );
      const tps = rows.map((x) => (JSON.parse(x.meta) as { headers: { traceparent: string } }).headers.traceparent);
      expect(tps[0]!.split('-')[1]).toBe(trace);
      expect(tps[1]).toBe(`00-${'1'.repeat(32)}-${'2'.repeat(16)}-01`);
    } finally {
      await node.close();
    }
    expect(otlp.spans.some((s) => s.name === 'millrace.group_commit')).toBe(true);
    expect(otlp.spans.some((s) => s.traceId === trace && s.name === 'HTTP POST /v1/bus/topics/:topic/events')).toBe(
      true,
    );
  });

  it('refuses a bad telemetry config', () => {
    for (const bad of [
      { otlp_url: 'not a url' },
      { otlp_url: 'ftp://x/y' },
      { otlp_url: 'http://x/v1/traces', extra: 1 },
      { service_name: 'x' },
      { otlp_url: 'http://x/v1/traces', service_name: '' },
    ]) {
      expect(() => buildConfig({ ...env.input, telemetry: bad } as ConfigInput)).toThrow();
    }
  });
});
