import type { Server } from '@grpc/grpc-js';
import type { Face } from '../../face.js';
import { BusFace } from '../../bus/face.js';
import { PipeFace } from '../../pipe/face.js';
import { registerBusService } from './bus-service.js';
import { registerPipeGrpc } from './pipe-service.js';

/** Registers a face's gRPC services on `server`; false for a face with none. Faces know no transport; they are bound here. */
export function registerFaceServices(server: Server, face: Face): boolean {
  if (face instanceof PipeFace) registerPipeGrpc(server, face.pipe, face.closing);
  else if (face instanceof BusFace) registerBusService(server, face.bus);
  else return false;
  return true;
}
