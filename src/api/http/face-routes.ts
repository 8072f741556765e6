import type { FastifyInstance } from 'fastify';
import type { Face } from '../../face.js';
import { BusFace } from '../../bus/face.js';
import { LedgerFace } from '../../ledger/ledger-face.js';
import { MachinesFace } from '../../machines/face.js';
import { PipeFace } from '../../pipe/face.js';
import { OpsFace } from '../../ops/face.js';
import { registerOpsRoutes } from './ops-routes.js';
import { registerBusRoutes } from './bus-routes.js';
import { registerLedgerRoutes } from './ledger-routes.js';
import { registerMachinesRoutes } from './machines-routes.js';
import { registerPipeRoutes } from './pipe-routes.js';
import type { HttpPlugin } from './server.js';

/** The HTTP routes of a face, or null for a face this transport does not serve. Faces know no transport; they are bound here. */
export function faceRoutes(face: Face): HttpPlugin | null {
  if (face instanceof MachinesFace)
    return (app: FastifyInstance) => registerMachinesRoutes(app, face.machines, face.sinks);
  if (face instanceof LedgerFace) return (app: FastifyInstance) => registerLedgerRoutes(app, face.ledger);
  if (face instanceof PipeFace) return (app: FastifyInstance) => registerPipeRoutes(app, face.pipe);
  if (face instanceof BusFace) return (app: FastifyInstance) => registerBusRoutes(app, face.bus);
  if (face instanceof OpsFace) return (app: FastifyInstance) => registerOpsRoutes(app, face);
  return null;
}
