import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { BasicTracerProvider, BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';

export { SpanKind };

export interface TelemetryConfig {
  /** OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces. */
  otlp_url: string;
  service_name: string;
}

/**
 * Tracing through @opentelemetry/api. Off by default: until a node starts
 * with `telemetry` configured, `startSpan` returns undefined at the cost of
 * one check, and traceparent headers pass through as before. Parents are
 * passed explicitly as W3C traceparent strings (no context manager).
 */
let active: { tracer: Tracer; provider: BasicTracerProvider } | null = null;

export function telemetryEnabled(): boolean {
  return active !== null;
}

/** Starts the exporter (OTLP over HTTP, batched); the returned function flushes and stops it. */
export function startTelemetry(
  cfg: TelemetryConfig,
  extra: { spanProcessor?: SpanProcessor } = {},
): () => Promise<void> {
  const processor =
    extra.spanProcessor ??
    new BatchSpanProcessor(new OTLPTraceExporter({ url: cfg.otlp_url }), { scheduledDelayMillis: 1000 });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': cfg.service_name }),
    spanProcessors: [processor],
  });
  const mine = { tracer: provider.getTracer('millrace'), provider };
  active = mine;
  return async () => {
    if (active === mine) active = null;
    // Stopping: spans that cannot be exported now are lost either way, and the stop must not fail for them.
    await provider.forceFlush().catch(() => {});
    // Likewise: the stop must not fail for spans it cannot export.
    await provider.shutdown().catch(() => {});
  };
}

const TP = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The context of a W3C traceparent as a remote parent (root when absent or malformed). */
export function contextOf(traceparent: string | undefined): Context {
  const m = traceparent === undefined ? null : TP.exec(traceparent);
  if (m === null) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: m[1]!,
    spanId: m[2]!,
    traceFlags: parseInt(m[3]!, 16),
    isRemote: true,
  });
}

/** The W3C traceparent naming `span` as the parent. */
export function traceparentOf(span: Span): string {
  const c = span.spanContext();
  return `00-${c.traceId}-${c.spanId}-${c.traceFlags.toString(16).padStart(2, '0')}`;
}

/** A span under `parent` (a traceparent), or undefined while telemetry is off. */
export function startSpan(
  name: string,
  parent: string | undefined,
  kind: SpanKind,
  attributes?: Attributes,
): Span | undefined {
  if (active === null) return undefined;
  return active.tracer.startSpan(name, { kind, ...(attributes ? { attributes } : {}) }, contextOf(parent));
}

/** Ends a span, marking it failed when `err` is given. */
export function endSpan(span: Span | undefined, err?: unknown, attributes?: Attributes): void {
  if (span === undefined) return;
  if (attributes) span.setAttributes(attributes);
  if (err !== undefined && err !== null) {
    // A thrown value without a message has only its String() form, whatever it is.
    // eslint-disable-next-line @typescript-eslint/no-base-to-string
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message ?? String(err) });
    const code = (err as { code?: unknown })?.code;
    if (typeof code === 'string') span.setAttribute('millrace.error_code', code);
  }
  span.end();
}

/** Runs `fn` in a span; `fn` gets the traceparent to carry on (the span's, or `parent` while off). */
export async function inSpan<T>(
  name: string,
  parent: string | undefined,
  kind: SpanKind,
  attributes: Attributes | undefined,
  fn: (traceparent: string | undefined) => Promise<T>,
): Promise<T> {
  const span = startSpan(name, parent, kind, attributes);
  if (span === undefined) return fn(parent);
  try {
    const r = await fn(traceparentOf(span));
    endSpan(span);
    return r;
  } catch (err) {
    endSpan(span, err);
    throw err;
  }
}
