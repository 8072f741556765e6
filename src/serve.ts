import type { FastifyInstance } from 'fastify';
import type { Server as GrpcServer } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Config } from './core/config.js';
import type { Clock } from './core/clock.js';
import { createLogger } from './core/logger.js';
import { buildHttpServer, type HttpPlugin } from './api/http/server.js';
import { faceRoutes } from './api/http/face-routes.js';
import { startGrpcServer, stopGrpcServer } from './api/grpc/server.js';
import type { Face, FaceDefinition } from './face.js';
import { BUILT_IN_FACES } from './faces.js';
import { Runtime } from './runtime.js';
import { startTelemetry } from './core/telemetry.js';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Access, resolveAuth } from './auth/access.js';
import type { ResourceLookup } from './auth/permissions.js';
import { TokenStore } from './auth/tokens.js';
import { PipeFace } from './pipe/face.js';
import { OpsFace } from './ops/face.js';
import { opsSpec } from './ops/spec.js';
import { machinesFace, machinesFaceWith } from './machines/face.js';
import type { ProcessorFn } from './machines/processor.js';
import type { ScheduleHooks } from './ops/schedules.js';

export interface Node {
  runtime: Runtime;
  faces: Face[];
  http: FastifyInstance;
  /** Base URL of the HTTP API. */
  url: string;
  grpc: { server: GrpcServer; port: number } | null;
  /** Drains in-flight requests, stops background work, closes storage. */
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  clock?: Clock;
  /** Faces to serve, besides the ops face that acts through them (default: all of this build, `BUILT_IN_FACES`). */
  faces?: readonly FaceDefinition[];
  /** More HTTP routes beside those of the faces (tests, embedding applications). */
  routes?: HttpPlugin[];
  /** With `telemetry` configured: where spans go instead of the OTLP exporter (tests). */
  spanProcessor?: SpanProcessor;
  /**
   * In-process processors by name (`processor: {in_process: name}`), given to
   * the machines face of this build; with `faces`, give them to
   * `machinesFaceWith({processors})` instead.
   */
  processors?: ReadonlyMap<string, ProcessorFn>;
  /** Test hooks of schedules. */
  scheduleHooks?: ScheduleHooks;
  /** Environment read for MILLRACE_ADMIN_TOKEN (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** The look-ups the permission table needs, bound to this node's faces. */
function resourceLookup(faces: Face[]): ResourceLookup {
  const pipe = faces.find((f): f is PipeFace => f instanceof PipeFace)?.pipe;
  return {
    pipeSessionKind: async (id) => (pipe === undefined ? null : pipe.sessionKind(id)),
    pipeKindName: (kind) => (pipe === undefined ? null : pipe.kindName(kind)),
  };
}

/** Opens the runtime, builds the faces and serves HTTP (and gRPC): what `millrace serve` runs. */
export async function startNode(config: Config, opts: StartOptions = {}): Promise<Node> {
  const logger = opts.logger ?? createLogger(config.logging.level);
  // Checked before anything opens: a node that would serve beyond loopback without authentication refuses to start.
  const auth = resolveAuth(config, opts.env ?? process.env);
  const stopTelemetry = config.telemetry
    ? startTelemetry(config.telemetry, opts.spanProcessor ? { spanProcessor: opts.spanProcessor } : {})
    : null;
  const processors = opts.processors;
  const served =
    opts.faces ??
    (processors === undefined
      ? BUILT_IN_FACES
      : BUILT_IN_FACES.map((d) => (d === machinesFace ? machinesFaceWith({ processors }) : d)));
  // The runtime migrates for the faces served, and the ops face.
  const runtime = await Runtime.open(config, {
    logger,
    faces: [...served, opsSpec],
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  const faces: Face[] = [];
  let http: FastifyInstance | undefined;
  let grpc: { server: GrpcServer; port: number } | null = null;
  const stopAll = async () => {
    // Stop taking new calls on both transports, let unary requests finish,
    // then stop the faces (which ends long-lived streams such as
    // subscriptions, so the gRPC shutdown need not wait out its grace time).
    const grpcStopped = grpc ? stopGrpcServer(grpc.server, config.http.drain_timeout_ms) : Promise.resolve();
    if (http) {
      // Fastify closes the connections idle at close time; a keep-alive
      // connection whose response was still being written goes idle later and
      // would hold the server open. Sweep those until in-flight requests drain.
      const server = http.server;
      const sweep = setInterval(() => server.closeIdleConnections(), 100);
      // What is still in flight after the drain time (http.drain_timeout_ms) is cut off.
      const cutOff = setTimeout(() => server.closeAllConnections(), config.http.drain_timeout_ms);
      try {
        await http.close();
      } finally {
        clearInterval(sweep);
        clearTimeout(cutOff);
      }
    }
    for (const f of [...faces].reverse()) await f.stop();
    await grpcStopped;
    await runtime.close();
    await stopTelemetry?.();
  };
  try {
    for (const def of served) faces.push(await def.create(runtime));
    // Schedules and bulk jobs act through the faces above.
    faces.push(new OpsFace(runtime, faces, opts.scheduleHooks));
    const access = new Access(
      auth,
      new TokenStore(runtime.storage.shards[0]!, () => runtime.clock.now()),
      resourceLookup(faces),
    );
    if (!auth.enabled)
      logger.warn(
        { http: config.http.host, grpc: config.grpc.enabled ? config.grpc.host : null },
        'authentication is off: every request is allowed (set MILLRACE_ADMIN_TOKEN, auth.admin_token_file or auth.jwt; see docs/security.md)',
      );
    else
      logger.info(
        { admin_token: auth.adminDigest !== null, jwt: auth.jwt !== null, api_tokens: true },
        'authentication is on',
      );
    http = await buildHttpServer(
      runtime,
      [...faces.map(faceRoutes).filter((r): r is HttpPlugin => r !== null), ...(opts.routes ?? [])],
      access,
    );
    for (const f of faces) await f.start();
    await http.listen({ host: config.http.host, port: config.http.port });
    if (config.grpc.enabled)
      grpc = await startGrpcServer(faces, config.grpc.host, config.grpc.port, access, config.grpc.tls, () =>
        runtime.storage.refreshRouting(),
      );
  } catch (err) {
    // The start failed with the error rethrown below; stopping what did start is best effort.
    await stopAll().catch(() => {});
    throw err;
  }
  const addr = http.server.address();
  const url =
    typeof addr === 'object' && addr
      ? `${config.http.tls ? 'https' : 'http'}://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`
      : String(addr);
  let closing: Promise<void> | undefined;
  return { runtime, faces, http, url, grpc, close: () => (closing ??= stopAll()) };
}

/** `millrace serve`: runs until SIGTERM/SIGINT, then drains and exits 0. */
export async function serve(config: Config): Promise<void> {
  const logger = createLogger(config.logging.level);
  const node = await startNode(config, { logger });
  logger.info(
    {
      http: node.url,
      grpc: node.grpc ? `${config.grpc.host}:${node.grpc.port}` : null,
      dialect: config.storage.dialect,
      shards: config.storage.shards.length,
    },
    'millrace serving',
  );
  const stop = (signal: string) => {
    logger.info({ signal }, 'draining');
    const force = setTimeout(() => {
      logger.warn('drain timed out; exiting');
      process.exit(1);
    }, config.http.drain_timeout_ms + 5000);
    force.unref();
    node.close().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
