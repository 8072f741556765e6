import type { FastifyInstance } from 'fastify';
import type { Server as GrpcServer } from '@grpc/grpc-js';
import type { Runtime } from './runtime.js';

/**
 * A face (machines, ledger, pipe, bus) over the storage core. Faces own their
 * logic and tables; transports are registered here as thin adapters that call
 * the face. A face's migrations are registered when its module is imported
 * (see `registerMigrations`), so they apply before any face starts.
 */
export interface Face {
  readonly name: string;
  /** Starts background work (consumers, timer handlers). */
  start(): Promise<void>;
  /** Stops background work; in-flight work finishes or is left to be retried. */
  stop(): Promise<void>;
  /** HTTP routes of this face. */
  http?(app: FastifyInstance): void | Promise<void>;
  /** gRPC services of this face. */
  grpc?(server: GrpcServer): void;
}

export type FaceFactory = (rt: Runtime) => Face | Promise<Face>;
