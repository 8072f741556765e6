import type { FaceSpec } from './face-spec.js';
import type { Runtime } from './runtime.js';

export type { FaceSpec } from './face-spec.js';

/**
 * A face (machines, ledger, pipe, bus) over the storage core. A face owns its
 * logic, tables and background work and knows no transport: the HTTP routes
 * and gRPC services that call it are bound in `src/api/` (face-routes.ts,
 * face-services.ts). A face declares its migrations, error codes and config
 * section (its `FaceSpec`, in its `spec.ts`); the runtime is given the faces
 * it serves and applies their migrations before any face starts. Each face
 * is a class built by its definition's `create`, `(rt) => new XFace(rt)`.
 */
export interface Face {
  readonly name: string;
  /** Starts background work (consumers, timer handlers). */
  start(): Promise<void>;
  /** Stops background work; in-flight work finishes or is left to be retried. */
  stop(): Promise<void>;
}

export type FaceFactory = (rt: Runtime) => Face | Promise<Face>;

/** A face this build can serve: what it declares, and how it is built over a runtime. */
export interface FaceDefinition extends FaceSpec {
  readonly create: FaceFactory;
}
