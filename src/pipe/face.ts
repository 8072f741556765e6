import type { Face, FaceFactory } from '../face.js';
import type { Runtime } from '../runtime.js';
import { Pipe, type Pusher } from './pipe.js';
import { httpPusher } from './pusher.js';
import { registerPipeRoutes } from './http.js';
import { registerPipeGrpc } from './grpc.js';

/** The pipe face: HTTP under /v1/pipe, the `millrace.v1.Pipe` gRPC stream, and the redelivery timers. */
export class PipeFace implements Face {
  readonly name = 'pipe';
  readonly pipe: Pipe;
  private readonly closing = new Set<Promise<void>>();

  constructor(rt: Runtime, pusher: Pusher = httpPusher()) {
    this.pipe = new Pipe(rt, rt.config.pipe, pusher);
  }

  start(): Promise<void> {
    return this.pipe.start();
  }

  async stop(): Promise<void> {
    await Promise.allSettled([...this.closing]);
    await this.pipe.stop();
  }

  http(app: Parameters<NonNullable<Face['http']>>[0]): void {
    registerPipeRoutes(app, this.pipe);
  }

  grpc(server: Parameters<NonNullable<Face['grpc']>>[0]): void {
    registerPipeGrpc(server, this.pipe, this.closing);
  }
}

export const pipeFace: FaceFactory = (rt: Runtime) => new PipeFace(rt);
