import type { FaceFactory } from './face.js';
import { machinesFace } from './machines/face.js';
import { ledgerFace } from './ledger/ledger-face.js';
import { busFace } from './bus/face.js';
import { pipeFace } from './pipe/face.js';

/**
 * Every face this build serves, in start order. Importing a face module also
 * registers its migrations.
 */
export const faceFactories: FaceFactory[] = [
  machinesFace, // machines
  ledgerFace, // ledger
  // pipe
  pipeFace,
  // bus
  busFace,
];
