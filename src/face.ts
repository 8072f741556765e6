import type { Runtime } from './runtime.js';

/**
 * A face (machines, ledger, pipe, bus) over the storage core. A face owns its
 * logic, tables and background work and knows no transport: the HTTP routes
 * and gRPC services that call it are bound in `src/api/` (face-routes.ts,
 * face-services.ts). A face's migrations are registered when its module is
 * imported (see `registerMigrations`), so they apply before any face starts.
 * Each face is a class built by its factory, `(rt) => new XFace(rt)`.
 */
export interface Face {
  readonly name: string;
  /** Starts background work (consumers, timer handlers). */
  start(): Promise<void>;
  /** Stops background work; in-flight work finishes or is left to be retried. */
  stop(): Promise<void>;
}

export type FaceFactory = (rt: Runtime) => Face | Promise<Face>;
