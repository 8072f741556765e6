import { DeadSessionRetention } from './retention.js';
import type { Face, FaceDefinition } from '../face.js';
import type { Runtime } from '../runtime.js';
import { Pipe, type Pusher } from './pipe.js';
import { httpPusher } from './pusher.js';
import { pipeSpec } from './spec.js';

/** The pipe face: sessions, their redelivery timers and pushes (served over HTTP under /v1/pipe and the `millrace.v1.Pipe` gRPC stream). */
export class PipeFace implements Face {
  readonly name = 'pipe';
  readonly pipe: Pipe;
  /** Closing streams of the gRPC transport; stop() waits for them. */
  readonly closing = new Set<Promise<void>>();

  constructor(rt: Runtime, pusher: Pusher = httpPusher(rt.signer)) {
    this.pipe = new Pipe(rt, rt.config.pipe, pusher);
    rt.pruner.register(new DeadSessionRetention(rt.config.pipe, () => rt.clock.now()));
  }

  start(): Promise<void> {
    return this.pipe.start();
  }

  async stop(): Promise<void> {
    await Promise.allSettled([...this.closing]);
    await this.pipe.stop();
  }
}

/** The pipe face, for `BUILT_IN_FACES` or `startNode({faces})`. */
export const pipeFace: FaceDefinition = { ...pipeSpec, create: (rt) => new PipeFace(rt) };
