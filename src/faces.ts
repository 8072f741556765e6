import type { FaceDefinition } from './face.js';
import { machinesFace } from './machines/face.js';
import { ledgerFace } from './ledger/ledger-face.js';
import { busFace } from './bus/face.js';
import { pipeFace } from './pipe/face.js';

/**
 * Every face this build serves, in start order (the ops face, built over
 * these, comes after them). Given to the runtime explicitly by `startNode`;
 * importing a face module registers nothing.
 */
export const BUILT_IN_FACES: readonly FaceDefinition[] = [machinesFace, ledgerFace, pipeFace, busFace];
